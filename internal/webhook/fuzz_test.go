package webhook_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

// FuzzWebhook posts arbitrary bodies, validly signed, to the Stripe route
// over a real database with a linked user: the handler must never panic and
// never answer 5xx (a verified delivery it cannot use is a 4xx or a recorded
// outcome; only a database or Stripe outage may be a 5xx).
//
//	go test -run '^$' -fuzz FuzzWebhook -fuzztime 30s ./internal/webhook/
func FuzzWebhook(f *testing.F) {
	st, _ := testutil.NewStore(f)
	fake := stripefake.New(stripefake.Options{})
	f.Cleanup(fake.Close)
	apiURL, err := fake.Listen("127.0.0.1:0")
	require.NoError(f, err)
	adapter, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: apiURL, RateLimit: 10_000,
		WebhookSecret: secret}, stripe.Options{})
	require.NoError(f, err)
	app := tandemwebhook.New(map[string]integrations.WebhookReceiver{"stripe": adapter}, st,
		slog.New(slog.NewJSONHandler(io.Discard, nil)), ops.NewRegistry())

	// A user linked to a customer the fake knows, so events reach every path.
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "fuzz@example.com", Name: "Fuzz"}, nil)
	require.NoError(f, err)
	cust, err := fake.DashboardCreate(stripefake.Customer{Email: "fuzz@example.com", Name: "Fuzz"})
	require.NoError(f, err)
	require.NoError(f, st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		v, h := int64(1), "0"
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &cust.ID, SyncedVersion: &v, PushedHash: &h}, nil
	}))
	other, err := st.CreateUser(ctx, store.NewUser{Email: "other@example.com", Name: "Other"}, nil)
	require.NoError(f, err)

	now := time.Now()
	for _, seed := range [][]byte{
		event(f, "evt_s1", "customer.updated", now, "", customer(cust.ID, "fuzz2@example.com", "Fuzz 2", map[string]string{"k": "v"})),
		event(f, "evt_s2", "customer.updated", now, "", customer(cust.ID, "other@example.com", "Clash", nil)),
		event(f, "evt_s3", "customer.updated", now, "tandem-stripe-update-x-v2", customer(cust.ID, "e@example.com", "Echo", nil)),
		event(f, "evt_s4", "customer.created", now, "", customer("cus_new", "new@example.com", "New", nil)),
		event(f, "evt_s5", "customer.created", now, "", customer("cus_tag", "tag@example.com", "Tag", map[string]string{"tandem_user_id": other.ID})),
		event(f, "evt_s6", "customer.updated", now, "", customer(cust.ID, "", "No email", nil)),
		event(f, "evt_s7", "customer.updated", now, "", customer(cust.ID, "long@example.com", strings.Repeat("n", 300), nil)),
		event(f, "evt_s8", "customer.deleted", now, "", customer("cus_unknown", "x@example.com", "X", nil)),
		event(f, "evt_s9", "invoice.paid", now, "", map[string]any{"id": "in_1"}),
		event(f, "évt", "customer.updated", now, "", customer("cus ünïcode", "u@example.com", "U", nil)),
		event(f, "evt_s10", "customer.updated", time.Unix(1, 0), "", customer(cust.ID, "old@example.com", "Old", nil)),
		event(f, "evt_s11", "customer.deleted", now, "", customer(cust.ID, "fuzz@example.com", "Fuzz", nil)),
		[]byte(`{"id":"evt_x","object":"event","api_version":"2023-10-16","created":1700000000,"type":"customer.updated","data":null}`),
		[]byte(`{"id":"evt_y","object":"event","api_version":"2023-10-16","created":1700000000,"type":"customer.updated","data":{"object":"cus_only_id"}}`),
		[]byte(`{"id":"evt_z","object":"event","api_version":"2023-10-16","created":-5,"type":"customer.updated","data":{"object":{"id":"c","metadata":{"a":1}}}}`),
		[]byte(`{"id":"evt_r","object":"event","api_version":"2023-10-16","created":1,"type":"customer.updated","request":"req_old","data":{"object":{"id":"c"}}}`),
		[]byte(`[]`),
		[]byte(`null`),
		[]byte(`{"id":`),
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/webhook/stripe", bytes.NewReader(body))
		for k, v := range signedHeader(body, secret, time.Now()) {
			req.Header[k] = v
		}
		resp, err := app.Test(req, -1)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Contains(t, []int{200, 400, 413}, resp.StatusCode, "body %q → %s", body, b)
	})
}
