package main

import (
	"context"
	"time"

	"github.com/tandem-sync/tandem/internal/store"
)

// pruneHistory deletes users' history older than retention every few
// minutes, in batches (several replicas may prune at once).
func pruneHistory(ctx context.Context, st *store.Store, retention time.Duration, log interface {
	Warn(string, ...any)
}) {
	if retention <= 0 {
		return
	}
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		for {
			n, err := st.PruneHistory(ctx, time.Now().Add(-retention), 1000)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("pruning history", "error", err.Error())
				}
				break
			}
			if n < 1000 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
