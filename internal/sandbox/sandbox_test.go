package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/sandbox"
)

// TestDashboardEditSendsSignedWebhook edits a customer through the
// dashboard form: the receiver gets a verifiable customer.updated without an
// idempotency key (a dashboard edit, not an API call).
func TestDashboardEditSendsSignedWebhook(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []stripego.Event
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := webhook.ConstructEvent(body, r.Header.Get("Stripe-Signature"), "whsec_test")
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}))
	defer rcv.Close()
	sb := sandbox.New(sandbox.Config{APIKey: "sk_test_x", WebhookURL: rcv.URL, WebhookSecret: "whsec_test"})
	defer sb.Close()
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := client.PostForm(srv.URL+"/_sandbox/customers", url.Values{"email": {"d@example.com"}, "name": {"Dash"}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	cs := sb.Fake.Customers()
	require.Len(t, cs, 1)

	req, _ := http.NewRequest("POST", srv.URL+"/_sandbox/customers/"+cs[0].ID, strings.NewReader(`{"name":"Dashed"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err = client.Do(req)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	resp.Body.Close()
	require.Equal(t, "Dashed", got["name"])

	page, err := client.Get(srv.URL + "/_sandbox/")
	require.NoError(t, err)
	html, _ := io.ReadAll(page.Body)
	page.Body.Close()
	require.Contains(t, string(html), `value="Dashed"`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, events, 2)
	require.Equal(t, "customer.created", string(events[0].Type))
	require.Equal(t, "customer.updated", string(events[1].Type))
	require.Empty(t, events[1].Request.IdempotencyKey)

	// Stripe's API is served too, behind the key.
	r2, err := http.Get(srv.URL + "/v1/customers")
	require.NoError(t, err)
	r2.Body.Close()
	require.Equal(t, 401, r2.StatusCode)
}

// TestControlEndpoints drives the JSON control API: faults make the API
// answer 429, delivery pauses hold events back, the list marks deleted
// customers, and stats count what happened.
func TestControlEndpoints(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	received := 0
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received++
		mu.Unlock()
	}))
	defer rcv.Close()
	sb := sandbox.New(sandbox.Config{APIKey: "sk_test_x", WebhookURL: rcv.URL, WebhookSecret: "whsec_test"})
	defer sb.Close()
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()

	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	apiStatus := func() int {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/v1/customers", nil)
		req.SetBasicAuth("sk_test_x", "")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	code, _ := post("/_sandbox/faults", `{"rate_limit_ratio":1}`)
	require.Equal(t, 200, code)
	require.Equal(t, 429, apiStatus())
	code, _ = post("/_sandbox/faults", `{}`)
	require.Equal(t, 200, code)
	require.Equal(t, 200, apiStatus())
	code, _ = post("/_sandbox/faults", `{"rate_limit_ratio":0.7,"server_error_ratio":0.7}`)
	require.Equal(t, 400, code)
	code, _ = post("/_sandbox/faults", `{"latency":"soon"}`)
	require.Equal(t, 400, code)

	code, _ = post("/_sandbox/delivery", `{"paused":true,"duplicates":1,"order":"shuffled"}`)
	require.Equal(t, 200, code)
	code, _ = post("/_sandbox/delivery", `{"order":"sideways"}`)
	require.Equal(t, 400, code)
	code, body := post("/_sandbox/customers", `{"email":"c@example.com","name":"C"}`)
	require.Equal(t, 200, code, body)
	var c struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	code, _ = post("/_sandbox/customers/"+c.ID+"/delete", `{}`)
	require.Equal(t, 200, code)
	require.Equal(t, 4, sb.Fake.DeliveryStats().Pending, "two events, twice each, held back")

	resp, err := http.Get(srv.URL + "/_sandbox/customers")
	require.NoError(t, err)
	var list []map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Len(t, list, 1)
	require.Equal(t, true, list[0]["deleted"])
	require.Equal(t, "c@example.com", list[0]["email"])

	code, _ = post("/_sandbox/delivery", `{"paused":false}`)
	require.Equal(t, 200, code)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	mu.Lock()
	require.Equal(t, 4, received)
	mu.Unlock()

	resp, err = http.Get(srv.URL + "/_sandbox/stats")
	require.NoError(t, err)
	var stats struct {
		Requests   map[string]int
		Events     int
		Deliveries struct{ Delivered int }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&stats))
	resp.Body.Close()
	require.Equal(t, 2, stats.Events)
	require.Equal(t, 4, stats.Deliveries.Delivered)
	require.Equal(t, 1, stats.Requests["injected_rate_limits"])
	require.Zero(t, stats.Requests["writes"], "dashboard edits are not API requests")
	require.Equal(t, 2, stats.Requests["total"])
}

// TestDashboardRefusesCrossSitePosts: any page a developer visits could post
// a form to the sandbox and so edit a customer, and through the webhook a
// Tandem user. Browser requests from another origin are refused (403) and
// change nothing; the dashboard's own page and non-browser clients (curl)
// still work.
func TestDashboardRefusesCrossSitePosts(t *testing.T) {
	t.Parallel()
	sb := sandbox.New(sandbox.Config{APIKey: "sk_test_x", WebhookURL: "http://127.0.0.1:1/none", WebhookSecret: "whsec_test"})
	defer sb.Close()
	sb.Fake.PauseDelivery()
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, body url.Values, header map[string]string) int {
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusSeeOther, post("/_sandbox/customers", url.Values{"email": {"v@example.com"}, "name": {"Victim"}}, nil))
	id := sb.Fake.Customers()[0].ID

	for _, h := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
	} {
		require.Equal(t, http.StatusForbidden, post("/_sandbox/customers/"+id, url.Values{"email": {"attacker@evil.example"}}, h), "%v", h)
		require.Equal(t, http.StatusForbidden, post("/_sandbox/customers", url.Values{"email": {"x@evil.example"}, "name": {"X"}}, h), "%v", h)
		require.Equal(t, http.StatusForbidden, post("/_sandbox/customers/"+id+"/delete", nil, h), "%v", h)
	}
	c, _ := sb.Fake.Customer(id)
	require.Equal(t, "v@example.com", c.Email)
	require.False(t, c.Deleted)
	require.Len(t, sb.Fake.Customers(), 1)

	// The dashboard's own form (same origin) still edits.
	require.Equal(t, http.StatusSeeOther, post("/_sandbox/customers/"+id, url.Values{"name": {"Edited"}},
		map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}))
	c, _ = sb.Fake.Customer(id)
	require.Equal(t, "Edited", c.Name)
}

// TestHistoryIsBounded: under load the sandbox forgets its oldest requests,
// events, idempotency keys and delivery attempts instead of keeping them all
// (17 → 385 MB in five minutes of load), while its counters keep counting.
func TestHistoryIsBounded(t *testing.T) {
	t.Parallel()
	const bound = 5000 // sandbox.HistoryLimit
	sb := sandbox.New(sandbox.Config{APIKey: "sk_test_x"})
	defer sb.Close()
	h := sb.Handler()
	n := bound + bound/2
	for i := range n {
		req := httptest.NewRequest("POST", "/v1/customers", strings.NewReader(url.Values{"email": {fmt.Sprintf("u%d@example.com", i)}}.Encode()))
		req.Header.Set("Authorization", "Bearer sk_test_x")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("key-%d", i))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, 200, rec.Code, rec.Body.String())
	}
	require.LessOrEqual(t, len(sb.Fake.Requests()), bound)
	require.LessOrEqual(t, len(sb.Fake.Events()), bound)
	require.LessOrEqual(t, sb.Fake.IdempotencyKeys(), bound)
	require.Equal(t, n, sb.Fake.Stats().Requests)
	require.Equal(t, n, sb.Fake.Stats().Events)
	require.Len(t, sb.Fake.Customers(), n, "customers are data, not history: all kept")

	// The newest are the ones kept, and /_sandbox/stats still counts all.
	reqs := sb.Fake.Requests()
	require.Equal(t, fmt.Sprintf("key-%d", n-1), reqs[len(reqs)-1].IdempotencyKey)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_sandbox/stats", nil))
	var stats struct {
		Requests struct{ Total, Writes int }
		Events   int
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &stats))
	require.Equal(t, n, stats.Requests.Total)
	require.Equal(t, n, stats.Requests.Writes)
	require.Equal(t, n, stats.Events)
}

// TestFaultsAfterTheWriteAndUnsyncedFields: the control API can make the
// next write answer 500 after it took effect (saved under its key, as
// Stripe does), forget the keys, and edit fields Tandem does not sync.
func TestFaultsAfterTheWriteAndUnsyncedFields(t *testing.T) {
	t.Parallel()
	sb := sandbox.New(sandbox.Config{APIKey: "sk_test_x", WebhookURL: "http://127.0.0.1:1", WebhookSecret: "whsec_test"})
	defer sb.Close()
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	post := func(path, body string, key ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if strings.HasPrefix(path, "/v1/") {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("sk_test_x", "")
			req.Header.Set("Idempotency-Key", key[0])
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, _ := post("/_sandbox/faults", `{"fail_after_write":-1}`)
	require.Equal(t, 400, code)
	code, _ = post("/_sandbox/faults", `{"fail_after_write":1}`)
	require.Equal(t, 200, code)
	code, _ = post("/v1/customers", "email=a%40example.com", "k1")
	require.Equal(t, 500, code)
	require.Len(t, sb.Fake.Customers(), 1, "the write took effect")
	code, _ = post("/v1/customers", "email=a%40example.com", "k1")
	require.Equal(t, 500, code, "the 500 is replayed under its key")
	code, _ = post("/_sandbox/faults", `{"expire_idempotency_keys":true}`)
	require.Equal(t, 200, code)
	code, _ = post("/v1/customers", "email=a%40example.com", "k1")
	require.Equal(t, 200, code, "a forgotten key runs again")
	require.Len(t, sb.Fake.Customers(), 2)

	id := sb.Fake.Customers()[0].ID
	code, body := post("/_sandbox/customers/"+id, `{"description":"VIP","metadata":{"tier":"gold"}}`)
	require.Equal(t, 200, code, body)
	c, ok := sb.Fake.Customer(id)
	require.True(t, ok)
	require.Equal(t, "VIP", c.Description)
	require.Equal(t, "gold", c.Metadata["tier"])
}
