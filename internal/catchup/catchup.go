// Package catchup makes Tandem's inbound side complete: webhooks are a fast
// hint, not a record (Stripe stops retrying a delivery after three days, a
// disabled endpoint gets nothing, Salesforce drops Outbound Messages after a
// day and sends none on delete). Every TANDEM_CATCHUP_INTERVAL the webhook
// process reads each provider's own change log (integrations.ChangeLog:
// Stripe's Events API, Salesforce's changed and deleted Contacts) from a
// cursor kept in MySQL (table provider_cursors) and applies each change
// through exactly the webhook's path (webhook.Apply, so store.ApplyInbound:
// de-duplication by event id, ordering, the last-writer rule, echo
// detection, no outbox row). A change both delivered and read is applied
// once, in either order.
//
// One process at a time runs a round: a round takes a MySQL advisory lock
// (store.TryLock) without waiting, so every replica may run the loop and the
// others skip the round. Two rounds that overlapped anyway (the lock's
// connection dropped) still apply each event once (inbound_events' unique
// key), and a cursor never moves back (store.SaveCursor).
//
// A round reads page after page until the log has no more. The events of
// a page are applied concurrently across remote objects and in order within
// one; the cursor moves past a page only once every event of it is
// committed. A page the provider refuses (401, 429, 5xx) or an event that
// cannot be applied (MySQL down) ends the round with the cursor where it
// was; the next round resumes. Events already in inbound_events are skipped
// with one query per page. A malformed entry is counted, logged and skipped.
// A cursor older than the provider keeps (integrations.ErrCursorExpired) is
// reported (an error log with the advice to reconcile, a metric, /readyz)
// and the log is read again from now: the gap is recorded on the cursor
// until an operator clears it.
//
// Metrics: tandem_catchup_events_total{provider, outcome} (store outcomes,
// plus "known": recorded before, mostly by the webhook; "unhandled",
// "malformed", "error"), tandem_catchup_rounds_total{provider, result} (ok,
// failed, expired), tandem_catchup_requests_total{provider},
// tandem_catchup_lag_seconds{provider} (now − the newest change read),
// tandem_catchup_cursor_age_seconds{provider} (now − the time the log is
// read through), tandem_catchup_gap{provider} (1 while a gap is recorded).
// A change that catch-up applied first (its webhook was lost, or had not
// arrived yet) is logged at warning level, naming the event.
package catchup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/webhook"
)

// LockName is the advisory lock a round holds.
const LockName = "tandem-catchup"

// Store is what catch-up needs from storage.
type Store interface {
	webhook.Store
	Cursor(ctx context.Context, provider string) (store.Cursor, error)
	SaveCursor(ctx context.Context, c store.Cursor) (bool, error)
	KnownInboundEvents(ctx context.Context, provider string, ids []string) (map[string]bool, error)
	TryLock(ctx context.Context, name string) (release func(), ok bool, err error)
}

// Source is one provider's change log and the receiver that re-reads its
// objects (Fetch) when the store asks.
type Source struct {
	Name string
	Log  integrations.ChangeLog
	Recv integrations.WebhookReceiver
}

// Sources picks, from the webhook's receivers (keyed by provider name),
// those whose provider keeps a change log; skipped names the others.
func Sources(receivers map[string]integrations.WebhookReceiver) (sources []Source, skipped []string) {
	for _, name := range slices.Sorted(maps.Keys(receivers)) {
		if l, ok := receivers[name].(integrations.ChangeLog); ok {
			sources = append(sources, Source{Name: name, Log: l, Recv: receivers[name]})
		} else {
			skipped = append(skipped, name)
		}
	}
	return sources, skipped
}

// Options tune a Runner. Zero fields take the defaults shown.
type Options struct {
	// Interval is the time between rounds (TANDEM_CATCHUP_INTERVAL; 1m).
	Interval time.Duration
	// NoInboundCreate is TANDEM_INBOUND_CREATE=false, as for the webhook.
	NoInboundCreate bool
	// Concurrency is how many remote objects' events are applied at once
	// (16).
	Concurrency int
	// Logger (discarded if nil) and Registerer (metrics unregistered if
	// nil).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Runner runs catch-up rounds. It is safe for concurrent use.
type Runner struct {
	st      Store
	sources []Source
	o       Options
	log     *slog.Logger
	m       *metrics

	mu    sync.Mutex
	state map[string]*sourceState
}

// sourceState is what this process knows of one provider's catch-up, for
// metrics and readiness.
type sourceState struct {
	cursor  store.Cursor // as last read or written
	known   bool         // cursor is set
	failure string       // why the last round of this process failed, "" if it did not
	failed  time.Time
}

// New returns a Runner over sources.
func New(st Store, sources []Source, o Options) *Runner {
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{st: st, sources: sources, o: o, log: o.Logger.With("component", "catchup"), state: map[string]*sourceState{}}
	for _, s := range sources {
		r.state[s.Name] = &sourceState{}
	}
	r.m = newMetrics(o.Registerer, r)
	return r
}

// Run runs a round at once and then every Interval until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTicker(r.o.Interval)
	defer t.Stop()
	for {
		if _, err := r.Round(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("catch-up round failed; the next round resumes from the same cursor", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Report says what one round did.
type Report struct {
	// Ran is false when another process held the round's lock.
	Ran bool
	// Applied counts the events read, by outcome (as in
	// tandem_catchup_events_total).
	Outcomes map[string]int
	// Requests is the provider requests made.
	Requests int
}

// Round runs one round over every source, if no other process is running
// one. It returns the first source's error (every source is still tried).
func (r *Runner) Round(ctx context.Context) (Report, error) {
	rep := Report{Outcomes: map[string]int{}}
	release, ok, err := r.st.TryLock(ctx, LockName)
	if err != nil {
		return rep, fmt.Errorf("catch-up: %w", err)
	}
	if !ok {
		r.refresh(ctx) // keep this replica's metrics and readiness current
		return rep, nil
	}
	defer release()
	rep.Ran = true
	var errs []error
	for _, s := range r.sources {
		if err := r.catchUp(ctx, s, &rep); err != nil {
			errs = append(errs, fmt.Errorf("catch-up of %s: %w", s.Name, err))
			r.setFailure(s.Name, err)
		} else {
			r.setFailure(s.Name, nil)
		}
	}
	return rep, errors.Join(errs...)
}

// refresh reads the cursors another process writes.
func (r *Runner) refresh(ctx context.Context) {
	for _, s := range r.sources {
		if c, err := r.st.Cursor(ctx, s.Name); err == nil {
			r.setCursor(c)
		}
	}
}

// catchUp reads source s from its cursor until its log has no more.
func (r *Runner) catchUp(ctx context.Context, s Source, rep *Report) error {
	log := r.log.With("provider", s.Name)
	cur, err := r.st.Cursor(ctx, s.Name)
	if errors.Is(err, store.ErrNotFound) {
		// The first start begins now: older history is what reconcile
		// and import are for.
		page, err := s.Log.ReadChanges(ctx, "")
		if err != nil {
			r.m.rounds.WithLabelValues(s.Name, "failed").Inc()
			return err
		}
		c := store.Cursor{Provider: s.Name, Position: page.Next, ReadThrough: page.ReadThrough}
		if _, err := r.st.SaveCursor(ctx, c); err != nil {
			return err
		}
		log.Info("catch-up starts reading the provider's change log now", "cursor", page.Next)
		return r.catchUp(ctx, s, rep)
	}
	if err != nil {
		return err
	}
	r.setCursor(cur)
	for ctx.Err() == nil {
		page, err := s.Log.ReadChanges(ctx, cur.Position)
		rep.Requests += page.Requests
		r.m.requests.WithLabelValues(s.Name).Add(float64(page.Requests))
		if errors.Is(err, integrations.ErrCursorExpired) {
			return r.expired(ctx, s, cur, err, log)
		}
		if err != nil {
			r.m.rounds.WithLabelValues(s.Name, "failed").Inc()
			return err
		}
		for _, sk := range page.Skipped {
			r.count(s.Name, "malformed", rep)
			log.Warn("catch-up skipped a change it cannot read", "event_id", sk.ID, "reason", sk.Reason)
		}
		if err := r.apply(ctx, s, page.Events, rep, log); err != nil {
			r.m.rounds.WithLabelValues(s.Name, "failed").Inc()
			return err
		}
		next := store.Cursor{Provider: s.Name, Position: page.Next, ReadThrough: page.ReadThrough, NewestAt: newest(page.Events)}
		if _, err := r.st.SaveCursor(ctx, next); err != nil {
			r.m.rounds.WithLabelValues(s.Name, "failed").Inc()
			return err
		}
		if c, err := r.st.Cursor(ctx, s.Name); err == nil {
			cur = c
		} else {
			cur = next
		}
		r.setCursor(cur)
		if !page.More {
			break
		}
	}
	r.m.rounds.WithLabelValues(s.Name, "ok").Inc()
	return ctx.Err()
}

// expired records that cur aged out of the provider's log and starts again
// from now, keeping the gap on the cursor.
func (r *Runner) expired(ctx context.Context, s Source, cur store.Cursor, cause error, log *slog.Logger) error {
	r.m.rounds.WithLabelValues(s.Name, "expired").Inc()
	page, err := s.Log.ReadChanges(ctx, "")
	if err != nil {
		return err
	}
	c := store.Cursor{Provider: s.Name, Position: page.Next, ReadThrough: page.ReadThrough,
		GapFrom: cur.ReadThrough, GapTo: page.ReadThrough}
	if c.GapTo.Before(c.GapFrom) {
		c.GapTo = c.GapFrom
	}
	if _, err := r.st.SaveCursor(ctx, c); err != nil {
		return err
	}
	log.Error("catch-up cursor is older than the provider's change log keeps: changes made meanwhile may be missing; run `tandemctl reconcile -provider "+s.Name+"`",
		"gap_from", c.GapFrom.Format(time.RFC3339), "gap_to", c.GapTo.Format(time.RFC3339), "error", cause.Error())
	if got, err := r.st.Cursor(ctx, s.Name); err == nil {
		r.setCursor(got)
	}
	return nil
}

// apply applies evs (oldest first): concurrently across remote objects, in
// order within one. It returns the first error; the events it applied stay
// applied (and are skipped as known when the page is read again).
func (r *Runner) apply(ctx context.Context, s Source, evs []integrations.InboundEvent, rep *Report, log *slog.Logger) error {
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	known, err := r.st.KnownInboundEvents(ctx, s.Name, ids)
	if err != nil {
		return err
	}
	// Events by object, in order; objects in the order of their first
	// event.
	var order []string
	byObject := map[string][]integrations.InboundEvent{}
	for _, ev := range evs {
		switch {
		case known[ev.ID]:
			r.count(s.Name, "known", rep)
			continue
		case ev.Kind == integrations.InboundIgnored:
			r.count(s.Name, "unhandled", rep)
			continue
		}
		if err := webhook.CheckEvent(ev); err != nil {
			r.count(s.Name, "malformed", rep)
			log.Warn("catch-up skipped a change it cannot read", "event_id", ev.ID, "reason", err.Error())
			continue
		}
		if _, ok := byObject[ev.RemoteID]; !ok {
			order = append(order, ev.RemoteID)
		}
		byObject[ev.RemoteID] = append(byObject[ev.RemoteID], ev)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan []integrations.InboundEvent)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards rep
	for range min(r.o.Concurrency, len(order)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for group := range work {
				for _, ev := range group {
					if ctx.Err() != nil {
						break
					}
					res, err := webhook.Apply(ctx, r.st, s.Name, s.Recv, ev, r.o.NoInboundCreate)
					mu.Lock()
					if err != nil {
						r.count(s.Name, "error", rep)
						mu.Unlock()
						cancel(err)
						break
					}
					r.count(s.Name, string(res.Outcome), rep)
					mu.Unlock()
					if res.Outcome != store.InboundDuplicate {
						log.Warn("inbound change applied by catch-up before any webhook: its webhook was lost or late",
							"event_id", ev.ID, "event_type", ev.RawType, "remote_id", ev.RemoteID,
							"outcome", string(res.Outcome), "user_id", res.UserID, "version", res.Version, "detail", res.Detail)
					}
				}
			}
		}()
	}
	for _, id := range order {
		select {
		case work <- byObject[id]:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

func (r *Runner) count(provider, outcome string, rep *Report) {
	rep.Outcomes[outcome]++
	r.m.events.WithLabelValues(provider, outcome).Inc()
}

func newest(evs []integrations.InboundEvent) time.Time {
	var t time.Time
	for _, ev := range evs {
		if ev.OccurredAt.After(t) {
			t = ev.OccurredAt
		}
	}
	return t
}

func (r *Runner) setCursor(c store.Cursor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.state[c.Provider]; ok {
		st.cursor, st.known = c, true
	}
}

func (r *Runner) setFailure(provider string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state[provider]
	if err == nil {
		st.failure = ""
		return
	}
	st.failure, st.failed = err.Error(), time.Now()
}

// Check is the readiness detail of catch-up (a soft check: the webhook keeps
// serving): an error naming each provider whose last round failed in this
// process, or whose cursor records a gap (then run tandemctl reconcile).
// /readyz shows its message.
func (r *Runner) Check(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, s := range r.sources {
		st := r.state[s.Name]
		if !st.cursor.GapFrom.IsZero() {
			parts = append(parts, fmt.Sprintf("%s: changes from %s to %s may be missing (the cursor aged out of the provider's log): run tandemctl reconcile -provider %s",
				s.Name, st.cursor.GapFrom.Format(time.RFC3339), st.cursor.GapTo.Format(time.RFC3339), s.Name))
		}
		if st.failure != "" {
			parts = append(parts, fmt.Sprintf("%s: the last round failed at %s (see the log); the next resumes", s.Name, st.failed.UTC().Format(time.RFC3339)))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	msg := strings.Join(parts, "; ")
	return ops.Detail(msg, errors.New(msg))
}
