// Package pipeline reads Tandem's pipeline at a glance for operators: the
// outbox backlog, each provider's queues (by AMQP passive declares, so the
// management plugin is not needed), its sync rate and its users by sync
// status, and the users needing attention. tandemctl status prints it; the
// console streams it.
package pipeline

import (
	"context"
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
	now := time.Now().UTC()
	st := Status{At: now, Attention: []AttentionEntry{}}
	backlog, oldest, err := s.Store.OutboxBacklog(ctx)
	if err != nil {
		return st, err
	}
	st.Outbox.Backlog = backlog
	if !oldest.IsZero() {
		st.Outbox.OldestAgeSeconds = max(now.Sub(oldest).Seconds(), 0)
	}
	users, err := s.Store.UsersByStatus(ctx, s.Providers)
	if err != nil {
		return st, err
	}
	pushes, err := s.Store.PushesSince(ctx, now.Add(-RateWindow))
	if err != nil {
		return st, err
	}
	limit := s.AttentionLimit
	if limit <= 0 {
		limit = 50
	}
	items, err := s.Store.Attention(ctx, s.Providers, now.Add(-PendingAttention), limit)
	if err != nil {
		return st, err
	}
	for _, it := range items {
		st.Attention = append(st.Attention, AttentionEntry(it))
	}
	for _, p := range s.Providers {
		pr := Provider{Name: p, Users: users[p],
			SyncedPerSecond:  float64(pushes[p][store.LinkSynced]+pushes[p][store.LinkDeleted]) / RateWindow.Seconds(),
			FailedLastMinute: pushes[p][store.LinkFailed]}
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
