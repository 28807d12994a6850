package main

import (
	"context"
	"log/slog"

	"github.com/gofiber/fiber/v2"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/console"
	"github.com/tandem-sync/tandem/internal/pipeline"
	"github.com/tandem-sync/tandem/internal/store"
)

// mountConsole serves the operator console at /console/ on app; its live
// view ends with ctx.
func mountConsole(ctx context.Context, app *fiber.App, st *store.Store, conn *broker.Conn, pub *broker.Publisher,
	cfg *config.Config, log *slog.Logger) error {
	c, err := console.New(ctx, console.Config{
		Tokens:    cfg.APITokens,
		Providers: cfg.Providers,
		Users:     st,
		Pipeline:  pipeline.Source{Store: st, Broker: conn, Providers: cfg.Providers, Tiers: cfg.RetryTiers},
		Replay: func(ctx context.Context, provider string) (int, error) {
			return broker.DeadLetters{Conn: conn, Pub: pub, Provider: provider}.Replay(ctx, "")
		},
		Log: log,
	})
	if err != nil {
		return err
	}
	c.Mount(app)
	return nil
}
