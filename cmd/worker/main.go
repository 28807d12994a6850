// Command worker serves one provider (-provider stripe, or TANDEM_PROVIDER):
// it consumes tandem.sync.<provider> and pushes each change out through the
// adapter the factory builds. It listens on TANDEM_WORKER_ADDR for health
// and metrics only.
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
		fmt.Fprintln(os.Stderr, "tandem-worker:", err)
		os.Exit(1)
	}
}
