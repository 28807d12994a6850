package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/testutil"
)

// testToken is long enough for config.MinAPITokenLen.
const testToken = "run-test-token-0123456789"

// freeAddr is testutil.FreeAddr.
func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

func TestRunRefusesMissingTokens(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), nil, []string{"TANDEM_CONFIG=", "TANDEM_MYSQL_DSN=" + testutil.NewDatabase(t)}, &testutil.SyncBuffer{})
	require.EqualError(t, err, "config: TANDEM_API_TOKENS is required (comma-separated bearer tokens)")
	err = run(context.Background(), nil, []string{"TANDEM_CONFIG=", "TANDEM_API_TOKENS=dev-token"}, &testutil.SyncBuffer{})
	require.ErrorContains(t, err, "TANDEM_API_TOKENS: token 1 of 1 is 9 characters long: want at least 16 characters")
	// The shipped file sets no token either.
	err = run(context.Background(), nil, []string{"TANDEM_CONFIG=../../configs/tandem.yaml"}, &testutil.SyncBuffer{})
	require.EqualError(t, err, "config: TANDEM_API_TOKENS is required (comma-separated bearer tokens)")
	err = run(context.Background(), nil, []string{"TANDEM_CONFIG=", "TANDEM_API_TOKENS=x", "TANDEM_MAX_ATTEMPTS=-1"}, &testutil.SyncBuffer{})
	require.ErrorContains(t, err, "TANDEM_MAX_ATTEMPTS")
}

// TestRunServesAndShutsDownGracefully starts two api processes' run at once
// on one fresh database (both migrate), serves a request, and stops on
// cancellation with a nil error while a request is in flight.
func TestRunServesAndShutsDownGracefully(t *testing.T) {
	t.Parallel()
	dsn := testutil.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testutil.SyncBuffer
	addrs := []string{freeAddr(t), freeAddr(t)}
	errs := make(chan error, 2)
	for i, addr := range addrs {
		env := []string{"TANDEM_CONFIG=", "TANDEM_API_TOKENS=" + testToken, "TANDEM_MYSQL_DSN=" + dsn, "TANDEM_API_ADDR=" + addr,
			"TANDEM_AMQP_URL=" + testutil.NewVhost(t), "TANDEM_SHUTDOWN_TIMEOUT=10s"}
		if i == 1 {
			env = append(env, "TANDEM_PPROF=true")
		}
		go func() { errs <- run(ctx, nil, env, &logs) }()
	}
	for _, addr := range addrs {
		require.Eventually(t, func() bool {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}, 30*time.Second, 20*time.Millisecond, "api at %s never became ready; logs:\n%s", addr, &logs)
	}
	req, _ := http.NewRequest("POST", "http://"+addrs[0]+"/v1/users", strings.NewReader(`{"email":"run@example.com","name":"Run"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 201, resp.StatusCode)

	// Profiles: off by default (404), served with TANDEM_PPROF=true.
	resp, err = http.Get("http://" + addrs[0] + "/debug/pprof/profile?seconds=1")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 404, resp.StatusCode, "pprof is off unless TANDEM_PPROF=true")
	resp, err = http.Get("http://" + addrs[1] + "/debug/pprof/profile?seconds=1")
	require.NoError(t, err)
	prof, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	require.True(t, bytes.HasPrefix(prof, []byte{0x1f, 0x8b}), "a CPU profile is gzipped protobuf")

	cancel()
	for range addrs {
		select {
		case err := <-errs:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("run did not return after cancellation")
		}
	}
	out := logs.String()
	require.Contains(t, out, `"msg":"stopped"`)
	require.NotContains(t, out, testToken, "a token leaked into the logs")
	require.Contains(t, out, `"request_id"`)
}

// TestMigrateOnly: -migrate-only applies the migrations and exits, for a
// deploy job run before the new release starts; it needs neither tokens
// nor RabbitMQ, and serves nothing.
func TestMigrateOnly(t *testing.T) {
	t.Parallel()
	dsn := testutil.NewDatabase(t)
	var logs testutil.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, []string{"-migrate-only"}, []string{"TANDEM_CONFIG=", "TANDEM_MYSQL_DSN=" + dsn,
		"TANDEM_AMQP_URL=amqp://guest:guest@127.0.0.1:1/", "TANDEM_API_ADDR=" + freeAddr(t)}, &logs)
	require.NoError(t, err, "%s", &logs)
	require.Contains(t, logs.String(), `"msg":"schema migrated"`)
	require.NotContains(t, logs.String(), `"msg":"listening"`)
	require.EqualValues(t, 0, testutil.QueryInt(t, dsn, "SELECT dirty FROM schema_migrations"))
	require.GreaterOrEqual(t, testutil.QueryInt(t, dsn, "SELECT version FROM schema_migrations"), int64(4))
}
