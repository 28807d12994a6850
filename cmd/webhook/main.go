// Command webhook receives the providers' webhooks: one route POST
// /webhook/<provider> for each enabled provider that receives them. It
// verifies each delivery, then applies its events to MySQL once, in order and
// without an outbox row, so nothing is published again (see package
// internal/webhook).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-webhook:", err)
		os.Exit(1)
	}
}
