package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"

	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/webhook"
)

// run reads the configuration, builds the enabled providers and keeps those
// that receive webhooks (a missing webhook secret is an error naming its
// variable), opens the store, serves until ctx is cancelled, then shuts down
// in reverse order. It does not migrate: the api does.
func run(ctx context.Context, args, environ []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	registry := factory.New()
	cfg, err := config.Load(environ, registry.Names())
	if err != nil {
		return err
	}
	log := ops.NewLogger(stdout, cfg.LogLevel).With("process", "webhook")
	reg := ops.NewRegistry()

	var providers []integrations.Provider
	for _, name := range cfg.Providers {
		p, err := registry.Build(name, cfg, factory.Deps{Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		providers = append(providers, p)
	}
	receivers, skipped, err := webhook.Receivers(providers...)
	if err != nil {
		return err
	}
	if len(skipped) > 0 {
		log.Info("providers without webhooks get no route", "providers", skipped)
	}
	if len(receivers) == 0 {
		return errors.New("config: TANDEM_PROVIDERS (" + strings.Join(cfg.Providers, ",") + ") names no provider that receives webhooks")
	}

	st, err := store.Open(ctx, cfg.MySQLDSN, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	limits := ops.Limits{MaxConns: cfg.HTTP.MaxConns, MaxConnsPerIP: cfg.HTTP.MaxConnsPerIP}
	if cfg.HTTP.MaxConnsPerIP == 0 {
		limits.MaxConnsPerIP = -1 // none
	}
	app := webhook.NewWith(webhook.Options{Limits: limits, NoInboundCreate: !cfg.InboundCreate}, receivers, st, log, reg,
		ops.Check{Name: "mysql", Fn: st.Ping})
	routes := make([]string, 0, len(receivers))
	for name := range receivers {
		routes = append(routes, "/webhook/"+name)
	}
	log.Info("listening", "addr", cfg.WebhookAddr, "routes", routes)
	if err := ops.Serve(ctx, app, cfg.WebhookAddr, cfg.Shutdown); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
