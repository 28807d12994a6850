package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// pruneTx is the isolation of pruning transactions: READ COMMITTED takes no
// gap locks, so a prune never blocks the inserts of new events.
var pruneTx = &sql.TxOptions{Isolation: sql.LevelReadCommitted}

// InboundRetention says how long inbound_events keeps what.
type InboundRetention struct {
	// Rows is how long a row (the record that an event was received, which
	// de-duplicates its redeliveries) is kept. An event redelivered after
	// its row is pruned is no longer recognised as a duplicate, so Rows must
	// outlast the providers' redelivery (Stripe retries for 3 days).
	Rows time.Duration
	// Payloads is how long the raw payload of an event that ended in
	// conflict or invalid is kept (it can be 16 MiB); the row stays.
	Payloads time.Duration
}

// PruneInbound drops the payloads received more than r.Payloads ago and
// deletes the rows received more than r.Rows ago, at most batch rows per
// (short) transaction, until none is left or ctx ends. It returns how many
// rows it deleted and how many payloads it dropped. Several processes may
// prune at once: they take disjoint batches.
func (s *Store) PruneInbound(ctx context.Context, r InboundRetention, batch int) (rows, payloads int64, err error) {
	if batch <= 0 || r.Rows <= 0 || r.Payloads <= 0 {
		return 0, 0, errors.New("pruning inbound events: batch and retentions must be positive")
	}
	now := s.clock()
	for ctx.Err() == nil {
		n, err := s.DropInboundPayloads(ctx, now.Add(-r.Payloads), batch)
		payloads += n
		if err != nil || n < int64(batch) {
			if err != nil {
				return rows, payloads, err
			}
			break
		}
	}
	for ctx.Err() == nil {
		n, err := s.PruneInboundEvents(ctx, now.Add(-r.Rows), batch)
		rows += n
		if err != nil {
			return rows, payloads, err
		}
		if n < int64(batch) {
			break
		}
	}
	return rows, payloads, ctx.Err()
}

// PruneInboundEvents deletes up to limit inbound_events rows received
// before olderThan, oldest first, and returns how many it deleted. Call it
// until it returns less than limit. It never waits for a row another
// transaction holds (an event being applied): it claims rows through the
// received_at index with SKIP LOCKED and deletes them by primary key, so
// it touches no other row; concurrent pruners take disjoint batches.
func (s *Store) PruneInboundEvents(ctx context.Context, olderThan time.Time, limit int) (int64, error) {
	n, err := s.pruneInbound(ctx, limit, olderThan,
		"SELECT provider, event_id FROM inbound_events FORCE INDEX (inbound_events_received)"+
			" WHERE received_at < ? ORDER BY received_at LIMIT ? FOR UPDATE SKIP LOCKED",
		"DELETE FROM inbound_events WHERE provider = ? AND event_id = ?")
	if err != nil {
		return n, fmt.Errorf("pruning inbound events: %w", err)
	}
	return n, nil
}

// DropInboundPayloads clears the payload of up to limit inbound_events rows
// received before olderThan that still hold one, oldest first, and returns
// how many it cleared. The rows stay. Call it until it returns less than
// limit. Like PruneInboundEvents it skips rows other transactions hold.
func (s *Store) DropInboundPayloads(ctx context.Context, olderThan time.Time, limit int) (int64, error) {
	// payload_at is received_at for the rows that hold a payload and NULL
	// for the others: its index holds only the rows to look at.
	n, err := s.pruneInbound(ctx, limit, olderThan,
		"SELECT provider, event_id FROM inbound_events FORCE INDEX (inbound_events_payload)"+
			" WHERE payload_at < ? ORDER BY payload_at LIMIT ? FOR UPDATE SKIP LOCKED",
		"UPDATE inbound_events SET payload = NULL WHERE provider = ? AND event_id = ?")
	if err != nil {
		return n, fmt.Errorf("dropping inbound event payloads: %w", err)
	}
	return n, nil
}

// pruneInbound claims up to limit rows with claim (olderThan, limit) and
// runs change (provider, event id) on each, in one transaction. change
// addresses one row by its primary key: a statement naming many keys may
// be planned as a scan (the optimiser prefers it on small tables), which
// would lock, and wait for, rows that are not being pruned.
func (s *Store) pruneInbound(ctx context.Context, limit int, olderThan time.Time, claim, change string) (int64, error) {
	if limit <= 0 {
		return 0, errors.New("limit must be positive")
	}
	var n int64
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var keys []struct {
			Provider string
			EventID  string
		}
		if err := tx.Raw(claim, olderThan.UTC(), limit).Scan(&keys).Error; err != nil {
			return translate(err)
		}
		for _, k := range keys {
			res := tx.Exec(change, k.Provider, k.EventID)
			if res.Error != nil {
				return translate(res.Error)
			}
			n += res.RowsAffected
		}
		return nil
	}, pruneTx)
	if err != nil {
		return 0, err
	}
	return n, nil
}
