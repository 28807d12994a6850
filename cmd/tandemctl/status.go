package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tandem-sync/tandem/internal/pipeline"
	"github.com/tandem-sync/tandem/internal/store"
)

func statusCommand() command {
	return command{
		name:    "status",
		args:    "",
		summary: "the pipeline at a glance: outbox backlog and age, queues, consumers, retries and dead letters, sync rate and users by sync status per provider, users needing attention",
		setup: func(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
			return func(ctx context.Context, e *env) error {
				if len(e.args) > 0 {
					return usagef("status takes no arguments")
				}
				st, err := e.store(ctx)
				if err != nil {
					return err
				}
				src := pipeline.Source{Store: st, Providers: e.cfg.Providers, Tiers: e.cfg.RetryTiers}
				conn, _, brokerErr := e.broker(ctx)
				if brokerErr == nil {
					src.Broker = conn
				}
				s, err := src.Snapshot(ctx)
				if err != nil {
					return err
				}
				if brokerErr != nil {
					s.BrokerError = brokerErr.Error()
				}
				if err := e.result(s, func(w io.Writer) { printStatus(w, s) }); err != nil {
					return err
				}
				if s.BrokerError != "" {
					return errors.New("RabbitMQ: " + s.BrokerError)
				}
				return nil
			}
		},
	}
}

func printStatus(w io.Writer, s pipeline.Status) {
	fmt.Fprintf(w, "outbox      %d unpublished", s.Outbox.Backlog)
	if s.Outbox.Backlog > 0 {
		fmt.Fprintf(w, ", oldest %s ago", (time.Duration(s.Outbox.OldestAgeSeconds * float64(time.Second))).Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	for _, p := range s.Providers {
		fmt.Fprintf(w, "%-11s queued %d, consumers %d, retrying %d, dead %d; %.1f synced/s, %d failed in the last minute\n",
			p.Name, p.Queued, p.Consumers, p.Retrying, p.Dead, p.SyncedPerSecond, p.FailedLastMinute)
		fmt.Fprintf(w, "%-11s users: %d synced, %d pending, %d failed, %d conflict\n", "",
			p.Users[store.LinkSynced], p.Users[store.LinkPending], p.Users[store.LinkFailed], p.Users[store.LinkConflict])
	}
	if s.BrokerError != "" {
		fmt.Fprintf(w, "RabbitMQ    unreachable: %s\n", s.BrokerError)
	}
	if len(s.Attention) == 0 {
		fmt.Fprintln(w, "attention   none")
		return
	}
	fmt.Fprintf(w, "attention   %d users (tandemctl resync -provider P USER_ID pushes one again):\n", len(s.Attention))
	for _, a := range s.Attention {
		fmt.Fprintf(w, "  %s %-9s %-9s %s  %s\n", a.UserID, a.Provider, a.Status, a.Email, strings.Join(strings.Fields(a.Reason), " "))
	}
}
