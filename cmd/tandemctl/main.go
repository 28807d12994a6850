// Command tandemctl operates a Tandem deployment from a terminal or a script:
// it reads the same configuration as the processes (configs/tandem.yaml, then
// the environment) and talks to the same MySQL and RabbitMQ.
//
//	tandemctl <command> [flags] [args]
//
// Every command prints a human summary (with a progress bar when stderr is a
// terminal) or, with -json, one JSON document on stdout. The exit code is 0
// on success, 1 on an error, 2 on bad usage (an unknown command or flag, a
// missing argument). `tandemctl help` lists the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
