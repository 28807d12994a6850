package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/userfields"
	"github.com/tandem-sync/tandem/internal/worker"
)

func backfillCommand() command {
	return command{
		name:    "backfill",
		args:    "-provider P [-dry-run] [-concurrency N]",
		summary: "link (an existing remote object) or create the remote object of every live user not synced to P",
		setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
			provider := fs.String("provider", "", "the provider to backfill (required)")
			dryRun := fs.Bool("dry-run", false, "print the plan (link N, create M, ambiguous K) and change nothing")
			concurrency := fs.Int("concurrency", 16, "users pushed at once (the provider's rate limit bounds the rate)")
			return func(ctx context.Context, e *env) error {
				if len(e.args) > 0 {
					return usagef("unexpected argument %q", e.args[0])
				}
				if *concurrency < 1 {
					return usagef("-concurrency must be at least 1")
				}
				return backfill(ctx, e, *provider, *dryRun, *concurrency)
			}
		},
	}
}

// backfillReport is backfill's -json document.
type backfillReport struct {
	Provider string `json:"provider"`
	DryRun   bool   `json:"dry_run"`
	// The plan: users to link to an existing object, to create one for,
	// left ambiguous (several candidates), and already linked but not
	// holding the current version (pushed over their object).
	Users     int `json:"users"`
	Link      int `json:"link"`
	Create    int `json:"create"`
	Ambiguous int `json:"ambiguous"`
	Update    int `json:"update"`
	// What the run did (all zero with -dry-run).
	Linked    int                `json:"linked"`
	Created   int                `json:"created"`
	Updated   int                `json:"updated"`
	Conflicts []backfillConflict `json:"conflicts"`
	Failed    []backfillFailure  `json:"failed"`
	Skipped   int                `json:"skipped"` // done meanwhile (by a worker), or the user was deleted
	// Listed is how many remote objects the listing read, in Pages pages.
	Listed          int     `json:"listed"`
	Pages           int     `json:"pages"`
	DurationSeconds float64 `json:"duration_seconds"`
	Interrupted     bool    `json:"interrupted"`
}

type backfillConflict struct {
	UserID     string   `json:"user_id"`
	Candidates []string `json:"candidates"`
}

type backfillFailure struct {
	UserID string `json:"user_id"`
	Error  string `json:"error"`
}

// planned is one user's step.
type planned struct {
	store.Unsynced
	kind       string // link, create, ambiguous, update
	candidates []integrations.RemoteObject
	conflict   []string
}

// backfill plans with one listing of the provider's objects (pages, not one
// read per user), then pushes each user through worker.Pusher, the worker's
// own rules: a user is leased while it is pushed, so a worker running at the
// same time never makes a second object for it, and the link is re-read
// under the lease, so a user a worker synced meanwhile is skipped.
func backfill(ctx context.Context, e *env, name string, dryRun bool, concurrency int) error {
	start := time.Now()
	p, err := e.provider(name)
	if err != nil {
		return err
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	rep := backfillReport{Provider: name, DryRun: dryRun, Conflicts: []backfillConflict{}, Failed: []backfillFailure{}}

	var users []store.Unsynced
	for after := ""; ; {
		page, err := st.UnsyncedUsers(ctx, name, after, 5000)
		if err != nil {
			return err
		}
		users = append(users, page...)
		if len(page) < 5000 {
			break
		}
		after = page[len(page)-1].UserID
	}
	rep.Users = len(users)

	lister, _ := p.(integrations.Lister)
	matcher, _ := p.(integrations.Matcher)
	var index *remoteIndex
	if lister != nil && len(users) > 0 {
		index, err = listAll(ctx, e, lister)
		if err != nil {
			return err
		}
		rep.Listed, rep.Pages = index.count, index.pages
	}
	plan := make([]planned, 0, len(users))
	for _, u := range users {
		pl := planned{Unsynced: u, kind: "create"}
		switch {
		case u.RemoteID != "":
			pl.kind = "update"
		case index != nil:
			pl.candidates = index.candidates(u.UserID, u.Email)
			ch := integrations.ChooseLink(u.UserID, u.Email, e.cfg.LinkByEmail, pl.candidates)
			switch {
			case len(ch.Conflict) > 0:
				pl.kind, pl.conflict = "ambiguous", ch.Conflict
			case ch.RemoteID != "":
				pl.kind = "link"
			}
		}
		switch pl.kind {
		case "link":
			rep.Link++
		case "create":
			rep.Create++
		case "ambiguous":
			rep.Ambiguous++
		case "update":
			rep.Update++
		}
		plan = append(plan, pl)
	}
	if index == nil && matcher == nil && len(users) > 0 {
		e.log.Warn("the provider can neither list nor match its objects: every user without a link gets a new one", "provider", name)
	}
	if dryRun {
		rep.DurationSeconds = time.Since(start).Seconds()
		return e.result(rep, func(w io.Writer) { printBackfill(w, rep) })
	}

	cfg := worker.Config{LeaseTTL: e.cfg.Worker.Lease, Matcher: matcher, LinkByEmail: e.cfg.LinkByEmail, MaxAttempts: e.cfg.MaxAttempts}
	cfg.Finder, _ = p.(integrations.Finder)
	pusher := worker.NewPusher(p, st, cfg)
	bar := e.progress(int64(len(plan)), "backfill "+name)
	var mu sync.Mutex
	jobs := make(chan planned)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pl := range jobs {
				outcome, err := pushOne(ctx, pusher, pl, e.cfg.MaxAttempts)
				mu.Lock()
				switch {
				case err != nil && ctx.Err() != nil:
					// Interrupted: a re-run takes this user.
				case err != nil:
					rep.Failed = append(rep.Failed, backfillFailure{UserID: pl.UserID, Error: oneLine(err)})
				case outcome == worker.OutcomeConflict:
					rep.Conflicts = append(rep.Conflicts, backfillConflict{UserID: pl.UserID, Candidates: pl.conflict})
				case outcome == worker.OutcomeSynced && pl.kind == "link":
					rep.Linked++
				case outcome == worker.OutcomeSynced && pl.kind == "create":
					rep.Created++
				case outcome == worker.OutcomeSynced:
					rep.Updated++
				default:
					rep.Skipped++
				}
				_ = bar.Add(1)
				mu.Unlock()
			}
		}()
	}
feed:
	for _, pl := range plan {
		if pl.kind == "ambiguous" && pl.Status == store.LinkConflict {
			// Marked already by an earlier run or a worker: nothing to
			// write until an operator resolves it.
			mu.Lock()
			rep.Conflicts = append(rep.Conflicts, backfillConflict{UserID: pl.UserID, Candidates: pl.conflict})
			_ = bar.Add(1)
			mu.Unlock()
			continue
		}
		select {
		case jobs <- pl:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	_ = bar.Finish()
	rep.Interrupted = ctx.Err() != nil
	rep.DurationSeconds = time.Since(start).Seconds()
	if err := e.result(rep, func(w io.Writer) { printBackfill(w, rep) }); err != nil {
		return err
	}
	switch {
	case rep.Interrupted:
		return errors.New("interrupted: run it again to continue")
	case len(rep.Failed) > 0:
		return fmt.Errorf("%d users failed (see the report); run it again after fixing the cause", len(rep.Failed))
	}
	return nil
}

// pushOne pushes one user, retrying what the worker would retry: a lease
// held by a worker, the provider's rate limit (as long as it says), and
// transient failures up to maxAttempts with backoff.
func pushOne(ctx context.Context, p *worker.Pusher, pl planned, maxAttempts int) (string, error) {
	for attempt := 1; ; attempt++ {
		final := attempt >= maxAttempts
		outcome, err := p.Push(ctx, worker.Request{UserID: pl.UserID, Version: pl.Version, Attempt: attempt, Final: final, Candidates: pl.candidates})
		if err == nil || errors.Is(err, store.ErrNotFound) {
			return outcome, nil
		}
		wait := time.Duration(min(attempt, 6)) * 200 * time.Millisecond
		switch retryAfter, limited := integrations.RetryAfter(err); {
		case errors.Is(err, store.ErrBusy), errors.Is(err, store.ErrLeaseLost):
			attempt-- // nobody's failure
		case limited && !integrations.IsPermanent(err):
			attempt--
			wait = max(retryAfter, wait)
		case integrations.IsPermanent(err) || final:
			return outcome, err
		}
		select {
		case <-ctx.Done():
			return outcome, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func printBackfill(w io.Writer, r backfillReport) {
	verb := "plan"
	if r.DryRun {
		verb = "dry run, nothing written"
	}
	fmt.Fprintf(w, "backfill %s (%s): %d users not synced: link %d, create %d, ambiguous %d, update %d\n",
		r.Provider, verb, r.Users, r.Link, r.Create, r.Ambiguous, r.Update)
	if r.Pages > 0 {
		fmt.Fprintf(w, "listed %d remote objects in %d pages\n", r.Listed, r.Pages)
	}
	if !r.DryRun {
		fmt.Fprintf(w, "done: linked %d, created %d, updated %d, conflict %d, failed %d, skipped %d in %.1fs\n",
			r.Linked, r.Created, r.Updated, len(r.Conflicts), len(r.Failed), r.Skipped, r.DurationSeconds)
	}
	for _, c := range r.Conflicts {
		fmt.Fprintf(w, "  conflict %s: candidates %v\n", c.UserID, c.Candidates)
	}
	for _, f := range r.Failed {
		fmt.Fprintf(w, "  failed %s: %s\n", f.UserID, f.Error)
	}
}

// remoteIndex holds a listing of the provider's live objects by tag and by
// email.
type remoteIndex struct {
	byTag   map[string][]integrations.RemoteObject
	byEmail map[string][]integrations.RemoteObject
	count   int
	pages   int
}

// listAll reads every live remote object, one request per page.
func listAll(ctx context.Context, e *env, l integrations.Lister) (*remoteIndex, error) {
	ix := &remoteIndex{byTag: map[string][]integrations.RemoteObject{}, byEmail: map[string][]integrations.RemoteObject{}}
	bar := e.progress(-1, "listing remote objects")
	defer bar.Finish()
	for cursor := ""; ; {
		page, next, err := l.ListRemote(ctx, cursor)
		if err != nil {
			return nil, fmt.Errorf("listing remote objects (after %d in %d pages): %w", ix.count, ix.pages, err)
		}
		ix.pages++
		for _, o := range page {
			ix.count++
			if o.UserID != "" {
				ix.byTag[o.UserID] = append(ix.byTag[o.UserID], o)
			}
			if o.Customer.Email != "" {
				k := userfields.EmailKey(o.Customer.Email)
				ix.byEmail[k] = append(ix.byEmail[k], o)
			}
		}
		_ = bar.Add(len(page))
		if next == "" {
			return ix, nil
		}
		cursor = next
	}
}

// candidates returns the listed objects that may be userID's: tagged with
// it, or holding email. Never nil: an empty slice means none were found.
func (ix *remoteIndex) candidates(userID, email string) []integrations.RemoteObject {
	out := append([]integrations.RemoteObject{}, ix.byTag[userID]...)
	if email != "" {
		out = append(out, ix.byEmail[userfields.EmailKey(email)]...)
	}
	return out
}
