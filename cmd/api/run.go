package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
)

// run reads the configuration, migrates, builds the store, the broker
// connection, the relay and the HTTP app, serves until ctx is cancelled,
// then shuts down in reverse order.
func run(ctx context.Context, args, environ []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	migrate := fs.Bool("migrate", true, "apply pending schema migrations at start")
	migrateOnly := fs.Bool("migrate-only", false, "apply pending schema migrations and exit (for a deploy job that runs before the new release starts)")
	allowCopy := fs.Bool("migrate-allow-copy", false, "let a migration that copies a large table run, blocking writes to it meanwhile")
	runRelay := fs.Bool("relay", true, "run the outbox relay in this process")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(environ, factory.New().Names())
	if err != nil {
		return err
	}
	log := ops.NewLogger(stdout, cfg.LogLevel).With("process", "api")
	if *migrateOnly {
		// A deploy job: no tokens, no broker, no listening.
		if err := store.MigrateWith(ctx, cfg.MySQLDSN, store.MigrateOptions{Logger: log, AllowCopy: *allowCopy}); err != nil {
			return err
		}
		log.Info("schema migrated")
		return nil
	}
	if err := cfg.RequireAPITokens(); err != nil {
		return err
	}
	reg := ops.NewRegistry()

	if *migrate {
		if err := store.MigrateWith(ctx, cfg.MySQLDSN, store.MigrateOptions{Logger: log, AllowCopy: *allowCopy}); err != nil {
			return err
		}
		log.Info("schema migrated")
	}
	st, err := store.Open(ctx, cfg.MySQLDSN, store.Options{History: store.HistoryOptions{Off: !cfg.History}})
	if err != nil {
		return err
	}
	defer st.Close()

	// The broker may be down: Dial keeps trying in the background and the
	// API keeps taking writes, which wait in the outbox.
	conn, err := broker.Dial(ctx, cfg.AMQPURL, log, broker.Options{
		Name:       "api",
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, cfg.Providers, cfg.RetryTiers...) },
		Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := broker.NewPublisher(conn, broker.PublisherOptions{RetryTiers: cfg.RetryTiers})
	defer pub.Close()

	background, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	relayDone := make(chan error, 1)
	if *runRelay {
		r, err := relay.New(st, pub, relay.Config{BatchSize: cfg.Relay.BatchSize,
			PollInterval: cfg.Relay.PollInterval, Retention: cfg.Relay.Retention}, log, reg)
		if err != nil {
			return err
		}
		st.OnCommit(r.Notify)
		go func() { relayDone <- r.Run(background) }()
	} else {
		relayDone <- nil
	}
	go pruneIdempotencyKeys(background, st, log)
	go pruneHistory(background, st, cfg.HistoryRetention, log)

	app := api.New(st, st, api.Config{Tokens: cfg.APITokens, Providers: cfg.Providers, Limits: httpLimits(cfg.HTTP)}, log, reg,
		ops.Check{Name: "mysql", Fn: st.Ping},
		ops.Check{Name: "rabbitmq", Fn: conn.Healthy, Soft: true})
	if cfg.Pprof {
		ops.MountPprof(app)
	}

	if err := mountConsole(ctx, app, st, conn, pub, cfg, log); err != nil {
		return err
	}

	log.Info("listening", "addr", cfg.APIAddr, "relay", *runRelay)
	serveErr := ops.Serve(ctx, app, cfg.APIAddr, cfg.Shutdown)
	// The HTTP server has drained: no more commits. Let the relay publish
	// what it holds, then stop it.
	stopBackground()
	relayErr := <-relayDone
	log.Info("stopped")
	return errors.Join(serveErr, relayErr)
}

// pruneIdempotencyKeys deletes expired Idempotency-Key records every few
// minutes.
func pruneIdempotencyKeys(ctx context.Context, st *store.Store, log interface {
	Warn(string, ...any)
}) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for {
				n, err := st.PruneIdempotency(ctx, 1000)
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("pruning idempotency keys", "error", err.Error())
					}
					break
				}
				if n < 1000 {
					break
				}
			}
		}
	}
}

// httpLimits are the HTTP server's limits from the configuration.
func httpLimits(c config.HTTPConfig) ops.Limits { return ops.LimitsFor(c.MaxConns, c.MaxConnsPerIP) }
