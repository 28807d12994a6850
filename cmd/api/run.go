package main

import (
	"context"
	"flag"
	"io"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
)

// run reads the configuration, migrates, builds the store and the HTTP app,
// serves until ctx is cancelled, then shuts down in reverse order.
func run(ctx context.Context, args, environ []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	migrate := fs.Bool("migrate", true, "apply pending schema migrations at start")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(environ, factory.New().Names())
	if err != nil {
		return err
	}
	if err := cfg.RequireAPITokens(); err != nil {
		return err
	}
	log := ops.NewLogger(stdout, cfg.LogLevel).With("process", "api")

	if *migrate {
		if err := store.Migrate(ctx, cfg.MySQLDSN); err != nil {
			return err
		}
		log.Info("schema migrated")
	}
	st, err := store.Open(ctx, cfg.MySQLDSN, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	reg := ops.NewRegistry()
	app := api.New(st, st, api.Config{Tokens: cfg.APITokens, Providers: cfg.Providers}, log, reg,
		ops.Check{Name: "mysql", Fn: st.Ping})

	log.Info("listening", "addr", cfg.APIAddr)
	if err := ops.Serve(ctx, app, cfg.APIAddr, cfg.Shutdown); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
