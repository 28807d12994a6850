package stripefake

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	stripe "github.com/stripe/stripe-go/v76"
	"golang.org/x/time/rate"
)

// DefaultAPIKey is the secret key the fake accepts when Options.APIKey is empty.
const DefaultAPIKey = "sk_test_fake"

// maxBodyBytes bounds request bodies; larger ones get a 400.
const maxBodyBytes = 1 << 20

// maxIdempotencyKeyLen is Stripe's limit on Idempotency-Key.
const maxIdempotencyKeyLen = 255

// Options configures a Server. The zero value is usable: it accepts
// DefaultAPIKey, keeps events without delivering them and uses the wall clock.
type Options struct {
	// APIKey is the only secret key accepted, sent as "Authorization: Bearer
	// <key>" (stripe-go) or as the Basic-auth user name (curl -u). Default
	// DefaultAPIKey.
	APIKey string

	// WebhookURL receives every event, signed with WebhookSecret. Empty
	// means events are recorded (and served by /v1/events) but not sent.
	// SetWebhookEndpoint changes both at run time.
	WebhookURL string
	// WebhookSecret is the endpoint signing secret ("whsec_..."), used as
	// the HMAC key exactly as Stripe does.
	WebhookSecret string

	// Clock stamps customers, events, requests and idempotency keys (which
	// expire after 24 h of Clock time). Default time.Now. Webhook signatures
	// use SignatureClock instead, since receivers check them against the
	// wall clock.
	Clock func() time.Time
	// SignatureClock gives the timestamp of Stripe-Signature headers.
	// Default time.Now.
	SignatureClock func() time.Time

	// Logger receives debug logs of requests and deliveries. Default discards.
	Logger *slog.Logger

	// Seed seeds the pseudo-random generator behind fault ratios and
	// shuffled delivery, so a run can be repeated exactly. Object ids are
	// always random.
	Seed uint64

	// DuplicateDeliveries is how many extra copies of every event are
	// delivered (0: each event once, as Stripe usually does).
	DuplicateDeliveries int
	// DeliveryOrder chooses the order of deliveries. Default
	// OrderPerCustomer.
	DeliveryOrder DeliveryOrder
	// DeliveryAttempts is how many times one delivery is tried before it is
	// abandoned. Default 8.
	DeliveryAttempts int
	// RetryBackoff is the wait before the first retry of a failed delivery;
	// it doubles for each further retry up to MaxRetryBackoff. Default 1 s
	// (set a few milliseconds in tests).
	RetryBackoff time.Duration
	// MaxRetryBackoff caps the wait between retries. Default 30 s.
	MaxRetryBackoff time.Duration
	// DeliveryTimeout bounds one delivery attempt. Default 10 s.
	DeliveryTimeout time.Duration
	// HTTPClient sends webhook deliveries. Default a new client.
	HTTPClient *http.Client

	// MaxRequests, MaxEvents, MaxIdempotencyKeys and MaxDeliveryAttempts
	// bound what the fake remembers (Requests, Events and /v1/events, the
	// idempotency store, DeliveryAttempts): beyond the bound the oldest are
	// forgotten, so a long-running fake (the sandbox) keeps a flat memory.
	// Counters (Stats, DeliveryStats) keep counting. Zero keeps everything
	// (tests that inspect the whole history).
	MaxRequests, MaxEvents, MaxIdempotencyKeys, MaxDeliveryAttempts int
}

// trimOldest drops the oldest entries of *list beyond max (0: no bound). It
// trims a quarter more than needed at once, into a fresh array, so the
// cost is amortised and the dropped entries' memory is released.
func trimOldest[T any](list *[]T, max int, drop func(T)) {
	if max <= 0 || len(*list) <= max {
		return
	}
	keep := max - max/4
	n := len(*list) - keep
	if drop != nil {
		for _, x := range (*list)[:n] {
			drop(x)
		}
	}
	*list = append(make([]T, 0, max), (*list)[n:]...)
}

// Server is the fake Stripe. Create it with New, serve it with Listen or
// Handler, and Close it when done. All methods are safe for concurrent use.
type Server struct {
	apiKey string
	now    func() time.Time
	log    *slog.Logger

	mu         sync.Mutex
	seq        uint64
	customers  []*customerRecord
	byID       map[string]*customerRecord
	events     []*Event
	eventsByID map[string]*Event
	idem       map[string]*idemEntry
	requests   []Request
	stats      Stats
	limits     Options // the Max* bounds
	searchLag  time.Duration

	fmu    sync.Mutex
	faults Faults
	// failAfterWrite is how many more writes answer 500 after executing.
	failAfterWrite int
	rng            *rand.Rand
	limiter        *rate.Limiter

	deliv *deliverer

	inFlight atomic.Int64

	// active counts ServeHTTP calls in progress, so Close can wait for them.
	activeMu   sync.Mutex
	active     int
	activeDone *sync.Cond

	done      chan struct{}
	closeOnce sync.Once
	httpMu    sync.Mutex
	httpSrv   *http.Server
	url       string
	closed    bool
}

type customerRecord struct {
	c   Customer
	seq uint64
}

func (r *customerRecord) key() sortKey { return sortKey{created: r.c.Created.Unix(), seq: r.seq} }

// Request is one API request as the fake received it.
type Request struct {
	ID             string // the Request-Id the fake answered with
	Method         string
	Path           string
	IdempotencyKey string
	Params         url.Values // query and body parameters together
	Time           time.Time  // Clock time at arrival
	Status         int
	// Replayed is true when the response was replayed from the
	// idempotency store, so the request changed nothing.
	Replayed bool
	// Fault names the injected failure that answered the request, if any.
	Fault Fault
	// CustomerID is the customer the request addressed or created, if any.
	CustomerID string
}

// Stats counts requests by outcome.
type Stats struct {
	Requests             int // every request received, including failed ones
	CustomersCreated     int // customers created through the API (replays excluded)
	IdempotentReplays    int // responses replayed from the idempotency store
	InjectedRateLimits   int // 429s from Faults.RateLimitRatio
	InjectedServerErrors int // 500s from Faults.ServerErrorRatio
	RateLimitRejections  int // 429s from the hard limit of SetRateLimit
	Unauthorized         int // 401s
	Writes               int // POST and DELETE requests
	Events               int // events emitted
}

// New returns a Server configured by opts. It starts the webhook delivery
// goroutine, so Close must be called.
func New(opts Options) *Server {
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		apiKey:     opts.APIKey,
		now:        opts.Clock,
		log:        opts.Logger,
		byID:       map[string]*customerRecord{},
		eventsByID: map[string]*Event{},
		idem:       map[string]*idemEntry{},
		rng:        rand.New(rand.NewPCG(opts.Seed, 0x5f17e)),
		done:       make(chan struct{}),
		limits:     opts,
	}
	s.activeDone = sync.NewCond(&s.activeMu)
	s.deliv = newDeliverer(opts, s.markDelivered)
	return s
}

// Handler returns the fake's HTTP handler, for use with httptest.NewServer or
// a router of your own. Server itself implements http.Handler too.
func (s *Server) Handler() http.Handler { return s }

// Listen serves the fake on addr (use "127.0.0.1:0" for a free port) and
// returns its base URL, e.g. "http://127.0.0.1:41234", to use as the
// stripe-go backend URL. It fails if the address cannot be bound, or if the
// Server is already listening or closed.
func (s *Server) Listen(addr string) (string, error) {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	if s.closed {
		return "", errors.New("stripefake: server is closed")
	}
	if s.httpSrv != nil {
		return "", errors.New("stripefake: already listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("stripefake: listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.httpSrv = srv
	s.url = "http://" + ln.Addr().String()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("stripefake: serving", "error", err)
		}
	}()
	return s.url, nil
}

// URL returns the base URL Listen is serving on, or "" before Listen.
func (s *Server) URL() string {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	return s.url
}

// Close stops the fake: it closes the listener and its connections (a
// request in progress sees its connection drop), aborts injected latency,
// waits for handlers still running, and stops webhook delivery, dropping
// whatever is still queued. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.httpMu.Lock()
		s.closed = true
		srv := s.httpSrv
		s.httpMu.Unlock()
		if srv != nil {
			_ = srv.Close()
		}
		s.activeMu.Lock()
		for s.active > 0 {
			s.activeDone.Wait()
		}
		s.activeMu.Unlock()
		s.deliv.close()
	})
}

// InFlight returns how many API requests are executing right now: past
// authentication, fault injection and their Idempotency-Key claim, waiting
// out Faults.Latency or running. Tests poll it to know a request holds its
// key.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// response is a status and JSON body, plus extra headers.
type response struct {
	status int
	body   []byte
	header http.Header
}

func jsonResponse(v any) response {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("stripefake: encoding response: %v", err))
	}
	return response{status: http.StatusOK, body: b}
}

func listResponse[T any](url string, data []T, more bool) response {
	if data == nil {
		data = []T{}
	}
	return jsonResponse(struct {
		Object  string `json:"object"`
		Data    []T    `json:"data"`
		HasMore bool   `json:"has_more"`
		URL     string `json:"url"`
	}{"list", data, more, url})
}

// call is one request on its way through the handlers.
type call struct {
	rec      *Request
	fields   []field
	endpoint string // "POST /v1/customers", the idempotency scope
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.activeMu.Lock()
	s.active++
	s.activeMu.Unlock()
	defer func() {
		s.activeMu.Lock()
		s.active--
		if s.active == 0 {
			s.activeDone.Broadcast()
		}
		s.activeMu.Unlock()
	}()
	rec := Request{
		ID:     newID("req_", 14),
		Method: r.Method,
		Path:   r.URL.Path,
		Time:   s.now(),
	}
	if r.Method == http.MethodPost || r.Method == http.MethodDelete {
		rec.IdempotencyKey = strings.TrimSpace(r.Header.Get("Idempotency-Key"))
	}
	resp := s.serve(r, &rec)
	rec.Status = resp.status
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	trimOldest(&s.requests, s.limits.MaxRequests, nil)
	s.stats.Requests++
	if rec.Method == http.MethodPost || rec.Method == http.MethodDelete {
		s.stats.Writes++
	}
	s.mu.Unlock()

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Request-Id", rec.ID)
	h.Set("Cache-Control", "no-cache, no-store")
	version := r.Header.Get("Stripe-Version")
	if version == "" {
		version = stripe.APIVersion
	}
	h.Set("Stripe-Version", version)
	if rec.IdempotencyKey != "" {
		h.Set("Idempotency-Key", rec.IdempotencyKey)
	}
	for k, v := range resp.header {
		h[k] = v
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
	s.log.Debug("stripefake request", "method", rec.Method, "path", rec.Path, "status", rec.Status,
		"request_id", rec.ID, "idempotency_key", rec.IdempotencyKey, "replayed", rec.Replayed,
		"fault", string(rec.Fault))
}

func (s *Server) serve(r *http.Request, rec *Request) response {
	params, perr := readParams(r)
	rec.Params = params
	if resp, ok := s.authenticate(r); !ok {
		s.mu.Lock()
		s.stats.Unauthorized++
		s.mu.Unlock()
		return resp
	}
	if f := s.fault(); f != FaultNone {
		rec.Fault = f
		s.mu.Lock()
		defer s.mu.Unlock()
		switch f {
		case FaultServerError:
			s.stats.InjectedServerErrors++
			return serverError().response()
		case FaultRateLimit:
			s.stats.InjectedRateLimits++
		default:
			s.stats.RateLimitRejections++
		}
		return rateLimitError().response()
	}

	if perr != nil {
		return perr.response()
	}
	if len(rec.IdempotencyKey) > maxIdempotencyKeyLen {
		return invalidRequest("", "", "Idempotency-Key must be at most %d characters long.", maxIdempotencyKeyLen).response()
	}
	c := &call{rec: rec, fields: parseFields(params), endpoint: r.Method + " " + r.URL.Path}

	path := r.URL.Path
	switch {
	case path == "/v1/customers":
		switch r.Method {
		case http.MethodPost:
			return s.createCustomer(c)
		case http.MethodGet:
			return s.listCustomers(c)
		}
	case path == "/v1/customers/search" && r.Method == http.MethodGet:
		return s.searchCustomers(c)
	case strings.HasPrefix(path, "/v1/customers/"):
		id := strings.TrimPrefix(path, "/v1/customers/")
		if id == "" || strings.Contains(id, "/") {
			break
		}
		switch r.Method {
		case http.MethodGet:
			return s.retrieveCustomer(c, id)
		case http.MethodPost:
			return s.updateCustomer(c, id)
		case http.MethodDelete:
			return s.deleteCustomer(c, id)
		}
	case path == "/v1/events":
		if r.Method == http.MethodGet {
			return s.listEvents(c)
		}
	case strings.HasPrefix(path, "/v1/events/"):
		id := strings.TrimPrefix(path, "/v1/events/")
		if r.Method == http.MethodGet && id != "" && !strings.Contains(id, "/") {
			return s.retrieveEvent(c, id)
		}
	}
	return unrecognizedURL(r.Method, path).response()
}

// authenticate checks the secret key like Stripe: Bearer token, or Basic
// auth with the key as user name.
func (s *Server) authenticate(r *http.Request) (response, bool) {
	var key string
	h := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(h, "Bearer "):
		key = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	case strings.HasPrefix(h, "Basic "):
		if b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Basic ")); err == nil {
			key, _, _ = strings.Cut(string(b), ":")
		}
	}
	var e *apiError
	switch {
	case key == "":
		e = &apiError{
			Type: errTypeInvalidRequest,
			Message: "You did not provide an API key. You need to provide your API key in the Authorization " +
				"header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See " +
				"https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
		}
	case subtle.ConstantTimeCompare([]byte(key), []byte(s.apiKey)) != 1:
		e = &apiError{Type: errTypeInvalidRequest, Message: "Invalid API Key provided: " + redactKey(key)}
	default:
		return response{}, true
	}
	e.status = http.StatusUnauthorized
	resp := e.response()
	resp.header = http.Header{"Www-Authenticate": {`Basic realm="Stripe"`}}
	return resp, false
}

// redactKey masks a key the way Stripe echoes it: its prefix and last four
// characters.
func redactKey(key string) string {
	prefix := ""
	if i := strings.LastIndexByte(key, '_'); i >= 0 && i < len(key)-4 {
		prefix, key = key[:i+1], key[i+1:]
	}
	if len(key) <= 4 {
		return prefix + key
	}
	return prefix + strings.Repeat("*", len(key)-4) + key[len(key)-4:]
}

// readParams merges query and form body parameters, as Stripe accepts both.
func readParams(r *http.Request) (url.Values, *apiError) {
	params := r.URL.Query()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, invalidRequest("", "", "Could not read the request body: %v", err)
	}
	if len(body) > maxBodyBytes {
		return nil, invalidRequest("", "", "Request body too large.")
	}
	if len(body) == 0 {
		return params, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("", "",
			"Invalid request: the body must be application/x-www-form-urlencoded (%v).", err)
	}
	for k, v := range form {
		params[k] = append(params[k], v...)
	}
	return params, nil
}

// execute runs fn, the part of a request that reads or changes state, under
// the state lock, after any injected latency. For a POST with an
// Idempotency-Key it implements Stripe's idempotency layer: replay a stored
// result, refuse a key in flight or reused with other parameters, and store
// the result once fn has run (unless fn rejected the parameters, which
// Stripe does not store either).
func (s *Server) execute(c *call, fn func(now time.Time) response) response {
	var key string
	if c.rec.Method == http.MethodPost {
		key = c.rec.IdempotencyKey
	}
	var entry *idemEntry
	if key != "" {
		s.mu.Lock()
		resp, e, done := s.claimKey(c, key)
		s.mu.Unlock()
		if done {
			return resp
		}
		entry = e
	}
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	if !s.sleepLatency() {
		if entry != nil {
			s.mu.Lock()
			s.releaseKey(key, entry)
			s.mu.Unlock()
		}
		return serverError().response()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := fn(s.now())
	if c.rec.Method != http.MethodGet && resp.status < 300 && s.takeFailAfterWrite() {
		// Stripe's documented behaviour: a request that started executing
		// has its answer saved under its key, a 500 included.
		c.rec.Fault = FaultServerErrorAfterWrite
		s.stats.InjectedServerErrors++
		resp = serverError().response()
	}
	if entry != nil {
		if resp.status == http.StatusBadRequest {
			s.releaseKey(key, entry)
		} else {
			entry.inFlight = false
			entry.resp = resp
			entry.requestID = c.rec.ID
			entry.customerID = c.rec.CustomerID
		}
	}
	return resp
}
