package stripefake_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

const testSecret = "whsec_test_secret"

// start runs a fake on a loopback port and returns it with its base URL.
func start(t *testing.T, opts stripefake.Options) (*stripefake.Server, string) {
	t.Helper()
	fake := stripefake.New(opts)
	t.Cleanup(fake.Close)
	url, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	return fake, url
}

// newClient returns a stripe-go client for the fake at url, without retries.
func newClient(url, key string, httpClient *http.Client) *client.API {
	b := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(url),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		EnableTelemetry:   stripe.Bool(false),
		HTTPClient:        httpClient,
	})
	return client.New(key, &stripe.Backends{API: b, Connect: b, Uploads: b})
}

// startWithClient is start plus a stripe-go client using the default key.
func startWithClient(t *testing.T, opts stripefake.Options) (*stripefake.Server, *client.API) {
	t.Helper()
	fake, url := start(t, opts)
	return fake, newClient(url, stripefake.DefaultAPIKey, nil)
}

// stripeErr asserts err is a *stripe.Error and returns it.
func stripeErr(t *testing.T, err error) *stripe.Error {
	t.Helper()
	require.Error(t, err)
	var se *stripe.Error
	require.True(t, errors.As(err, &se), "want *stripe.Error, got %T: %v", err, err)
	return se
}

// clock is a settable Options.Clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// receiver is a webhook endpoint that verifies signatures the way an
// application does, with stripe-go's webhook.ConstructEvent.
type receiver struct {
	srv    *httptest.Server
	secret string

	mu       sync.Mutex
	events   []stripe.Event // verified events, in arrival order
	rejected []error        // signature or parse failures
	seen     map[string]int // deliveries per event id
	// status decides the answer to a verified event; n counts earlier
	// deliveries of the same event id. Nil means 200.
	status func(ev stripe.Event, n int) int
}

func newReceiver(t *testing.T, secret string) *receiver {
	t.Helper()
	r := &receiver{secret: secret, seen: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	payload, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ev, err := webhook.ConstructEvent(payload, req.Header.Get("Stripe-Signature"), r.secret)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.rejected = append(r.rejected, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	n := r.seen[ev.ID]
	r.seen[ev.ID]++
	code := http.StatusOK
	if r.status != nil {
		code = r.status(ev, n)
	}
	if code >= 200 && code < 300 {
		r.events = append(r.events, ev)
	}
	w.WriteHeader(code)
}

func (r *receiver) setStatus(f func(ev stripe.Event, n int) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = f
}

// accepted returns the events answered 2xx, in arrival order.
func (r *receiver) accepted() []stripe.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stripe.Event(nil), r.events...)
}

func (r *receiver) rejections() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.rejected...)
}

// eventTypes lists the types of events.
func eventTypes(evs []stripe.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = string(ev.Type)
	}
	return out
}
