// Package stripe is the Stripe adapter of the provider contract
// (integrations.Provider): it keeps one Stripe customer per Tandem user, using
// stripe-go's per-client API (never the global stripe.Key).
//
// # Requests
//
// Every customer carries metadata.tandem_user_id (MetadataUserIDKey) and
// every request carries an idempotency key that starts with "tandem-" and is
// unique to one push attempt (integrations.Link.Attempt): Stripe saves the
// first answer of a request that started executing under its key for 24 h,
// a 500 included, so a key is never sent twice.
//
//   - Upsert without a remote id creates the customer holding the whole
//     state (email, name, phone, metadata and the tag) in one request,
//     keyed tandem-stripe-create-<user id> on a first attempt. After a push
//     with an unknown outcome (integrations.Link.Unsure) it first looks for
//     the customer that push may have made (FindTagged: Stripe's customer
//     list filtered by the email that push carried, an exact read unlike
//     Stripe's search, which lags writes by up to a minute) and updates it;
//     only if there is none does it create, keyed
//     tandem-stripe-create-<user id>-a<attempt>. Several customers tagged
//     with the user: a permanent error naming them.
//   - Upsert with a remote id updates the customer, keyed
//     tandem-stripe-update-<user id>-v<version>-a<attempt>: email, name and
//     phone are always sent, an empty one as "" (which clears it in Stripe).
//   - Delete deletes the customer, keyed
//     tandem-stripe-delete-<user id>-a<attempt>; a customer that is already
//     gone (404) counts as deleted. Without a remote id it does nothing: the
//     worker finds a customer an unrecorded create may have made with
//     FindTagged first.
//
// Result.RemoteTime is Stripe's clock when it answered (the Date header):
// the webhook compares event times with it, one clock per comparison.
//
// # Metadata
//
// The customer's metadata mirrors the user's, plus tandem_user_id. Stripe
// merges metadata on update, so a key the user removed must be sent with an
// empty value. The adapter learns the keys the customer holds from
// Link.MetadataKeys (what the last Upsert returned in Result.MetadataKeys),
// which costs nothing; when they are unknown (nil) it reads the customer
// first (one more request). Either way it checks the metadata in Stripe's
// answer and, if the customer still holds keys the user does not have (the
// stored keys were stale, or a create was replayed for a customer that had
// been updated since), removes them in one more request keyed
// tandem-stripe-update-<user id>-v<version>-unset. A key set in the Stripe
// dashboard that the webhook has not yet brought into the user is removed
// too: the push makes Stripe hold the user as Tandem has it. CustomerFrom
// maps a customer back the same way (without tandem_user_id), so the webhook
// can compare its Hash with the pushed-state hash.
//
// Metadata Stripe cannot hold exactly (more than 50 keys with
// tandem_user_id, a key longer than 40 characters or with square brackets, an
// empty key or value, a value longer than 500 characters, a tandem_user_id
// that is not the user's id) fails the Upsert with a permanent error listing
// every problem, before any request. Nothing is cut or dropped: a customer
// holding less than the user would come back through the webhook and
// overwrite the user.
//
// # Errors
//
// Errors follow the contract's kinds (see package integrations): 429 is
// transient and rate-limited (with Stripe's Retry-After, if any); 409 (the
// same idempotency key in use by a concurrent request), 5xx and network
// failures are transient; an update of a customer that is gone (404
// resource_missing, or deleted) matches integrations.ErrNotFound and is
// permanent; any other 4xx is permanent and carries Stripe's message. If
// Stripe refuses an update key because an earlier attempt at the same version
// sent other parameters, the adapter reads the customer: if it already holds
// this version, the Upsert succeeded; otherwise the error is transient (a
// change made in Stripe is on its way through the webhook and will bump the
// version). stripe-go's own retries are off: the worker's delay queues retry.
//
// # Rate limit
//
// Every request first waits on a token bucket at Config.RateLimit requests
// per second (burst up to 5). A 429 halves the rate (at most once a second,
// down to 1/16 of it) and, if Stripe sent Retry-After, pauses all requests of
// the process that long (at most a minute); without 429s the rate grows back
// by an eighth of the configured rate each second.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/customer"
	"github.com/tandem-sync/tandem/internal/httpclient"
	"github.com/tandem-sync/tandem/internal/integrations"
	"golang.org/x/time/rate"
)

// Name is the provider's stable name.
const Name = "stripe"

// MetadataUserIDKey is the metadata key every Stripe customer Tandem pushes
// carries, holding the user's id (contract).
const MetadataUserIDKey = "tandem_user_id"

// DefaultHTTPTimeout bounds one request when Options.HTTPClient is nil.
const DefaultHTTPTimeout = 30 * time.Second

// Options are the adapter's dependencies; all are optional.
type Options struct {
	// Logger receives stripe-go's messages at debug level and the adapter's
	// own; nil discards them. The adapter adds provider=stripe.
	Logger *slog.Logger
	// HTTPClient sends the requests; nil means a client with
	// DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Registerer receives the rate limiter's metrics
	// (tandem_provider_ratelimit_*, tandem_provider_throttled_total); nil
	// leaves them unregistered.
	Registerer prometheus.Registerer
}

// Adapter is the Stripe provider. It is safe for concurrent use; make one per
// process, since its rate limit is per adapter.
type Adapter struct {
	customers customer.Client
	limiter   *limiter
	search    *rate.Limiter // Stripe's search: SearchRate requests per second
	logger    *slog.Logger
	cfg       Config // the webhook reads WebhookSecret and AcceptAPIVersionMismatch
}

var (
	_ integrations.Provider = (*Adapter)(nil)
	_ integrations.Finder   = (*Adapter)(nil)
)

// New returns an adapter for cfg. It returns cfg.Validate's error, or an
// error registering its metrics.
func New(cfg Config, opts Options) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("provider", Name)
	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = httpclient.New(DefaultHTTPTimeout)
	}
	backendCfg := &stripego.BackendConfig{
		HTTPClient:        httpClient,
		MaxNetworkRetries: stripego.Int64(0),
		LeveledLogger:     leveledLogger{logger},
		EnableTelemetry:   stripego.Bool(false),
	}
	if cfg.APIBase != "" {
		backendCfg.URL = stripego.String(cfg.APIBase)
	}
	m, err := newLimiterMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Adapter{
		customers: customer.Client{B: stripego.GetBackendWithConfig(stripego.APIBackend, backendCfg), Key: cfg.SecretKey},
		limiter:   newLimiter(cfg.RateLimit, m),
		search:    newSearchLimiter(),
		logger:    logger,
		cfg:       cfg,
	}, nil
}

// Name returns "stripe".
func (a *Adapter) Name() string { return Name }

// Upsert creates or updates the user's Stripe customer (see the package
// documentation). It returns a permanent error before any request if c has
// no user id or metadata Stripe cannot hold; an error matching
// integrations.ErrNotFound if the customer link.RemoteID is gone; otherwise
// errors of the contract's kinds. Result.RemoteID is set whenever the
// customer's id is known, even with an error.
func (a *Adapter) Upsert(ctx context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error) {
	if c.UserID == "" {
		return integrations.Result{}, integrations.Permanent(errors.New("stripe: upsert of a customer without a user id"))
	}
	if err := checkMetadata(c); err != nil {
		return integrations.Result{}, fmt.Errorf("stripe: user %s: %w", c.UserID, err)
	}
	id, remoteKeys := link.RemoteID, link.MetadataKeys
	if id == "" && link.Unsure && !link.Looked {
		found, err := a.findOne(ctx, c, link)
		if err != nil {
			return integrations.Result{}, err
		}
		id, remoteKeys = found, nil
	}
	if id == "" {
		cust, err := a.create(ctx, c, link)
		if err != nil {
			return integrations.Result{}, err
		}
		return integrations.Result{RemoteID: cust.ID, MetadataKeys: userKeys(c.Metadata), RemoteTime: remoteTime(cust)}, nil
	}
	if remoteKeys == nil {
		cust, err := a.get(ctx, c.UserID, id)
		if err != nil {
			return integrations.Result{RemoteID: id}, err
		}
		remoteKeys = make([]string, 0, len(cust.Metadata))
		for k := range cust.Metadata {
			remoteKeys = append(remoteKeys, k)
		}
	}
	res := integrations.Result{RemoteID: id}
	at, err := a.update(ctx, c, id, remoteKeys, link.Attempt)
	if err != nil {
		return res, err
	}
	res.MetadataKeys = userKeys(c.Metadata)
	res.RemoteTime = at
	return res, nil
}

// findOne looks for the customer an earlier push with an unknown outcome
// may have made: "" if there is none, an error if there are several.
func (a *Adapter) findOne(ctx context.Context, c integrations.Customer, link integrations.Link) (string, error) {
	ids, err := a.FindTagged(ctx, c.UserID, []string{link.UnsureEmail, c.Email})
	switch {
	case err != nil:
		return "", err
	case len(ids) > 1:
		return "", integrations.Permanent(fmt.Errorf("stripe: several customers are tagged with user %s (%s): resolve by deleting the extra ones in Stripe",
			c.UserID, strings.Join(ids, ", ")))
	case len(ids) == 1:
		return ids[0], nil
	}
	return "", nil
}

// FindTagged returns the live customers tagged with userID among those with
// one of emails (Stripe's list filtered by email: an exact read, not its
// search, which lags writes by up to a minute). A customer created by a
// push carries the user's email from the start, so the email that push sent
// finds it.
func (a *Adapter) FindTagged(ctx context.Context, userID string, emails []string) ([]string, error) {
	found, err := a.Candidates(ctx, userID, emails, false)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range found {
		if o.UserID == userID {
			ids = append(ids, o.ID)
		}
	}
	return ids, nil
}

// Delete deletes the customer link.RemoteID. It returns nil if it is
// already gone, or if there is no remote id (the worker finds a customer an
// unrecorded create may have made through FindTagged first); a permanent
// error if c has no user id, otherwise errors of the contract's kinds.
func (a *Adapter) Delete(ctx context.Context, c integrations.Customer, link integrations.Link) error {
	if c.UserID == "" {
		return integrations.Permanent(fmt.Errorf("stripe: deleting customer %q: no user id for the idempotency key", link.RemoteID))
	}
	if link.RemoteID == "" {
		return nil
	}
	p := &stripego.CustomerParams{}
	p.Context = ctx
	p.SetIdempotencyKey(integrations.AttemptKey(integrations.DeleteKey(Name, c.UserID), link.Attempt))
	_, err := a.call(ctx, func() (*stripego.Customer, error) { return a.customers.Del(link.RemoteID, p) })
	if err == nil || isNotFound(err) {
		return nil
	}
	return fmt.Errorf("stripe: deleting customer %s for user %s: %w", link.RemoteID, c.UserID, err)
}

// create makes a customer holding c. Its key is the contract's create key on
// a first attempt; after a push with an unknown outcome (whose key may hold
// a saved 5xx) it is made unique to this attempt, once findOne found nothing.
func (a *Adapter) create(ctx context.Context, c integrations.Customer, link integrations.Link) (*stripego.Customer, error) {
	key := integrations.CreateKey(Name, c.UserID)
	if link.Unsure {
		key = integrations.AttemptKey(key, link.Attempt)
	}
	p := &stripego.CustomerParams{
		Email:    stripego.String(c.Email),
		Name:     stripego.String(c.Name),
		Phone:    stripego.String(c.Phone),
		Metadata: metadataParams(c, nil),
	}
	p.Context = ctx
	p.SetIdempotencyKey(key)
	cust, err := a.call(ctx, func() (*stripego.Customer, error) { return a.customers.New(p) })
	if isIdempotencyMismatch(err) {
		// The key was first used with other parameters (by a Tandem before
		// this one, or a push whose outcome was not recorded): the customer
		// it made carries the tag.
		id, ferr := a.findOne(ctx, c, integrations.Link{})
		if ferr != nil || id == "" {
			return nil, fmt.Errorf("stripe: creating customer for user %s: %w", c.UserID, err)
		}
		at, uerr := a.update(ctx, c, id, nil, link.Attempt)
		if uerr != nil {
			return nil, uerr
		}
		found := &stripego.Customer{ID: id}
		found.LastResponse = &stripego.APIResponse{Header: http.Header{"Date": []string{at.Format(http.TimeFormat)}}}
		return found, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stripe: creating customer for user %s: %w", c.UserID, maskPersonal(err, personalValues(c)...))
	}
	if cust.ID == "" {
		return nil, fmt.Errorf("stripe: creating customer for user %s: answer without an id", c.UserID)
	}
	return cust, nil
}

// update makes customer id hold c, unsetting remoteKeys the user does not
// have, then removes any other key Stripe's answer shows. It returns
// Stripe's clock at the answer.
func (a *Adapter) update(ctx context.Context, c integrations.Customer, id string, remoteKeys []string, attempt int64) (time.Time, error) {
	key := integrations.AttemptKey(integrations.UpdateKey(Name, c.UserID, c.Version), attempt)
	p := &stripego.CustomerParams{
		Email:    stripego.String(c.Email),
		Name:     stripego.String(c.Name),
		Phone:    stripego.String(c.Phone),
		Metadata: metadataParams(c, remoteKeys),
	}
	p.Context = ctx
	p.SetIdempotencyKey(key)
	cust, err := a.call(ctx, func() (*stripego.Customer, error) { return a.customers.Update(id, p) })
	switch {
	case err == nil:
	case isIdempotencyMismatch(err):
		// An earlier attempt with this key sent other parameters (keys
		// are unique per attempt, so only a Tandem before them did). Done
		// if it took.
		cust, err = a.get(ctx, c.UserID, id)
		if err != nil {
			return time.Time{}, err
		}
		if !holds(cust, c) {
			return time.Time{}, fmt.Errorf("stripe: updating customer %s for user %s: key %s was first used with other parameters and the customer does not hold version %d; retry once the change made in Stripe has arrived", id, c.UserID, key, c.Version)
		}
		return remoteTime(cust), nil
	default:
		return time.Time{}, fmt.Errorf("stripe: updating customer %s for user %s: %w", id, c.UserID, maskPersonal(err, personalValues(c)...))
	}

	stale := staleKeys(c, cust.Metadata)
	if len(stale) == 0 {
		return remoteTime(cust), nil
	}
	a.logger.DebugContext(ctx, "removing metadata keys the user does not have", "user_id", c.UserID, "customer_id", id, "keys", len(stale))
	unset := &stripego.CustomerParams{}
	unset.Context = ctx
	unset.SetIdempotencyKey(key + "-unset")
	for _, k := range stale {
		unset.AddMetadata(k, "")
	}
	cust, err = a.call(ctx, func() (*stripego.Customer, error) { return a.customers.Update(id, unset) })
	if err != nil {
		return time.Time{}, fmt.Errorf("stripe: removing metadata keys %q of customer %s for user %s: %w", stale, id, c.UserID, err)
	}
	return remoteTime(cust), nil
}

// remoteTime is Stripe's clock when it answered (the Date header), zero if
// unknown.
func remoteTime(cust *stripego.Customer) time.Time {
	if cust == nil || cust.LastResponse == nil {
		return time.Time{}
	}
	t, err := http.ParseTime(cust.LastResponse.Header.Get("Date"))
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// personalValues are the values of c that Stripe's error messages may
// quote back.
func personalValues(c integrations.Customer) []string {
	out := []string{c.Email, c.Name, c.Phone}
	for _, v := range c.Metadata {
		out = append(out, v)
	}
	return out
}

// get reads customer id; a deleted customer is integrations.ErrNotFound.
func (a *Adapter) get(ctx context.Context, userID, id string) (*stripego.Customer, error) {
	p := &stripego.CustomerParams{}
	p.Context = ctx
	cust, err := a.call(ctx, func() (*stripego.Customer, error) { return a.customers.Get(id, p) })
	if err != nil {
		return nil, fmt.Errorf("stripe: reading customer %s for user %s: %w", id, userID, err)
	}
	if cust.Deleted {
		return nil, integrations.Permanent(fmt.Errorf("stripe: customer %s for user %s was deleted in Stripe: %w", id, userID, integrations.ErrNotFound))
	}
	return cust, nil
}

// call waits for the rate limiter, sends one request and translates its error.
func (a *Adapter) call(ctx context.Context, do func() (*stripego.Customer, error)) (*stripego.Customer, error) {
	if err := a.limiter.wait(ctx); err != nil {
		return nil, err
	}
	cust, err := do()
	if err != nil {
		return nil, a.classify(err)
	}
	return cust, nil
}

// holds reports whether cust holds exactly c's synced state.
func holds(cust *stripego.Customer, c integrations.Customer) bool {
	if cust.Email != c.Email || cust.Name != c.Name || cust.Phone != c.Phone {
		return false
	}
	if len(staleKeys(c, cust.Metadata)) > 0 || cust.Metadata[MetadataUserIDKey] != c.UserID {
		return false
	}
	for k, v := range c.Metadata {
		if got, ok := cust.Metadata[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// leveledLogger hands stripe-go's messages to slog at debug level: the
// adapter returns every error it sees, so logging them too would log twice.
//
// stripe-go logs whole response bodies ("Response: %s") and Stripe's error
// answers, which carry customers' emails, names, phones and metadata. Only
// the messages in safeFormats (method, host and path, timings, retry
// counts) keep their arguments; every other message is logged with its
// arguments replaced by [redacted], so personal data never reaches the log
// at any level.
type leveledLogger struct{ l *slog.Logger }

// safeFormats are stripe-go v76's format strings whose arguments carry no
// personal data (a path holds a customer id, not its fields).
var safeFormats = map[string]bool{
	"Requesting %v %v%v":                                        true,
	"Request completed in %v (retry: %v)":                       true,
	"Not retrying request: %v":                                  true,
	"Initiating retry %v for request %v %v%v after sleeping %v": true,
}

func (l leveledLogger) Debugf(format string, v ...any) { l.log(format, v) }
func (l leveledLogger) Infof(format string, v ...any)  { l.log(format, v) }
func (l leveledLogger) Warnf(format string, v ...any)  { l.log(format, v) }
func (l leveledLogger) Errorf(format string, v ...any) { l.log(format, v) }

func (l leveledLogger) log(format string, v []any) {
	if !l.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if !safeFormats[format] {
		masked := make([]any, len(v))
		for i := range v {
			masked[i] = redacted{}
		}
		v = masked
	}
	l.l.Debug(fmt.Sprintf(format, v...), "component", "stripe-go")
}

// redacted prints as [redacted] whatever the verb.
type redacted struct{}

func (redacted) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

func newLimiterMetrics(reg prometheus.Registerer) (limiterMetrics, error) {
	labels := prometheus.Labels{"provider": Name}
	m := limiterMetrics{
		waits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_provider_ratelimit_waits_total", ConstLabels: labels,
			Help: "Requests that waited for the client-side rate limiter.",
		}),
		waitSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_provider_ratelimit_wait_seconds_total", ConstLabels: labels,
			Help: "Time requests spent waiting for the client-side rate limiter.",
		}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_provider_throttled_total", ConstLabels: labels,
			Help: "Answers 429 Too Many Requests from the provider.",
		}),
		rate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_provider_ratelimit_rate", ConstLabels: labels,
			Help: "Current client-side rate limit in requests per second (lowered after 429s).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.waits, err = register(reg, m.waits); err != nil {
		return m, err
	}
	if m.waitSeconds, err = register(reg, m.waitSeconds); err != nil {
		return m, err
	}
	if m.throttled, err = register(reg, m.throttled); err != nil {
		return m, err
	}
	if m.rate, err = register(reg, m.rate); err != nil {
		return m, err
	}
	return m, nil
}

// register registers c, or returns the identical collector already
// registered (a second adapter in the same process shares the metrics).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("stripe: registering metrics: %w", err)
	}
	return c, nil
}
