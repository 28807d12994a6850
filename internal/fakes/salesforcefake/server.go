package salesforcefake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultClientID          = "3MVG9fake.tandem.client.id"
	DefaultClientSecret      = "fake-client-secret-0123456789"
	DefaultOrgID             = "00D5g00000TndmQEAR"
	DefaultIntegrationUserID = "0055g00000TndmIAAR"
	DefaultUIUserID          = "0055g00000TndmUAAR"
	DefaultActionID          = "04k5g00000TndmAAAR"
	DefaultAPILimit          = 15000
)

// ExternalIDField is the Contact external id field the fake knows, holding
// Tandem's user id.
const ExternalIDField = "Tandem_User_Id__c"

// DefaultCustomField is the Long Text Area field the fake's contacts have
// besides the standard ones when Options.CustomFields is nil.
const DefaultCustomField = "Tandem_Metadata__c"

// maxBodyBytes bounds request bodies; larger ones get a 400.
const maxBodyBytes = 1 << 20

// Options configures a Server. The zero value is usable.
type Options struct {
	// ClientID and ClientSecret are the connected app's credentials the
	// token endpoint accepts. Defaults DefaultClientID, DefaultClientSecret.
	ClientID, ClientSecret string

	// OrgID is the organization id in tokens' identity URLs and in
	// Outbound Messages. Default DefaultOrgID.
	OrgID string
	// IntegrationUserID is the "run as" user of the client credentials
	// flow: changes made through the API carry it as LastModifiedById.
	// Default DefaultIntegrationUserID.
	IntegrationUserID string
	// UIUserID is the person whose edits UICreate, UIUpdate, UIDelete and
	// DuplicateExternalID simulate. Default DefaultUIUserID.
	UIUserID string

	// APILimit is the org's daily API request limit, the second number of
	// Sforce-Limit-Info: api-usage=<used>/<limit>. Requests beyond it get
	// 403 REQUEST_LIMIT_EXCEEDED. Default DefaultAPILimit.
	APILimit int

	// CustomFields are custom text fields (Long Text Area, 131072
	// characters) contacts have besides FirstName, LastName, Email, Phone
	// and Tandem_User_Id__c; writing any other field is 400 INVALID_FIELD.
	// nil means []string{DefaultCustomField}; use an empty non-nil slice
	// for none.
	CustomFields []string

	// LegacyUpsertNoContent answers an upsert that updates an existing
	// record with 204 and no body, as API versions before 46.0 did, instead
	// of 200 with {id, success, errors, created: false}.
	LegacyUpsertNoContent bool

	// Clock stamps records (CreatedDate, LastModifiedDate, truncated to the
	// second like Salesforce's) and requests. Default time.Now.
	Clock func() time.Time
	// Logger receives debug logs of requests and deliveries. Default
	// discards.
	Logger *slog.Logger
	// Seed seeds the generator behind fault ratios, so a run can be
	// repeated exactly. Record ids are always random.
	Seed uint64

	// OutboundURL is the Outbound Message listener; empty means no
	// messages are queued. SetOutboundEndpoint changes it at run time.
	OutboundURL string
	// OutboundToken, if set, is added to OutboundURL as the query
	// parameter token=<OutboundToken>, the shared secret a listener checks.
	OutboundToken string
	// ActionID is the outbound message (workflow action) id in messages.
	// Default DefaultActionID.
	ActionID string
	// BatchSize is the most notifications one message carries, 1 to 100.
	// Default 1; notifications queued meanwhile (see PauseDelivery) are
	// batched up to it.
	BatchSize int
	// DuplicateDeliveries is how many extra times each acknowledged message
	// is sent again, unchanged (Salesforce may deliver a message more than
	// once).
	DuplicateDeliveries int
	// NotifyDeletes also sends a notification (IsDeleted true) when a
	// contact is deleted. Salesforce's workflow rules do not fire on
	// delete, so the default (false) sends nothing.
	NotifyDeletes bool
	// DeliveryAttempts is how many times a notification is sent before it
	// is abandoned; 0 means until it is acknowledged or the fake is closed
	// (Salesforce retries for 24 hours).
	DeliveryAttempts int
	// RetryBackoff is the wait before the first retry of a failed message;
	// it doubles for each further retry up to MaxRetryBackoff. Defaults
	// 1 s and 30 s (set a few milliseconds in tests).
	RetryBackoff, MaxRetryBackoff time.Duration
	// DeliveryTimeout bounds one delivery attempt. Default 10 s.
	DeliveryTimeout time.Duration
	// HTTPClient sends Outbound Messages. Default a new client.
	HTTPClient *http.Client
}

// Server is the fake Salesforce. Create it with New, serve it with Listen
// (or Handler), and Close it when done. All methods are safe for concurrent
// use.
type Server struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger

	mu       sync.Mutex
	contacts map[string]*Contact // by 18-character id
	order    []string            // ids in creation order
	tokens   map[string]bool     // issued access tokens → still valid
	refuse   bool                // RefuseSessions
	requests []Request
	stats    Stats
	apiUsed  int
	// cursors are the rest of query results (query.go), by locator.
	cursors     map[string]*queryCursor
	cursorOrder []string

	fmu    sync.Mutex
	faults Faults
	rng    *rand.Rand

	out *outbound

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

// Request is one API or token request as the fake received it.
type Request struct {
	Method   string
	Path     string
	RawQuery string
	// CallOptions is the Sforce-Call-Options header.
	CallOptions string
	// Token is the bearer token presented (API requests).
	Token string
	// Body is the request body as sent (form or JSON).
	Body   string
	Time   time.Time // Clock time at arrival
	Status int
	// ErrorCode is the first errorCode of an error answer (for the token
	// endpoint, the OAuth error).
	ErrorCode string
	// Fault names the injected failure that answered the request, if any.
	Fault Fault
	// ContactID is the contact the request addressed or created, if any.
	ContactID string
}

// Stats counts requests by outcome.
type Stats struct {
	Requests           int // API requests, failed ones included (token requests excluded)
	TokenRequests      int // requests to the token endpoint
	TokensIssued       int // access tokens issued
	Unauthorized       int // API requests answered 401 INVALID_SESSION_ID
	ContactsCreated    int // contacts created through the API
	ContactsUpdated    int // contacts updated through the API
	ContactsDeleted    int // contacts deleted through the API
	MultipleMatches    int // answers 300
	RequestLimits      int // answers 403 REQUEST_LIMIT_EXCEEDED, injected or not
	InjectedFaults     int // requests answered by SetFaults
	ValidationFailures int // answers 400
}

// New returns a Server configured by opts. It starts the Outbound Message
// deliverer, so Close must be called.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.OrgID == "" {
		opts.OrgID = DefaultOrgID
	}
	if opts.IntegrationUserID == "" {
		opts.IntegrationUserID = DefaultIntegrationUserID
	}
	if opts.UIUserID == "" {
		opts.UIUserID = DefaultUIUserID
	}
	if opts.ActionID == "" {
		opts.ActionID = DefaultActionID
	}
	if opts.APILimit <= 0 {
		opts.APILimit = DefaultAPILimit
	}
	if opts.CustomFields == nil {
		opts.CustomFields = []string{DefaultCustomField}
	}
	opts.CustomFields = slices.Clone(opts.CustomFields)
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:     opts,
		now:      opts.Clock,
		log:      opts.Logger,
		contacts: map[string]*Contact{},
		tokens:   map[string]bool{},
		rng:      rand.New(rand.NewPCG(opts.Seed, 0x5a1e5)),
		done:     make(chan struct{}),
	}
	s.activeDone = sync.NewCond(&s.activeMu)
	s.out = newOutbound(opts, s)
	return s
}

// Handler returns the fake's HTTP handler (for httptest.NewServer). With it,
// instance_url in token answers is derived from the request's Host.
func (s *Server) Handler() http.Handler { return s }

// Listen serves the fake on addr ("127.0.0.1:0" for a free port) and returns
// its base URL, e.g. "http://127.0.0.1:41234": the instance URL. It fails if
// the address cannot be bound, or if the Server is already listening or
// closed.
func (s *Server) Listen(addr string) (string, error) {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	if s.closed {
		return "", errors.New("salesforcefake: server is closed")
	}
	if s.httpSrv != nil {
		return "", errors.New("salesforcefake: already listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("salesforcefake: listening on %s: %w", addr, err)
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
			s.log.Error("salesforcefake: serving", "error", err)
		}
	}()
	return s.url, nil
}

// URL returns the base URL Listen is serving on (the instance URL), or ""
// before Listen.
func (s *Server) URL() string {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	return s.url
}

// TokenURL returns the OAuth token endpoint, URL()+"/services/oauth2/token".
func (s *Server) TokenURL() string { return s.URL() + tokenPath }

// OrgID returns the organization id.
func (s *Server) OrgID() string { return s.opts.OrgID }

// IntegrationUserID returns the user API changes are made as.
func (s *Server) IntegrationUserID() string { return s.opts.IntegrationUserID }

// UIUserID returns the user UI changes are made as.
func (s *Server) UIUserID() string { return s.opts.UIUserID }

// Close stops the fake: it closes the listener and its connections, aborts
// injected latency, waits for handlers still running and stops Outbound
// Message delivery, dropping what is still queued. It is safe to call more
// than once.
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
		s.out.close()
	})
}

// response is a status and body, plus extra headers.
type response struct {
	status int
	body   []byte
	header http.Header
	code   string // first error code, for Request.ErrorCode
}

func jsonResponse(status int, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("salesforcefake: encoding response: %v", err))
	}
	return response{status: status, body: b}
}

// apiError is one element of a Salesforce error body.
type apiError struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields,omitempty"`
}

// errorResponse is a Salesforce error answer: a JSON array with one error.
func errorResponse(status int, code, message string, fields ...string) response {
	r := jsonResponse(status, []apiError{{Message: message, ErrorCode: code, Fields: fields}})
	r.code = code
	return r
}

func notFound() response {
	return errorResponse(http.StatusNotFound, "NOT_FOUND", "The requested resource does not exist")
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

	body, readErr := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	rec := Request{
		Method:      r.Method,
		Path:        r.URL.Path,
		RawQuery:    r.URL.RawQuery,
		CallOptions: r.Header.Get("Sforce-Call-Options"),
		Body:        string(body),
		Time:        s.now(),
	}
	var resp response
	api := false
	switch {
	case readErr != nil || len(body) > maxBodyBytes:
		resp = errorResponse(http.StatusBadRequest, "JSON_PARSER_ERROR", "Request body could not be read or is too large.")
	case r.URL.Path == tokenPath:
		resp = s.serveToken(r, body)
	case strings.HasPrefix(r.URL.Path, dataPrefix):
		api = true
		resp = s.serveAPI(r, body, &rec)
	default:
		resp = notFound()
	}
	rec.Status, rec.ErrorCode = resp.status, resp.code

	s.mu.Lock()
	s.requests = append(s.requests, rec)
	if api {
		s.stats.Requests++
	} else if r.URL.Path == tokenPath {
		s.stats.TokenRequests++
	}
	switch resp.status {
	case http.StatusBadRequest:
		s.stats.ValidationFailures++
	case http.StatusMultipleChoices:
		s.stats.MultipleMatches++
	}
	if resp.code == codeRequestLimit {
		s.stats.RequestLimits++
	}
	used := s.apiUsed
	s.mu.Unlock()

	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	if api {
		h.Set("Sforce-Limit-Info", "api-usage="+strconv.Itoa(used)+"/"+strconv.Itoa(s.opts.APILimit))
	}
	for k, v := range resp.header {
		h[k] = v
	}
	if resp.status == http.StatusNoContent {
		h.Del("Content-Type")
	}
	w.WriteHeader(resp.status)
	if resp.status != http.StatusNoContent {
		_, _ = w.Write(resp.body)
	}
	s.log.Debug("salesforcefake request", "method", rec.Method, "path", rec.Path, "status", rec.Status,
		"error_code", rec.ErrorCode, "fault", string(rec.Fault))
}

const dataPrefix = "/services/data/"

var apiVersion = regexp.MustCompile(`^v[0-9]{2,3}\.0$`)

// serveAPI authenticates, counts and routes one REST API request.
func (s *Server) serveAPI(r *http.Request, body []byte, rec *Request) response {
	tok := bearer(r.Header.Get("Authorization"))
	rec.Token = tok
	s.mu.Lock()
	valid := tok != "" && s.tokens[tok] && !s.refuse
	if !valid {
		s.stats.Unauthorized++
		s.mu.Unlock()
		resp := errorResponse(http.StatusUnauthorized, "INVALID_SESSION_ID", "Session expired or invalid")
		resp.header = http.Header{"Www-Authenticate": {`Token`}}
		return resp
	}
	s.apiUsed++
	over := s.apiUsed > s.opts.APILimit
	s.mu.Unlock()
	if over {
		return errorResponse(http.StatusForbidden, codeRequestLimit, "TotalRequests Limit exceeded.")
	}
	if f := s.fault(); f != FaultNone {
		rec.Fault = f
		s.mu.Lock()
		s.stats.InjectedFaults++
		s.mu.Unlock()
		return f.response()
	}
	if !s.sleepLatency() {
		return errorResponse(http.StatusServiceUnavailable, "SERVER_UNAVAILABLE", "The server is shutting down.")
	}

	segs, ok := pathSegments(r.URL.EscapedPath())
	if !ok {
		return notFound()
	}
	if len(segs) >= 4 && len(segs) <= 5 && apiVersion.MatchString(segs[2]) && (segs[3] == "query" || segs[3] == "queryAll") {
		return s.serveQuery(r, segs)
	}
	// segs: services data vXX.X sobjects Contact {id} | {field} {value}
	if len(segs) < 6 || !apiVersion.MatchString(segs[2]) || segs[3] != "sobjects" {
		return notFound()
	}
	version := segs[2]
	if segs[4] != "Contact" {
		return notFound()
	}
	switch len(segs) {
	case 6:
		return s.byID(r, version, segs[5], body, rec)
	case 7:
		if !strings.EqualFold(segs[5], ExternalIDField) {
			return errorResponse(http.StatusNotFound, "NOT_FOUND",
				"Provided external ID field does not exist or is not accessible: "+segs[5])
		}
		return s.byExternalID(r, version, segs[6], body, rec)
	}
	return notFound()
}

// pathSegments splits an escaped path into unescaped segments.
func pathSegments(escaped string) ([]string, bool) {
	parts := strings.Split(strings.Trim(escaped, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}

func bearer(h string) string {
	for _, scheme := range []string{"Bearer ", "OAuth "} {
		if v, ok := strings.CutPrefix(h, scheme); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func methodNotAllowed(method string) response {
	return errorResponse(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED",
		"HTTP Method '"+method+"' not allowed. Allowed are HEAD,GET,PATCH,DELETE")
}

// Requests returns every request received so far (API and token), in the
// order they were answered.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Stats returns request counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// SetAPIUsage sets the count of API requests used today (the first number
// of Sforce-Limit-Info). Setting it to Options.APILimit makes the next
// request exceed the limit (403 REQUEST_LIMIT_EXCEEDED).
func (s *Server) SetAPIUsage(used int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiUsed = max(used, 0)
}

// APIUsage returns the count of API requests used so far.
func (s *Server) APIUsage() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiUsed
}
