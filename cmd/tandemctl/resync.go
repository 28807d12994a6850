package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"

	"github.com/tandem-sync/tandem/internal/store"
)

func resyncCommand() command {
	return command{
		name:    "resync",
		args:    "-provider P USER_ID…",
		summary: "push these users to P again now, even if Tandem believes P holds them (someone edited the remote object by hand)",
		setup: func(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
			provider := fs.String("provider", "", "the provider to push to")
			return func(ctx context.Context, e *env) error {
				p, err := e.providerName(*provider)
				if err != nil {
					return err
				}
				if len(e.args) == 0 {
					return usagef("resync needs at least one USER_ID")
				}
				for _, id := range e.args {
					if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
						return usagef("%q is not a user id", id)
					}
				}
				st, err := e.store(ctx)
				if err != nil {
					return err
				}
				bar := e.progress(int64(len(e.args)), "resync")
				queued, missing := []string{}, []string{}
				for _, id := range e.args {
					err := st.Resync(ctx, strings.ToLower(id), p)
					switch {
					case errors.Is(err, store.ErrNotFound):
						missing = append(missing, id)
					case err != nil:
						return err
					default:
						queued = append(queued, id)
					}
					_ = bar.Add(1)
				}
				_ = bar.Finish()
				if err := e.result(map[string]any{"provider": p, "queued": queued, "not_found": missing}, func(w io.Writer) {
					fmt.Fprintf(w, "queued a push to %s of %d users\n", p, len(queued))
				}); err != nil {
					return err
				}
				if len(missing) > 0 {
					return fmt.Errorf("no such user: %s", strings.Join(missing, ", "))
				}
				return nil
			}
		},
	}
}
