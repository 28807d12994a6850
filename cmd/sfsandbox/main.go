// Command sfsandbox runs the local Salesforce sandbox: a stateful stand-in
// for a Salesforce org (OAuth client credentials, the Contact REST API, the
// query Tandem's catch-up sends) that sends Outbound Messages to Tandem's
// webhook, with a small UI at /_sandbox/ to edit, merge and delete contacts.
// `make run` starts it when TANDEM_PROVIDERS names salesforce and no
// SALESFORCE_INSTANCE_URL is set. It prints the SALESFORCE_* settings that
// point Tandem at it.
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
	"syscall"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/sandbox/sfsandbox"
)

// Defaults match what scripts/run.sh gives the worker and the webhook.
const (
	DefaultAddr          = "127.0.0.1:12112"
	DefaultWebhookSecret = "sf-sandbox-local-only"
	DefaultWebhookURL    = "http://127.0.0.1:8081/webhook/salesforce"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-sfsandbox:", err)
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
	log := ops.NewLogger(stdout, "info").With("process", "sfsandbox")
	sb := sfsandbox.New(sfsandbox.Config{
		OutboundURL:   or("TANDEM_SF_SANDBOX_WEBHOOK_URL", DefaultWebhookURL),
		OutboundToken: or("SALESFORCE_WEBHOOK_SECRET", DefaultWebhookSecret),
		Fake:          salesforcefake.Options{Logger: log},
	})
	defer sb.Close()
	ln, err := net.Listen("tcp", or("TANDEM_SF_SANDBOX_ADDR", DefaultAddr))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	log.Info("listening", "addr", ln.Addr().String(), "ui", base+"/_sandbox/",
		"SALESFORCE_INSTANCE_URL", base, "SALESFORCE_TOKEN_URL", base+"/services/oauth2/token",
		"SALESFORCE_CLIENT_ID", salesforcefake.DefaultClientID, "SALESFORCE_ORG_ID", salesforcefake.DefaultOrgID,
		"SALESFORCE_INTEGRATION_USER_ID", salesforcefake.DefaultIntegrationUserID,
		"SALESFORCE_METADATA_FIELD", salesforcefake.DefaultCustomField)
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
