package sandbox_test

import (
	"context"
	"encoding/json"
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
