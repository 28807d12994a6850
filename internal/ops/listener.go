package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
)

// ServeListener is Serve on a listener the caller bound already: a process
// that must not start work without its health, readiness and metrics
// endpoints (the worker) binds first, fails on a taken address, and only
// then starts consuming.
func ServeListener(ctx context.Context, app *fiber.App, ln net.Listener, timeout time.Duration) error {
	addr := ln.Addr().String()
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(Listener(app, ln)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", addr, err)
	case <-ctx.Done():
	}
	if err := app.ShutdownWithTimeout(timeout); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutting down %s: %w", addr, err)
	}
	return <-errc
}
