package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/gofiber/fiber/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/instrument"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/worker"
)

// run reads the configuration, builds the provider, the store and the broker
// connection, consumes until ctx is cancelled, then closes in reverse order.
func run(ctx context.Context, args, environ []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	providerFlag := fs.String("provider", "", "the provider this worker serves (or TANDEM_PROVIDER)")
	migrate := fs.Bool("migrate", true, "apply pending schema migrations at start")
	if err := fs.Parse(args); err != nil {
		return err
	}
	providers := factory.New()
	cfg, err := config.Load(environ, providers.Names())
	if err != nil {
		return err
	}
	name, err := cfg.RequireProvider(*providerFlag, providers.Names())
	if err != nil {
		return err
	}
	// The adapter and the worker name their provider in their own lines.
	base := ops.NewLogger(stdout, cfg.LogLevel).With("process", "worker")
	log := base.With("provider", name)
	reg := ops.NewRegistry()

	p, err := providers.Build(name, cfg, factory.Deps{Logger: base, Registerer: reg})
	if err != nil {
		return err
	}
	finder, _ := p.(integrations.Finder) // decorators hide them
	matcher, _ := p.(integrations.Matcher)
	measure, err := instrument.Metrics(reg)
	if err != nil {
		return err
	}
	p = integrations.Wrap(p, measure)

	if *migrate {
		if err := store.MigrateWith(ctx, cfg.MySQLDSN, store.MigrateOptions{Logger: log}); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, cfg.MySQLDSN, store.Options{MaxOpenConns: cfg.Worker.Concurrency + 4, History: store.HistoryOptions{Off: !cfg.History}})
	if err != nil {
		return err
	}
	defer st.Close()

	conn, err := broker.Dial(ctx, cfg.AMQPURL, log, broker.Options{
		Name:       "worker-" + name,
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{name}, cfg.RetryTiers...) },
		Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := broker.NewPublisher(conn, broker.PublisherOptions{RetryTiers: cfg.RetryTiers})
	defer pub.Close()

	w, err := worker.New(p, st, conn, pub, worker.Config{
		Prefetch: cfg.Worker.Prefetch, Concurrency: cfg.Worker.Concurrency,
		MaxAttempts: cfg.MaxAttempts, Drain: cfg.Shutdown, Finder: finder,
		LeaseTTL: cfg.Worker.Lease, Matcher: matcher, LinkByEmail: cfg.LinkByEmail,
	}, base, reg)
	if err != nil {
		return err
	}

	// Health, readiness and metrics only, hardened like the api's.
	app := ops.NewApp(fiber.Config{AppName: "tandem-worker", DisableStartupMessage: true},
		ops.LimitsFor(cfg.HTTP.MaxConns, cfg.HTTP.MaxConnsPerIP), log, ops.NewHTTPMetrics(reg))
	ops.Mount(app, reg, ops.Check{Name: "mysql", Fn: st.Ping}, ops.Check{Name: "rabbitmq", Fn: conn.Healthy})
	if cfg.Pprof {
		ops.MountPprof(app)
	}

	// Bind before consuming: a worker without its health, readiness and
	// metrics endpoints must not run (a probe would reach whatever holds
	// the port), so a taken address stops it as it stops the api.
	ln, err := net.Listen("tcp", cfg.WorkerAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.WorkerAddr, err)
	}
	// If serving stops on its own, stop consuming too, and the other way
	// round.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	served := make(chan error, 1)
	go func() {
		err := ops.ServeListener(workCtx, app, ln, cfg.Shutdown)
		if workCtx.Err() == nil {
			log.Error("health and metrics server stopped; stopping the worker", "error", fmt.Sprint(err))
			stopWork()
		}
		served <- err
	}()
	log.Info("started", "addr", ln.Addr().String(), "queue", broker.WorkQueue(name))
	runErr := w.Run(workCtx)
	stopWork()
	serveErr := <-served
	log.Info("stopped")
	return errors.Join(runErr, serveErr)
}
