// Command sandbox runs the local Stripe sandbox: a stateful stand-in for
// Stripe's API (point STRIPE_API_BASE at it) that delivers signed webhooks to
// Tandem's webhook, with a small dashboard at /_sandbox/ to edit customers.
// `make run` starts it when no STRIPE_SECRET_KEY is set. TANDEM_SANDBOX_HISTORY
// (default sandbox.HistoryLimit) bounds the requests, events, idempotency
// keys and delivery attempts it remembers.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/sandbox"
)

// Defaults match what scripts/run.sh gives the worker and the webhook.
const (
	DefaultAddr          = "127.0.0.1:12111"
	DefaultKey           = "sk_test_sandbox"
	DefaultWebhookSecret = "whsec_sandbox_local_only"
	DefaultWebhookURL    = "http://127.0.0.1:8081/webhook/stripe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-sandbox:", err)
		os.Exit(1)
	}
}

// run serves the sandbox until ctx is cancelled. ready, if set, receives the
// listening address.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer, ready chan<- string) error {
	or := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	log := ops.NewLogger(stdout, "info").With("process", "sandbox")
	// TANDEM_SANDBOX_HISTORY: how many requests, events (GET /v1/events),
	// idempotency keys and delivery attempts are remembered.
	history := sandbox.HistoryLimit
	if v := getenv("TANDEM_SANDBOX_HISTORY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("TANDEM_SANDBOX_HISTORY %q: want a positive number", v)
		}
		history = n
	}
	sb := sandbox.New(sandbox.Config{
		APIKey:        or("STRIPE_SECRET_KEY", DefaultKey),
		WebhookURL:    or("TANDEM_SANDBOX_WEBHOOK_URL", DefaultWebhookURL),
		WebhookSecret: or("STRIPE_WEBHOOK_SECRET", DefaultWebhookSecret),
		Logger:        log,
		Fake: stripefake.Options{MaxRequests: history, MaxEvents: history, MaxIdempotencyKeys: history,
			MaxDeliveryAttempts: history},
	})
	defer sb.Close()
	ln, err := net.Listen("tcp", or("TANDEM_SANDBOX_ADDR", DefaultAddr))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "dashboard", "http://"+ln.Addr().String()+"/_sandbox/")
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}
