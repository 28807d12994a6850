package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Kinds of history entries (the kind column of sync_history; contract: the
// history of the REST API).
const (
	// HistoryChange: the user changed locally (Version), through the API
	// (Origin "api") or a provider's inbound event (Origin the provider);
	// Outcome is created, updated or deleted.
	HistoryChange = "change"
	// HistoryPush: a worker pushed the user to Provider (Version); Outcome
	// is the link's status afterwards (synced, deleted, conflict, failed),
	// retrying (a transient failure, retried), or unknown (the push's
	// answer was lost: retried); Error says why; Duration is the call's.
	HistoryPush = "push"
	// HistoryInbound: an inbound event (EventID) from Provider, with its
	// outcome (applied, duplicate, stale, echo, conflict, invalid, ...).
	HistoryInbound = "inbound"
	// HistoryResync: an operator asked for a push to Provider (REST, the
	// console, tandemctl resync).
	HistoryResync = "resync"
)

// HistoryEntry is one thing Tandem did for a user.
type HistoryEntry struct {
	ID       uint64
	UserID   string
	At       time.Time
	Kind     string
	Provider string
	Version  int64
	Origin   string
	Outcome  string
	EventID  string
	Error    string
	Duration time.Duration
}

// HistoryOptions tune how a Store records history (Options.History).
type HistoryOptions struct {
	// Off records nothing (benchmarks compare with it; TANDEM_HISTORY).
	Off bool
	// FlushInterval is the longest an entry waits before it is written
	// (default 100ms): entries are written in batches, one INSERT each, off
	// the request and push paths.
	FlushInterval time.Duration
	// Buffer is how many entries may wait; beyond it (MySQL is down or too
	// slow) new entries are dropped and counted (default 10,000).
	Buffer int
}

// maxHistoryError bounds the error text kept per entry.
const maxHistoryError = 2000

// historyBatch is the most entries written by one INSERT.
const historyBatch = 500

// historyWriter writes history entries in batches from one goroutine. What
// it holds when the process is killed (at most FlushInterval of entries) is
// lost: history is a diagnostic record, never the truth of a user or a link
// (those are written in their own transactions).
type historyWriter struct {
	in      chan HistoryEntry
	flushes chan chan struct{}
	stop    chan struct{}
	done    chan struct{}
	every   time.Duration
	dropped atomic.Int64
	once    sync.Once
}

func (s *Store) startHistory(o HistoryOptions) {
	if o.Off {
		return
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 100 * time.Millisecond
	}
	if o.Buffer <= 0 {
		o.Buffer = 10_000
	}
	w := &historyWriter{in: make(chan HistoryEntry, o.Buffer), flushes: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}), every: o.FlushInterval}
	s.history = w
	go s.writeHistory(w)
}

// addHistory queues e for writing; it never blocks (a full buffer drops it).
func (s *Store) addHistory(e HistoryEntry) {
	w := s.history
	if w == nil {
		return
	}
	if e.At.IsZero() {
		e.At = s.clock()
	}
	if len(e.Error) > maxHistoryError {
		e.Error = strings.ToValidUTF8(e.Error[:maxHistoryError], "")
	}
	if !utf8.ValidString(e.Error) {
		e.Error = strings.ToValidUTF8(e.Error, "?")
	}
	select {
	case w.in <- e:
	default:
		w.dropped.Add(1)
	}
}

// HistoryDropped is how many history entries were dropped because the
// buffer was full (MySQL down or too slow), since the store opened.
func (s *Store) HistoryDropped() int64 {
	if s.history == nil {
		return 0
	}
	return s.history.dropped.Load()
}

// FlushHistory writes the entries this process has queued so far and
// returns once they are written (or failed: they are retried later).
func (s *Store) FlushHistory(ctx context.Context) {
	w := s.history
	if w == nil {
		return
	}
	ack := make(chan struct{})
	select {
	case w.flushes <- ack:
	case <-w.done:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-ack:
	case <-ctx.Done():
	}
}

// stopHistory writes what is queued (for at most 5 s) and stops the writer.
func (s *Store) stopHistory() {
	w := s.history
	if w == nil {
		return
	}
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (s *Store) writeHistory(w *historyWriter) {
	defer close(w.done)
	t := time.NewTicker(w.every)
	defer t.Stop()
	var pending []HistoryEntry
	flush := func(ctx context.Context) {
		for len(pending) > 0 {
			n := min(len(pending), historyBatch)
			if err := s.insertHistory(ctx, pending[:n]); err != nil {
				if len(pending) > cap(w.in) { // MySQL is away: keep the newest
					w.dropped.Add(int64(len(pending) - cap(w.in)))
					pending = append(pending[:0], pending[len(pending)-cap(w.in):]...)
				}
				return
			}
			pending = pending[n:]
		}
		pending = nil
	}
	drain := func() {
		for {
			select {
			case e := <-w.in:
				pending = append(pending, e)
			default:
				return
			}
		}
	}
	for {
		select {
		case e := <-w.in:
			pending = append(pending, e)
			if len(pending) >= historyBatch {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				flush(ctx)
				cancel()
			}
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			flush(ctx)
			cancel()
		case ack := <-w.flushes:
			drain()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			flush(ctx)
			cancel()
			close(ack)
		case <-w.stop:
			drain()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			flush(ctx)
			cancel()
			return
		}
	}
}

func (s *Store) insertHistory(ctx context.Context, entries []HistoryEntry) error {
	var b strings.Builder
	b.WriteString("INSERT INTO sync_history (user_id, at, kind, provider, version, origin, outcome, event_id, error, duration_us) VALUES ")
	args := make([]any, 0, len(entries)*10)
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?)")
		var version, dur any
		if e.Version > 0 {
			version = e.Version
		}
		if e.Duration > 0 {
			dur = e.Duration.Microseconds()
		}
		args = append(args, e.UserID, e.At.UTC(), e.Kind, nullString(e.Provider), version, nullString(e.Origin),
			nullString(e.Outcome), nullString(e.EventID), nullString(e.Error), dur)
	}
	if _, err := s.sql.ExecContext(ctx, b.String(), args...); err != nil {
		return fmt.Errorf("writing history: %w", translate(err))
	}
	return nil
}

// HistoryQuery selects a page of a user's history, newest first.
type HistoryQuery struct {
	// Before, if not zero, returns entries older than this one (at, id):
	// the last entry of the previous page.
	BeforeAt time.Time
	BeforeID uint64
	Limit    int
}

// History returns up to q.Limit entries of userID's history, newest first,
// and whether more follow. It first writes what this process has queued,
// so a change made through this process is in its history at once; other
// processes' entries appear within their flush interval. It returns
// ErrNotFound when no user (live or deleted) has that id and no history
// names it.
func (s *Store) History(ctx context.Context, userID string, q HistoryQuery) ([]HistoryEntry, bool, error) {
	s.FlushHistory(ctx)
	db := s.db.WithContext(ctx).Table("sync_history").Where("user_id = ?", userID)
	if !q.BeforeAt.IsZero() {
		db = db.Where("at < ? OR (at = ? AND id < ?)", q.BeforeAt.UTC(), q.BeforeAt.UTC(), q.BeforeID)
	}
	var rows []historyRow
	if err := db.Order("at DESC, id DESC").Limit(q.Limit + 1).Find(&rows).Error; err != nil {
		return nil, false, fmt.Errorf("reading the history of user %s: %w", userID, translate(err))
	}
	if len(rows) == 0 && q.BeforeAt.IsZero() {
		var n int64
		if err := s.db.WithContext(ctx).Table("users").Where("id = ?", userID).Count(&n).Error; err != nil {
			return nil, false, fmt.Errorf("reading the history of user %s: %w", userID, translate(err))
		}
		if n == 0 {
			return nil, false, fmt.Errorf("reading the history of user %s: %w", userID, ErrNotFound)
		}
	}
	more := len(rows) > q.Limit
	if more {
		rows = rows[:q.Limit]
	}
	out := make([]HistoryEntry, len(rows))
	for i, r := range rows {
		out[i] = r.entry()
	}
	return out, more, nil
}

type historyRow struct {
	ID         uint64
	UserID     string
	At         time.Time
	Kind       string
	Provider   *string
	Version    *int64
	Origin     *string
	Outcome    *string
	EventID    *string
	Error      *string
	DurationUs *int64
}

func (r historyRow) entry() HistoryEntry {
	e := HistoryEntry{ID: r.ID, UserID: r.UserID, At: r.At.UTC(), Kind: r.Kind, Provider: deref(r.Provider),
		Origin: deref(r.Origin), Outcome: deref(r.Outcome), EventID: deref(r.EventID), Error: deref(r.Error)}
	if r.Version != nil {
		e.Version = *r.Version
	}
	if r.DurationUs != nil {
		e.Duration = time.Duration(*r.DurationUs) * time.Microsecond
	}
	return e
}

// PruneHistory deletes up to limit history entries older than olderThan,
// oldest first, and returns how many it deleted. Call it until it returns
// less than limit.
func (s *Store) PruneHistory(ctx context.Context, olderThan time.Time, limit int) (int64, error) {
	if limit <= 0 {
		return 0, errors.New("pruning history: limit must be positive")
	}
	res := s.db.WithContext(ctx).Exec("DELETE FROM sync_history WHERE at < ? ORDER BY at LIMIT ?", olderThan.UTC(), limit)
	if res.Error != nil {
		return 0, fmt.Errorf("pruning history: %w", translate(res.Error))
	}
	return res.RowsAffected, nil
}

// recordChange records a local change of u.
func (s *Store) recordChange(u User, origin, eventType string) {
	s.addHistory(HistoryEntry{UserID: u.ID, At: u.UpdatedAt, Kind: HistoryChange, Version: u.Version, Origin: origin,
		Outcome: strings.TrimPrefix(eventType, "user.")})
}

// recordInbound records an inbound event's outcome and, when it changed the
// user, the change.
func (s *Store) recordInbound(provider string, ev InboundChange, res InboundResult) {
	userID := res.UserID
	if userID == "" {
		userID = ev.UserID
	}
	if userID == "" {
		return // concerns no user
	}
	now := s.clock()
	s.addHistory(HistoryEntry{UserID: userID, At: now, Kind: HistoryInbound, Provider: provider, Version: res.Version,
		Outcome: string(res.Outcome), EventID: ev.EventID, Error: res.Detail})
	switch res.Outcome {
	case InboundApplied, InboundCreated, InboundDeleted:
		typ := "updated"
		switch res.Outcome {
		case InboundCreated:
			typ = "created"
		case InboundDeleted:
			typ = "deleted"
		}
		s.addHistory(HistoryEntry{UserID: userID, At: now, Kind: HistoryChange, Version: res.Version, Origin: provider, Outcome: typ})
	}
}

// recordPush records a push's outcome: up as recorded (or the lease lost)
// and the push's error.
func (s *Store) recordPush(userID, provider string, version int64, up LinkUpdate, pushErr, recErr error, took time.Duration) {
	e := HistoryEntry{UserID: userID, Kind: HistoryPush, Provider: provider, Version: version, Duration: took, Outcome: up.Status}
	switch {
	case errors.Is(recErr, ErrLeaseLost):
		e.Outcome, e.Error = "unknown", recErr.Error()
	case recErr != nil:
		e.Outcome, e.Error = "unknown", "the outcome could not be recorded: "+recErr.Error()
	case pushErr != nil && up.Status == LinkPending:
		e.Outcome = "retrying"
	}
	if e.Error == "" && up.LastError != nil {
		e.Error = *up.LastError
	}
	if e.Error == "" && pushErr != nil {
		e.Error = pushErr.Error()
	}
	s.addHistory(e)
}
