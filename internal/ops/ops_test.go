package ops_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/ops"
)

func TestServeFinishesInFlightRequestsOnShutdown(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	reg := ops.NewRegistry()
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(ops.Middleware(log, ops.NewHTTPMetrics(reg)))
	entered := make(chan struct{})
	release := make(chan struct{})
	app.Get("/slow", func(c *fiber.Ctx) error {
		close(entered)
		<-release
		return c.SendString("done")
	})
	ops.Mount(app, reg, ops.Check{Name: "db", Fn: func(context.Context) error { return errors.New("down") }})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ops.Serve(ctx, app, addr, 10*time.Second) }()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 503, resp.StatusCode)
	require.JSONEq(t, `{"db":"unavailable"}`, string(body))

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	cancel() // SIGTERM arrives while /slow is in flight
	// Shutdown has begun once new connections are refused; only then
	// let the in-flight request finish: it must still get its answer.
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 5*time.Millisecond)
	close(release)
	require.Equal(t, "done", <-got)
	require.NoError(t, <-served)
	require.True(t, strings.Contains(logs.String(), `"route":"/slow"`), logs.String())
}

// TestReadyzKeepsErrorDetailsInTheLogs: /readyz needs no token, so it says
// which dependency is down and nothing more; the error itself (addresses,
// user names, driver messages) goes to the log with the request id.
func TestReadyzKeepsErrorDetailsInTheLogs(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(ops.Middleware(log, nil))
	detail := "dial tcp 10.1.2.3:3306: Access denied for user 'tandem_prod'@'10.1.2.4'"
	ops.Mount(app, ops.NewRegistry(),
		ops.Check{Name: "mysql", Fn: func(context.Context) error { return errors.New(detail) }},
		ops.Check{Name: "rabbitmq", Fn: func(context.Context) error { return nil }})
	resp, err := app.Test(httptestRequest("/readyz"))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, 503, resp.StatusCode)
	require.JSONEq(t, `{"mysql":"unavailable","rabbitmq":"ok"}`, string(body))
	require.Contains(t, logs.String(), "Access denied for user 'tandem_prod'")
	require.Contains(t, logs.String(), `"check":"mysql"`)
}

func httptestRequest(path string) *http.Request {
	req, _ := http.NewRequest("GET", path, nil)
	return req
}
