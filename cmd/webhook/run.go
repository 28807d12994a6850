package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-sync/tandem/internal/catchup"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/webhook"
)

// Pruning of inbound_events: every replica runs it (batches skip the rows
// another replica holds), at start and then every pruneInterval.
const (
	pruneInterval = time.Minute
	pruneBatch    = 500
)

// pruneInbound applies the inbound_events retention r until ctx ends.
func pruneInbound(ctx context.Context, st *store.Store, r store.InboundRetention, log *slog.Logger, reg prometheus.Registerer) {
	pruned := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_inbound_pruned_total",
		Help: "inbound_events rows deleted (what=rows) and payloads dropped (what=payloads) by the retention"}, []string{"what"})
	reg.MustRegister(pruned)
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		rows, payloads, err := st.PruneInbound(ctx, r, pruneBatch)
		pruned.WithLabelValues("rows").Add(float64(rows))
		pruned.WithLabelValues("payloads").Add(float64(payloads))
		if err != nil && ctx.Err() == nil {
			log.Warn("pruning inbound events failed", "error", err.Error(), "deleted", rows, "payloads_dropped", payloads)
		} else if rows+payloads > 0 {
			log.Debug("pruned inbound events", "deleted", rows, "payloads_dropped", payloads)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newCatchup returns the catch-up of the receivers that keep a change log,
// or nil when TANDEM_CATCHUP_INTERVAL is 0 or none does.
func newCatchup(cfg *config.Config, receivers map[string]integrations.WebhookReceiver, st *store.Store, log *slog.Logger, reg prometheus.Registerer) *catchup.Runner {
	if cfg.CatchupInterval <= 0 {
		log.Info("catch-up is off (TANDEM_CATCHUP_INTERVAL=0): changes whose webhook is lost are not applied")
		return nil
	}
	sources, without := catchup.Sources(receivers)
	if len(without) > 0 {
		log.Info("providers without a change log are not caught up", "providers", without)
	}
	if len(sources) == 0 {
		return nil
	}
	return catchup.New(st, sources, catchup.Options{Interval: cfg.CatchupInterval, NoInboundCreate: !cfg.InboundCreate,
		Logger: log, Registerer: reg})
}

// run reads the configuration, builds the enabled providers and keeps those
// that receive webhooks (a missing webhook secret is an error naming its
// variable), opens the store, serves until ctx is cancelled, then shuts down
// in reverse order. It does not migrate: the api does. It prunes
// inbound_events (TANDEM_INBOUND_RETENTION, TANDEM_INBOUND_PAYLOAD_RETENTION)
// and runs the catch-up (TANDEM_CATCHUP_INTERVAL) while it serves.
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

	st, err := store.Open(ctx, cfg.MySQLDSN, store.Options{History: store.HistoryOptions{Off: !cfg.History}})
	if err != nil {
		return err
	}
	defer st.Close()
	// inbound_events retention, while the process serves.
	background, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	pruned := make(chan struct{})
	go func() {
		defer close(pruned)
		pruneInbound(background, st, store.InboundRetention{Rows: cfg.Inbound.Retention, Payloads: cfg.Inbound.PayloadRetention}, log, reg)
	}()
	defer func() { stopBackground(); <-pruned }() // before st.Close

	checks := []ops.Check{{Name: "mysql", Fn: st.Ping}}
	if runner := newCatchup(cfg, receivers, st, log, reg); runner != nil {
		// The providers' own change logs, every TANDEM_CATCHUP_INTERVAL, one
		// replica at a time (package catchup).
		checks = append(checks, ops.Check{Name: "catchup", Fn: runner.Check, Soft: true})
		caught := make(chan struct{})
		go func() {
			defer close(caught)
			runner.Run(background)
		}()
		defer func() { stopBackground(); <-caught }() // before st.Close
	}

	limits := ops.LimitsFor(cfg.HTTP.MaxConns, cfg.HTTP.MaxConnsPerIP)
	app := webhook.NewWith(webhook.Options{Limits: limits, NoInboundCreate: !cfg.InboundCreate}, receivers, st, log, reg,
		checks...)
	if cfg.Pprof {
		ops.MountPprof(app)
	}
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
