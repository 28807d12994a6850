package sandbox_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/sandbox"
)

// Silent creates (one, or an array), edits and deletes change the customers
// and send nothing; a dashboard change after them is the only delivery.
func TestSilentChangesSendNoWebhook(t *testing.T) {
	t.Parallel()
	var received atomic.Int64
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

	code, body := post("/_sandbox/customers", `[
		{"email":"old1@example.com","name":"Old 1","silent":true,"created":1500000000},
		{"email":"old2@example.com","name":"Old 2","silent":true,"metadata":{"tandem_user_id":"u2"}}]`)
	require.Equal(t, 200, code, body)
	var made []struct {
		ID       string            `json:"id"`
		Created  int64             `json:"created"`
		Metadata map[string]string `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &made))
	require.Len(t, made, 2)
	require.Equal(t, int64(1500000000), made[0].Created)
	require.Equal(t, "u2", made[1].Metadata["tandem_user_id"])

	code, body = post("/_sandbox/customers/"+made[0].ID, `{"name":"Drifted","silent":true}`)
	require.Equal(t, 200, code, body)
	code, body = post("/_sandbox/customers/"+made[1].ID+"/delete?silent=true", ``)
	require.Equal(t, 200, code, body)
	code, body = post("/_sandbox/customers", `{"email":"one@example.com","name":"One","silent":true}`)
	require.Equal(t, 200, code, body)
	code, body = post("/_sandbox/customers", `[{"email":"ok@example.com","silent":true},{"email":"not an email","silent":true}]`)
	require.Equal(t, 400, code)
	require.Contains(t, body, "customer 2 of 2")

	cs := sb.Fake.Customers()
	require.Len(t, cs, 4)
	require.Equal(t, "Drifted", cs[0].Name)
	require.True(t, cs[1].Deleted)
	require.Empty(t, sb.Fake.Events())

	code, body = post("/_sandbox/customers", `{"email":"loud@example.com","name":"Loud"}`)
	require.Equal(t, 200, code, body)
	ctx := t.Context()
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	require.Len(t, sb.Fake.Events(), 1)
	require.Equal(t, int64(1), received.Load())
}
