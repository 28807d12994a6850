// Command api serves Tandem's REST API on users, writes every change with its
// outbox row in one MySQL transaction, and runs the outbox relay that
// publishes those rows to RabbitMQ.
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
		fmt.Fprintln(os.Stderr, "tandem-api:", err)
		os.Exit(1)
	}
}
