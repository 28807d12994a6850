package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tandem-sync/tandem/internal/broker"
)

func dlqCommand() command {
	return command{
		name:    "dlq",
		args:    "list|replay|purge -provider P [-id MSG] [-limit N]",
		summary: "dead letters with their reason; replay sends them back to tandem.sync.<P> (each confirmed there before it leaves the dead-letter queue); purge drops them",
		setup: func(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
			provider := fs.String("provider", "", "the provider whose dead letters (tandem.dead.<P>)")
			id := fs.String("id", "", "only the message with this message id")
			limit := fs.Int("limit", 100, "list: at most this many")
			return func(ctx context.Context, e *env) error {
				if len(e.args) == 0 {
					return usagef("dlq needs an action: list, replay or purge")
				}
				action := e.args[0]
				// Flags may follow the action too.
				if err := fs.Parse(e.args[1:]); err != nil {
					return usagef("%s", err)
				}
				if f := fs.Lookup("json"); f != nil && f.Value.String() == "true" {
					e.json = true
				}
				if fs.NArg() > 0 {
					return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
				}
				if action != "list" && action != "replay" && action != "purge" {
					return usagef("unknown dlq action %q: list, replay or purge", action)
				}
				if *limit < 1 {
					return usagef("-limit must be positive")
				}
				p, err := e.providerName(*provider)
				if err != nil {
					return err
				}
				conn, pub, err := e.broker(ctx)
				if err != nil {
					return err
				}
				q := broker.DeadLetters{Conn: conn, Pub: pub, Provider: p}
				switch action {
				case "list":
					letters, depth, err := q.List(ctx, *limit)
					if err != nil {
						return err
					}
					if letters == nil {
						letters = []broker.DeadLetter{}
					}
					return e.result(map[string]any{"provider": p, "queue": broker.DeadQueue(p), "depth": depth, "messages": letters},
						func(w io.Writer) {
							fmt.Fprintf(w, "%s: %d dead letters\n", broker.DeadQueue(p), depth)
							for _, l := range letters {
								fmt.Fprintf(w, "  %s  user %s v%d %s  attempts %d  %s\n", l.MessageID, l.UserID, l.Version, l.Type, l.Attempts,
									strings.Join(strings.Fields(l.Error), " "))
							}
							if depth > len(letters) {
								fmt.Fprintf(w, "  … %d more (-limit)\n", depth-len(letters))
							}
						})
				case "replay":
					n, err := q.Replay(ctx, *id)
					if err != nil {
						return fmt.Errorf("%w (%d moved before it)", err, n)
					}
					return e.result(map[string]any{"provider": p, "replayed": n}, func(w io.Writer) {
						fmt.Fprintf(w, "replayed %d dead letters to %s\n", n, broker.WorkQueue(p))
					})
				default:
					n, err := q.Purge(ctx, *id)
					if err != nil {
						return err
					}
					return e.result(map[string]any{"provider": p, "purged": n}, func(w io.Writer) {
						fmt.Fprintf(w, "purged %d dead letters from %s\n", n, broker.DeadQueue(p))
					})
				}
			}
		},
	}
}
