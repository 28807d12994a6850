// Package pipeline reads Tandem's pipeline at a glance for operators: the
// outbox backlog, each provider's queues (by AMQP passive declares, so the
// management plugin is not needed), its sync rate and its users by sync
// status, and the users needing attention. tandemctl status prints it; the
// console streams it.
package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/store"
)

// Store is what a snapshot reads from MySQL.
type Store interface {
	OutboxBacklog(ctx context.Context) (int64, time.Time, error)
	UsersByStatus(ctx context.Context, providers []string) (map[string]map[string]int64, error)
	PushesSince(ctx context.Context, t time.Time) (map[string]map[string]int64, error)
	Attention(ctx context.Context, providers []string, pendingBefore time.Time, limit int) ([]store.AttentionItem, error)
}

// PendingAttention is how long a user may stay pending before it needs an
// operator's attention.
const PendingAttention = time.Minute

// RateWindow is the window of the sync rate.
const RateWindow = time.Minute

// Source takes snapshots.
type Source struct {
	Store     Store
	Broker    *broker.Conn // nil: queues are not read
	Providers []string
	Tiers     []time.Duration // the retry tiers (broker.RetryTiers if none)
	// AttentionLimit bounds the attention list per provider (default 50).
	AttentionLimit int
}

// Status is one snapshot (contract: the JSON of tandemctl status -json).
type Status struct {
	At        time.Time        `json:"at"`
	Outbox    Outbox           `json:"outbox"`
	Providers []Provider       `json:"providers"`
	Attention []AttentionEntry `json:"attention"`
	// BrokerError says why the queues could not be read ("" if they were).
	BrokerError string `json:"broker_error,omitempty"`
}

// Outbox is the relay's backlog.
type Outbox struct {
	Backlog          int64   `json:"backlog"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Provider is one provider's part of the pipeline.
type Provider struct {
	Name      string `json:"name"`
	Queued    int    `json:"queued"`    // messages ready in tandem.sync.<P>
	Consumers int    `json:"consumers"` // workers consuming it
	Retrying  int    `json:"retrying"`  // messages waiting in the retry queues
	Dead      int    `json:"dead"`      // messages in tandem.dead.<P>
	// SyncedPerSecond is the rate of successful pushes over RateWindow;
	// FailedLastMinute counts the pushes that failed for good in it.
	SyncedPerSecond  float64          `json:"synced_per_second"`
	FailedLastMinute int64            `json:"failed_last_minute"`
	Users            map[string]int64 `json:"users"` // live users by sync status
}

// AttentionEntry is a user needing an operator's look.
type AttentionEntry struct {
	UserID   string    `json:"user_id"`
	Email    string    `json:"email"`
	Provider string    `json:"provider"`
	Status   string    `json:"status"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"since"`
}

// Snapshot reads the pipeline now. A database error fails it; a broker
// error is reported in BrokerError (the rest is still worth showing).
func (s Source) Snapshot(ctx context.Context) (Status, error) {
	sl, err := s.slow(ctx, time.Now().UTC())
	if err != nil {
		return Status{}, err
	}
	return s.fast(ctx, sl)
}

// slowPart is the costlier part: users by status (it reads every user and
// every link's index entry), pushes and attention.
type slowPart struct {
	users     map[string]map[string]int64
	pushes    map[string]map[string]int64
	attention []AttentionEntry
}

func (s Source) slow(ctx context.Context, now time.Time) (slowPart, error) {
	var sl slowPart
	var err error
	if sl.users, err = s.Store.UsersByStatus(ctx, s.Providers); err != nil {
		return sl, err
	}
	if sl.pushes, err = s.Store.PushesSince(ctx, now.Add(-RateWindow)); err != nil {
		return sl, err
	}
	limit := s.AttentionLimit
	if limit <= 0 {
		limit = 50
	}
	items, err := s.Store.Attention(ctx, s.Providers, now.Add(-PendingAttention), limit)
	if err != nil {
		return sl, err
	}
	sl.attention = []AttentionEntry{}
	for _, it := range items {
		sl.attention = append(sl.attention, AttentionEntry(it))
	}
	return sl, nil
}

// fast reads the outbox backlog and the queues (cheap: an index range and
// passive declares) and puts sl beside them.
func (s Source) fast(ctx context.Context, sl slowPart) (Status, error) {
	now := time.Now().UTC()
	st := Status{At: now, Attention: sl.attention}
	backlog, oldest, err := s.Store.OutboxBacklog(ctx)
	if err != nil {
		return st, err
	}
	st.Outbox.Backlog = backlog
	if !oldest.IsZero() {
		// Whole seconds: a page is sent a snapshot only when it changed.
		st.Outbox.OldestAgeSeconds = max(now.Sub(oldest).Truncate(time.Second).Seconds(), 0)
	}
	for _, p := range s.Providers {
		pr := Provider{Name: p, Users: sl.users[p],
			SyncedPerSecond:  float64(sl.pushes[p][store.LinkSynced]+sl.pushes[p][store.LinkDeleted]) / RateWindow.Seconds(),
			FailedLastMinute: sl.pushes[p][store.LinkFailed]}
		if s.Broker != nil && st.BrokerError == "" {
			q, err := broker.InspectQueues(s.Broker, p, s.Tiers...)
			if err != nil {
				st.BrokerError = err.Error()
			} else {
				pr.Queued, pr.Consumers, pr.Retrying, pr.Dead = q.Work.Messages, q.Work.Consumers, q.Retrying(), q.Dead.Messages
			}
		}
		st.Providers = append(st.Providers, pr)
	}
	return st, nil
}

// Live is a Source for a view refreshed every second or so (the console):
// the outbox and the queues are read at every Snapshot, the costlier parts
// (users by status, which reads every user, the sync rate, the attention
// list) at most every Slow (default 5s), so an open console costs the
// database little.
type Live struct {
	Source
	Slow time.Duration

	mu   sync.Mutex
	at   time.Time
	last slowPart
}

// Snapshot is Source.Snapshot with the slow parts at most Slow old.
func (l *Live) Snapshot(ctx context.Context) (Status, error) {
	slow := l.Slow
	if slow <= 0 {
		slow = 5 * time.Second
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now().UTC(); l.at.IsZero() || now.Sub(l.at) >= slow {
		sl, err := l.slow(ctx, now)
		if err != nil {
			return Status{}, err
		}
		l.at, l.last = now, sl
	}
	return l.fast(ctx, l.last)
}

// Refresh makes the next Snapshot read the slow parts again (after an
// operator's action, whose effect should show at once).
func (l *Live) Refresh() {
	l.mu.Lock()
	l.at = time.Time{}
	l.mu.Unlock()
}
