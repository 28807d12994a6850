package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// request is one request the fake Stripe received.
type request struct {
	Method, Path, Key string
	Form              url.Values
}

// metadata returns the metadata[...] parameters of the request.
func (r request) metadata() map[string]string {
	md := map[string]string{}
	for k, v := range r.Form {
		if inner, ok := strings.CutPrefix(k, "metadata["); ok {
			md[strings.TrimSuffix(inner, "]")] = v[0]
		}
	}
	return md
}

// answer is what the fake Stripe replies.
type answer struct {
	status int
	body   string
	header http.Header
}

// fakeStripe is an httptest server that records requests and answers with
// handle (200 with a customer echoing the request when handle is nil).
type fakeStripe struct {
	mu     sync.Mutex
	reqs   []request
	handle func(r request) answer
}

func (f *fakeStripe) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = nil
}

func (f *fakeStripe) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func (f *fakeStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	if r.Method == http.MethodGet {
		form = r.URL.Query()
	}
	req := request{Method: r.Method, Path: r.URL.Path, Key: r.Header.Get("Idempotency-Key"), Form: form}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	handle := f.handle
	f.mu.Unlock()
	a := answer{status: http.StatusOK}
	if handle != nil {
		a = handle(req)
	}
	if a.body == "" {
		a.body = echoCustomer(req)
	}
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_test")
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

// echoCustomer is a customer as Stripe would return it after req, assuming
// it held nothing else.
func echoCustomer(req request) string {
	id := strings.TrimPrefix(req.Path, "/v1/customers/")
	if id == "" || id == "/v1/customers" {
		id = "cus_new"
	}
	md := map[string]string{}
	for k, v := range req.metadata() {
		if v != "" {
			md[k] = v
		}
	}
	return customerJSON(id, req.Form.Get("email"), req.Form.Get("name"), req.Form.Get("phone"), md)
}

func customerJSON(id, email, name, phone string, md map[string]string) string {
	b, _ := json.Marshal(map[string]any{
		"id": id, "object": "customer", "email": email, "name": name, "phone": phone, "metadata": md,
	})
	return string(b)
}

func stripeErrorJSON(typ, code, msg string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"type": typ, "code": code, "message": msg}})
	return string(b)
}

// fakeClock drives the limiter in tests: sleeping advances it at once.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
}

// newFakeClock starts at the real time, so context deadlines (which use the
// real clock) mean the same to it.
func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.slept += d
	c.mu.Unlock()
	return ctx.Err()
}

func (c *fakeClock) total() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}

type harness struct {
	fake    *fakeStripe
	adapter *Adapter
	clock   *fakeClock
	reg     *prometheus.Registry
}

func newHarness(t *testing.T, rateLimit float64, handle func(request) answer) *harness {
	t.Helper()
	fake := &fakeStripe{handle: handle}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	a, err := New(Config{SecretKey: "sk_test_123", APIBase: srv.URL, RateLimit: rateLimit}, Options{HTTPClient: srv.Client(), Registerer: reg})
	require.NoError(t, err)
	clk := newFakeClock()
	a.limiter.now, a.limiter.sleep = clk.now, clk.sleep
	return &harness{fake: fake, adapter: a, clock: clk, reg: reg}
}

func testCustomer() integrations.Customer {
	return integrations.Customer{
		UserID: "0190a5d2-7c3e-7b1a-9f00-000000000001", Email: "ada@example.com", Name: "Ada", Phone: "+44 20 7946 0000",
		Metadata: map[string]string{"plan": "pro", "team": "core"}, Version: 3,
	}
}

const uid = "0190a5d2-7c3e-7b1a-9f00-000000000001"

func TestCreateIsOneRequestCarryingTheState(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1000, nil)
	res, err := h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{Attempt: 7})
	require.NoError(t, err)
	require.Equal(t, "cus_new", res.RemoteID)
	require.Equal(t, []string{"plan", "team"}, res.MetadataKeys)
	require.False(t, res.RemoteTime.IsZero(), "Stripe's clock (the Date header) is returned")

	reqs := h.fake.requests()
	require.Len(t, reqs, 1)
	create := reqs[0]
	require.Equal(t, "POST /v1/customers", create.Method+" "+create.Path)
	require.Equal(t, "tandem-stripe-create-"+uid, create.Key, "a first create uses the contract's key")
	require.Equal(t, "ada@example.com", create.Form.Get("email"), "the email is there from the start, so a lost create can be found by it")
	require.Equal(t, "Ada", create.Form.Get("name"))
	require.Equal(t, "+44 20 7946 0000", create.Form.Get("phone"))
	require.Equal(t, map[string]string{"plan": "pro", "team": "core", "tandem_user_id": uid}, create.metadata())
}

// TestUnsureCreateFindsBeforeCreating: after a push with an unknown outcome
// (its key may hold a saved 5xx), the adapter looks for the customer that
// push may have made, by the email it carried, before creating one with a
// key of its own.
func TestUnsureCreateFindsBeforeCreating(t *testing.T) {
	t.Parallel()
	var found atomic.Bool
	h := newHarness(t, 1000, func(r request) answer {
		if r.Method == http.MethodGet && r.Path == "/v1/customers" {
			if found.Load() && r.Form.Get("email") == "old@example.com" {
				return answer{status: 200, body: `{"object":"list","url":"/v1/customers","has_more":false,"data":[` +
					customerJSON("cus_lost", "old@example.com", "Ada", "", map[string]string{"tandem_user_id": uid}) + `,` +
					customerJSON("cus_other", "old@example.com", "Ada", "", map[string]string{"tandem_user_id": "someone-else"}) + `]}`}
			}
			return answer{status: 200, body: `{"object":"list","url":"/v1/customers","has_more":false,"data":[]}`}
		}
		return answer{status: 200}
	})
	link := integrations.Link{Attempt: 9, Unsure: true, UnsureEmail: "old@example.com"}

	// Nothing found: a create with a key unique to this attempt.
	res, err := h.adapter.Upsert(context.Background(), testCustomer(), link)
	require.NoError(t, err)
	require.Equal(t, "cus_new", res.RemoteID)
	reqs := h.fake.requests()
	require.Len(t, reqs, 3, "two exact lookups (the lost push's email and the user's), then the create")
	require.Equal(t, "old@example.com", reqs[0].Form.Get("email"))
	require.Equal(t, "ada@example.com", reqs[1].Form.Get("email"))
	require.Equal(t, "tandem-stripe-create-"+uid+"-a9", reqs[2].Key)

	// Found: that customer is updated, none is created.
	found.Store(true)
	h.fake.reset()
	res, err = h.adapter.Upsert(context.Background(), testCustomer(), link)
	require.NoError(t, err)
	require.Equal(t, "cus_lost", res.RemoteID)
	for _, r := range h.fake.requests() {
		require.NotEqual(t, "POST /v1/customers", r.Method+" "+r.Path, "no second customer")
	}
}

func TestUpdateWithKnownKeysIsOneRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1000, nil)
	c := testCustomer()
	c.Name, c.Phone = "", "" // cleared in Stripe
	c.Metadata = map[string]string{"plan": "enterprise"}
	res, err := h.adapter.Upsert(context.Background(), c, integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{"plan", "team", "old"}})
	require.NoError(t, err)
	require.Equal(t, "cus_1", res.RemoteID)
	require.Equal(t, []string{"plan"}, res.MetadataKeys)

	reqs := h.fake.requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, "POST /v1/customers/cus_1", r.Method+" "+r.Path)
	require.Equal(t, "tandem-stripe-update-"+uid+"-v3", r.Key)
	require.Equal(t, map[string]string{"plan": "enterprise", "team": "", "old": "", "tandem_user_id": uid}, r.metadata(),
		"removed keys are sent empty, which unsets them")
	for _, f := range []string{"name", "phone"} {
		require.Contains(t, r.Form, f, "an empty %s is sent, to clear it", f)
		require.Empty(t, r.Form.Get(f))
	}
}

func TestUpdateWithUnknownKeysReadsFirst(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1000, func(r request) answer {
		if r.Method == http.MethodGet {
			return answer{status: 200, body: customerJSON("cus_1", "old@example.com", "", "", map[string]string{
				"tandem_user_id": uid, "plan": "free", "legacy": "x",
			})}
		}
		return answer{status: 200}
	})
	res, err := h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1"})
	require.NoError(t, err)
	require.Equal(t, []string{"plan", "team"}, res.MetadataKeys)

	reqs := h.fake.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "GET /v1/customers/cus_1", reqs[0].Method+" "+reqs[0].Path)
	require.Equal(t, map[string]string{"plan": "pro", "team": "core", "legacy": "", "tandem_user_id": uid}, reqs[1].metadata())
}

func TestStaleKeysInAnswerAreRemoved(t *testing.T) {
	t.Parallel()
	// Stripe's answer shows a key neither the user nor the link knows (set
	// in the dashboard, or left by a replayed create).
	h := newHarness(t, 1000, func(r request) answer {
		if r.Key == "tandem-stripe-update-"+uid+"-v3" {
			return answer{status: 200, body: customerJSON("cus_1", "ada@example.com", "Ada", "", map[string]string{
				"tandem_user_id": uid, "plan": "pro", "team": "core", "surprise": "1", "another": "2",
			})}
		}
		return answer{status: 200}
	})
	_, err := h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}})
	require.NoError(t, err)
	reqs := h.fake.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "tandem-stripe-update-"+uid+"-v3-unset", reqs[1].Key)
	require.Equal(t, map[string]string{"another": "", "surprise": ""}, reqs[1].metadata())
	require.NotContains(t, reqs[1].Form, "email", "the clean-up sends only the unsets")
}

func TestUpdateKeysAreUniquePerAttempt(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1000, nil)
	_, err := h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}, Attempt: 4})
	require.NoError(t, err)
	_, err = h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}, Attempt: 5})
	require.NoError(t, err)
	reqs := h.fake.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "tandem-stripe-update-"+uid+"-v3-a4", reqs[0].Key)
	require.Equal(t, "tandem-stripe-update-"+uid+"-v3-a5", reqs[1].Key,
		"a key Stripe may have saved a 5xx under is never sent again")
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		answer     answer
		permanent  bool
		notFound   bool
		rateLimit  bool
		retryAfter time.Duration
		msg        string
	}{
		{name: "429 with Retry-After", answer: answer{status: 429, body: stripeErrorJSON("invalid_request_error", "rate_limit", "Too many requests"),
			header: http.Header{"Retry-After": {"2"}}}, rateLimit: true, retryAfter: 2 * time.Second, msg: "stripe 429 invalid_request_error rate_limit: Too many requests"},
		{name: "429 without Retry-After", answer: answer{status: 429, body: stripeErrorJSON("invalid_request_error", "lock_timeout", "Locked")},
			rateLimit: true},
		{name: "500", answer: answer{status: 500, body: stripeErrorJSON("api_error", "", "Something went wrong")}, msg: "stripe 500 api_error: Something went wrong"},
		{name: "502 not JSON", answer: answer{status: 502, body: "<html>Bad Gateway</html>"}},
		{name: "409 key in use", answer: answer{status: 409, body: stripeErrorJSON("idempotency_error", "idempotency_key_in_use", "Another request is in progress")}},
		{name: "400 invalid request", answer: answer{status: 400, body: stripeErrorJSON("invalid_request_error", "email_invalid", "Invalid email address: nope")},
			permanent: true, msg: "stripe 400 invalid_request_error email_invalid: Invalid email address: nope [request req_test]"},
		{name: "401", answer: answer{status: 401, body: stripeErrorJSON("invalid_request_error", "", "Invalid API Key provided: sk_test_***123")},
			permanent: true, msg: "stripe 401 invalid_request_error: Invalid API Key provided"},
		{name: "403", answer: answer{status: 403, body: stripeErrorJSON("invalid_request_error", "", "The provided key does not have access")},
			permanent: true},
		{name: "404 resource_missing", answer: answer{status: 404, body: stripeErrorJSON("invalid_request_error", "resource_missing", "No such customer: 'cus_1'")},
			permanent: true, notFound: true, msg: "remote object not found (stripe 404 invalid_request_error resource_missing: No such customer: 'cus_1'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1000, func(request) answer { return tc.answer })
			_, err := h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}})
			require.Error(t, err)
			require.Len(t, h.fake.requests(), 1, "stripe-go must not retry by itself")
			require.Equal(t, tc.permanent, integrations.IsPermanent(err), "permanent: %v", err)
			require.Equal(t, tc.notFound, errors.Is(err, integrations.ErrNotFound), "not found: %v", err)
			d, limited := integrations.RetryAfter(err)
			require.Equal(t, tc.rateLimit, limited, "rate limited: %v", err)
			require.Equal(t, tc.retryAfter, d)
			require.Contains(t, err.Error(), "stripe: updating customer cus_1 for user "+uid)
			if tc.msg != "" {
				require.Contains(t, err.Error(), tc.msg)
			}
			if tc.rateLimit {
				require.InDelta(t, 500, h.adapter.limiter.limit(), 0.001, "a 429 halves the rate")
				require.InDelta(t, 1, value(t, h.adapter.limiter.m.throttled), 0)
			}
		})
	}
}

func TestNetworkErrorIsTransient(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens there any more
	a, err := New(Config{SecretKey: "sk_test_123", APIBase: base, RateLimit: 1000}, Options{})
	require.NoError(t, err)
	_, err = a.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}})
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err), "%v", err)
	_, limited := integrations.RetryAfter(err)
	require.False(t, limited)
}

func TestUpdateOfDeletedCustomerIsNotFound(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1000, func(r request) answer {
		return answer{status: 200, body: `{"id":"cus_1","object":"customer","deleted":true}`}
	})
	res, err := h.adapter.Upsert(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1"})
	require.ErrorIs(t, err, integrations.ErrNotFound)
	require.True(t, integrations.IsPermanent(err))
	require.Equal(t, "cus_1", res.RemoteID)
	require.Len(t, h.fake.requests(), 1, "no update after reading a deleted customer")
}

func TestIdempotencyMismatch(t *testing.T) {
	t.Parallel()
	mismatch := answer{status: 400, body: stripeErrorJSON("idempotency_error", "",
		"Keys for idempotent requests can only be used with the same parameters they were first used with.")}
	c := testCustomer()

	t.Run("customer already holds the version", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, func(r request) answer {
			if r.Method == http.MethodGet {
				return answer{status: 200, body: customerJSON("cus_1", c.Email, c.Name, c.Phone, map[string]string{
					"tandem_user_id": uid, "plan": "pro", "team": "core",
				})}
			}
			return mismatch
		})
		res, err := h.adapter.Upsert(context.Background(), c, integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{"x"}})
		require.NoError(t, err)
		require.Equal(t, []string{"plan", "team"}, res.MetadataKeys)
	})
	t.Run("customer differs", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, func(r request) answer {
			if r.Method == http.MethodGet {
				return answer{status: 200, body: customerJSON("cus_1", c.Email, "Changed In Dashboard", c.Phone, map[string]string{
					"tandem_user_id": uid, "plan": "pro", "team": "core",
				})}
			}
			return mismatch
		})
		_, err := h.adapter.Upsert(context.Background(), c, integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{"x"}})
		require.Error(t, err)
		require.False(t, integrations.IsPermanent(err), "the webhook will bring the change and a new version: %v", err)
		require.Contains(t, err.Error(), "first used with other parameters")
	})
}

func TestDelete(t *testing.T) {
	t.Parallel()
	t.Run("sends the delete key", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, func(request) answer {
			return answer{status: 200, body: `{"id":"cus_1","object":"customer","deleted":true}`}
		})
		require.NoError(t, h.adapter.Delete(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1"}))
		reqs := h.fake.requests()
		require.Len(t, reqs, 1)
		require.Equal(t, "DELETE /v1/customers/cus_1", reqs[0].Method+" "+reqs[0].Path)
		require.Equal(t, "tandem-stripe-delete-"+uid, reqs[0].Key)
	})
	t.Run("already gone is done", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, func(request) answer {
			return answer{status: 404, body: stripeErrorJSON("invalid_request_error", "resource_missing", "No such customer: 'cus_1'")}
		})
		require.NoError(t, h.adapter.Delete(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1"}))
	})
	t.Run("no remote id sends nothing (the worker finds what to delete)", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, nil)
		require.NoError(t, h.adapter.Delete(context.Background(), testCustomer(), integrations.Link{}))
		require.Empty(t, h.fake.requests())
	})
	t.Run("keys are unique per attempt", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, func(request) answer {
			return answer{status: 200, body: `{"id":"cus_1","object":"customer","deleted":true}`}
		})
		require.NoError(t, h.adapter.Delete(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1", Attempt: 3}))
		require.Equal(t, "tandem-stripe-delete-"+uid+"-a3", h.fake.requests()[0].Key)
	})
	t.Run("errors keep their kind", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1000, func(request) answer {
			return answer{status: 500, body: stripeErrorJSON("api_error", "", "boom")}
		})
		err := h.adapter.Delete(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1"})
		require.Error(t, err)
		require.False(t, integrations.IsPermanent(err))
		require.Contains(t, err.Error(), "stripe: deleting customer cus_1 for user "+uid+": stripe 500 api_error: boom")
	})
}

func TestMetadataLimits(t *testing.T) {
	t.Parallel()
	many := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%02d", i)] = "v"
		}
		return m
	}
	cases := []struct {
		name string
		md   map[string]string
		want []string // substrings of the error; none means accepted
	}{
		{name: "49 user keys fit", md: many(49)},
		{name: "49 user keys and our own id fit", md: func() map[string]string { m := many(49); m[MetadataUserIDKey] = uid; return m }()},
		{name: "50 user keys do not", md: many(50), want: []string{"51 keys with tandem_user_id (Stripe allows 50)"}},
		{name: "key of 40 characters", md: map[string]string{strings.Repeat("k", 40): "v"}},
		{name: "key of 41 characters", md: map[string]string{strings.Repeat("k", 41): "v"}, want: []string{"has 41 characters (Stripe allows 40)"}},
		{name: "multibyte key counts characters", md: map[string]string{strings.Repeat("é", 40): "v"}},
		{name: "value of 500 characters", md: map[string]string{"k": strings.Repeat("v", 500)}},
		{name: "value of 501 characters", md: map[string]string{"k": strings.Repeat("v", 501)}, want: []string{`value of key "k" has 501 characters (Stripe allows 500)`}},
		{name: "brackets", md: map[string]string{"a[b]": "v"}, want: []string{"square brackets"}},
		{name: "empty key", md: map[string]string{"": "v"}, want: []string{"a key is empty"}},
		{name: "empty value", md: map[string]string{"k": ""}, want: []string{`value of key "k" is empty`}},
		{name: "foreign tandem_user_id", md: map[string]string{MetadataUserIDKey: "someone-else"}, want: []string{"reserved"}},
		{name: "every problem is listed", md: map[string]string{strings.Repeat("k", 41): "", "ok": "v"},
			want: []string{"has 41 characters", "is empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1000, nil)
			c := testCustomer()
			c.Metadata = tc.md
			_, err := h.adapter.Upsert(context.Background(), c, integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}})
			if len(tc.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.True(t, integrations.IsPermanent(err))
			require.Contains(t, err.Error(), "stripe: user "+uid+": metadata Stripe cannot hold: ")
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.Empty(t, h.fake.requests(), "nothing is sent when the metadata cannot be held")
		})
	}
}

func TestRateLimitSpacesRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 20, nil)
	for range 40 {
		require.NoError(t, h.adapter.Delete(context.Background(), testCustomer(), integrations.Link{RemoteID: "cus_1"}))
	}
	require.Len(t, h.fake.requests(), 40)
	// A burst of 5, then one request per 1/20 s: 35 waits of 50 ms.
	require.Equal(t, 35*50*time.Millisecond, h.clock.total())
	require.InDelta(t, 35, value(t, h.adapter.limiter.m.waits), 0)
	require.InDelta(t, 1.75, value(t, h.adapter.limiter.m.waitSeconds), 1e-9)

	families, err := h.reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	require.Subset(t, names, []string{"tandem_provider_ratelimit_waits_total", "tandem_provider_ratelimit_rate"}, "metrics are registered")
}

func TestRateLimitWaitRespectsDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, nil) // burst 1
	ctx := context.Background()
	require.NoError(t, h.adapter.Delete(ctx, testCustomer(), integrations.Link{RemoteID: "cus_1"}))

	ctx, cancel := context.WithDeadline(ctx, h.clock.now().Add(100*time.Millisecond))
	defer cancel()
	err := h.adapter.Delete(ctx, testCustomer(), integrations.Link{RemoteID: "cus_1"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, integrations.IsPermanent(err))
	require.Len(t, h.fake.requests(), 1, "the second request was never sent")
	require.Zero(t, h.clock.total(), "it failed at once instead of sleeping")
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	require.NoError(t, m.Write(&out))
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	fake := &fakeStripe{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	a, err := New(Config{SecretKey: "sk_test_123", APIBase: srv.URL, RateLimit: 1000}, Options{HTTPClient: srv.Client()})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			c := testCustomer()
			c.UserID = fmt.Sprintf("user-%d", i)
			if i%3 == 0 {
				a.limiter.throttled(0)
			}
			_, err := a.Upsert(context.Background(), c, integrations.Link{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, fake.requests(), 20, "one create each")
}

func TestCustomerFromHashesLikeThePush(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1000, nil)
	for _, c := range []integrations.Customer{testCustomer(), {UserID: uid, Email: "x@example.com", Version: 1}} {
		_, err := h.adapter.Upsert(context.Background(), c, integrations.Link{RemoteID: "cus_1", MetadataKeys: []string{}})
		require.NoError(t, err)
		reqs := h.fake.requests()
		var cust stripego.Customer
		require.NoError(t, json.Unmarshal([]byte(echoCustomer(reqs[len(reqs)-1])), &cust))
		got := CustomerFrom(&cust)
		require.Equal(t, uid, got.UserID)
		require.NotContains(t, got.Metadata, MetadataUserIDKey)
		require.Equal(t, c.Hash(), got.Hash(), "the webhook sees the push as an echo")
	}
}
