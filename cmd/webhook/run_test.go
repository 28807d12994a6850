package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// freeAddr is testutil.FreeAddr.
func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

func TestRunRefusesMissingSecrets(t *testing.T) {
	t.Parallel()
	base := []string{"TANDEM_CONFIG=", "TANDEM_PROVIDERS=stripe", "TANDEM_MYSQL_DSN=root@tcp(127.0.0.1:1)/nowhere"}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "building provider stripe: config: STRIPE_SECRET_KEY is required"},
		{[]string{"STRIPE_SECRET_KEY=sk_test_1"}, "config: STRIPE_WEBHOOK_SECRET is required (the signing secret of the Stripe webhook endpoint, whsec_…)"},
		{[]string{"STRIPE_SECRET_KEY=sk_test_1", "STRIPE_WEBHOOK_SECRET=whsec_1", "STRIPE_ACCEPT_API_VERSION_MISMATCH=maybe"},
			`building provider stripe: config: STRIPE_ACCEPT_API_VERSION_MISMATCH "maybe": want true or false`},
		{[]string{"TANDEM_PROVIDERS=nope"}, `unknown provider "nope"`},
	} {
		err := run(context.Background(), nil, append(append([]string{}, base...), tc.env...), &testutil.SyncBuffer{})
		require.ErrorContains(t, err, tc.want)
		require.True(t, strings.HasPrefix(err.Error(), tc.want), "%v", err)
		require.NotContains(t, err.Error(), "\n", "one line")
	}
}

// TestRunServesAndShutsDownGracefully starts the webhook on a migrated
// database, applies a signed event, prunes inbound events past the
// retention, and stops on cancellation with a nil error.
func TestRunServesAndShutsDownGracefully(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	testutil.Exec(t, dsn, `INSERT INTO inbound_events (provider, event_id, event_type, outcome, payload, received_at) VALUES
		('stripe', 'evt_old', 'customer.updated', 'echo', NULL, UTC_TIMESTAMP(6) - INTERVAL 97 HOUR),
		('stripe', 'evt_conflict', 'customer.updated', 'conflict', 'raw', UTC_TIMESTAMP(6) - INTERVAL 73 HOUR),
		('stripe', 'evt_recent', 'customer.updated', 'conflict', 'raw', UTC_TIMESTAMP(6) - INTERVAL 1 HOUR)`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testutil.SyncBuffer
	addr := freeAddr(t)
	env := []string{"TANDEM_CONFIG=", "TANDEM_MYSQL_DSN=" + dsn, "TANDEM_WEBHOOK_ADDR=" + addr, "TANDEM_PROVIDERS=stripe",
		"STRIPE_SECRET_KEY=sk_test_run", "STRIPE_WEBHOOK_SECRET=whsec_run", "STRIPE_API_BASE=http://127.0.0.1:1",
		"TANDEM_SHUTDOWN_TIMEOUT=10s"}
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, nil, env, &logs) }()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 30*time.Second, 20*time.Millisecond, "webhook never became ready; logs:\n%s", &logs)

	payload, err := json.Marshal(map[string]any{
		"id": "evt_run_1", "object": "event", "api_version": stripego.APIVersion, "created": time.Now().Unix(),
		"type": "customer.created", "request": map[string]any{"id": nil, "idempotency_key": nil},
		"data": map[string]any{"object": map[string]any{"id": "cus_run", "object": "customer", "email": "run@example.com",
			"name": "Run", "metadata": map[string]string{}}},
	})
	require.NoError(t, err)
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: "whsec_run"})
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/webhook/stripe", bytes.NewReader(payload))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	users, _, err := st.ListUsers(context.Background(), store.ListQuery{Email: "run@example.com", Limit: 1})
	require.NoError(t, err)
	require.Len(t, users, 1)
	// Defaults: rows kept 96 h, payloads 72 h.
	require.Eventually(t, func() bool {
		return testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events WHERE event_id = 'evt_old' OR payload IS NOT NULL AND event_id = 'evt_conflict'") == 0
	}, 30*time.Second, 20*time.Millisecond, "old inbound events were not pruned; logs:\n%s", &logs)
	require.EqualValues(t, 3, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events"), "evt_run_1, evt_conflict, evt_recent")
	require.EqualValues(t, 1, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events WHERE payload IS NOT NULL"))

	cancel()
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	out := logs.String()
	require.Contains(t, out, `"msg":"stopped"`)
	require.Contains(t, out, `"/webhook/stripe"`)
	require.False(t, strings.Contains(out, "whsec_run") || strings.Contains(out, "sk_test_run"), "a secret leaked into the logs")
}
