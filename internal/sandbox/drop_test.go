package sandbox_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/sandbox"
)

// TestDeliveriesCanBeDropped: POST /_sandbox/delivery {"drop":1} loses
// every delivery from then on (the events are still listed), {"drop":0}
// delivers again; a share outside 0-1 is refused.
func TestDeliveriesCanBeDropped(t *testing.T) {
	t.Parallel()
	var received atomic.Int32
	rcv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { received.Add(1) }))
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	code, _ := post("/_sandbox/delivery", `{"drop":1.5}`)
	require.Equal(t, 400, code)
	code, _ = post("/_sandbox/delivery", `{"drop":1}`)
	require.Equal(t, 200, code)
	code, body := post("/_sandbox/customers", `{"email":"d@example.com","name":"D"}`)
	require.Equal(t, 200, code, body)
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	require.Zero(t, received.Load())
	require.Equal(t, 1, sb.Fake.DeliveryStats().Dropped)
	require.Len(t, sb.Fake.Events(), 1, "the event is recorded: GET /v1/events lists it")

	code, _ = post("/_sandbox/delivery", `{"drop":0}`)
	require.Equal(t, 200, code)
	code, _ = post("/_sandbox/customers", `{"email":"e@example.com","name":"E"}`)
	require.Equal(t, 200, code)
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	require.EqualValues(t, 1, received.Load())
}
