package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// relayTx is the isolation of the outbox relay's transactions: nil, the
// session default, READ COMMITTED (see Open). READ COMMITTED takes no gap
// locks: the relay's claim (a range scan of the unpublished rows) must not
// block the inserts of new outbox rows, which land right after the rows it
// holds.
var relayTx *sql.TxOptions

// PublishFunc publishes claimed outbox rows and returns the ids
// (OutboxEvent.ID) of those the broker confirmed. It may return some ids and
// an error: the confirmed ones are still marked published.
type PublishFunc func(ctx context.Context, events []OutboxEvent) (published []uint64, err error)

// RelayBatch claims up to limit unpublished outbox rows, oldest (lowest id)
// first, with SELECT … FOR UPDATE SKIP LOCKED in one transaction, calls
// publish while holding their locks, marks the rows publish reports
// confirmed (published_at = now) and commits. Rows locked by another relay
// are skipped, so several relays share the work; rows publish does not
// confirm stay unpublished and are claimed again later. A relay that dies
// mid-batch releases its locks with its connection, and its rows are claimed
// again (the broker may then get them twice: consumers de-duplicate).
//
// It returns how many rows it claimed and marked. err wraps publish's error
// (after marking what was confirmed) or a database error; when the commit
// fails after publishing, the rows stay unpublished and will be sent again.
func (s *Store) RelayBatch(ctx context.Context, limit int, publish PublishFunc) (claimed, published int, err error) {
	if limit <= 0 {
		return 0, 0, errors.New("relaying outbox: limit must be positive")
	}
	var publishErr error
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []OutboxEvent
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"}).
			Where("published_at IS NULL").Order("id").Limit(limit).Find(&rows).Error; err != nil {
			return fmt.Errorf("claiming outbox rows: %w", translate(err))
		}
		claimed = len(rows)
		if claimed == 0 {
			return nil
		}
		for i := range rows {
			rows[i].CreatedAt = rows[i].CreatedAt.UTC()
		}
		ids, err := publish(ctx, rows)
		publishErr = err
		ids = claimedOnly(rows, ids)
		if len(ids) == 0 {
			return nil
		}
		res := tx.Model(&OutboxEvent{}).Where("id IN ?", ids).Update("published_at", s.clock())
		if res.Error != nil {
			return fmt.Errorf("marking %d outbox rows published: %w", len(ids), translate(res.Error))
		}
		published = int(res.RowsAffected)
		return nil
	}, relayTx)
	if err != nil {
		return claimed, 0, fmt.Errorf("relaying outbox: %w", err)
	}
	if publishErr != nil {
		return claimed, published, fmt.Errorf("relaying outbox: %w", publishErr)
	}
	return claimed, published, nil
}

// claimedOnly keeps the ids that belong to rows (a defensive filter: only
// rows this transaction holds may be marked).
func claimedOnly(rows []OutboxEvent, ids []uint64) []uint64 {
	held := make(map[uint64]bool, len(rows))
	for _, r := range rows {
		held[r.ID] = true
	}
	out := ids[:0:0]
	for _, id := range ids {
		if held[id] {
			out = append(out, id)
			held[id] = false
		}
	}
	return out
}

// PruneOutbox deletes up to limit rows published before olderThan, oldest
// first, and returns how many it deleted. Call it until it returns less than
// limit. Unpublished rows are never deleted.
func (s *Store) PruneOutbox(ctx context.Context, olderThan time.Time, limit int) (int64, error) {
	if limit <= 0 {
		return 0, errors.New("pruning outbox: limit must be positive")
	}
	var n int64
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Exec("DELETE FROM outbox WHERE published_at < ? ORDER BY published_at LIMIT ?", olderThan.UTC(), limit)
		n = res.RowsAffected
		return translate(res.Error)
	}, relayTx)
	if err != nil {
		return 0, fmt.Errorf("pruning outbox: %w", err)
	}
	return n, nil
}

// OutboxBacklog returns the number of unpublished outbox rows and the
// creation time of the oldest one (the zero time when there is none).
func (s *Store) OutboxBacklog(ctx context.Context) (count int64, oldest time.Time, err error) {
	var oldestAt sql.NullTime
	row := s.db.WithContext(ctx).Model(&OutboxEvent{}).Select("COUNT(*), MIN(created_at)").
		Where("published_at IS NULL").Row()
	if err := row.Scan(&count, &oldestAt); err != nil {
		return 0, time.Time{}, fmt.Errorf("measuring outbox backlog: %w", translate(err))
	}
	if oldestAt.Valid {
		oldest = oldestAt.Time.UTC()
	}
	return count, oldest, nil
}

// AppendOutbox writes outbox rows as given, in multi-row INSERTs of up to
// 1,000 rows (each its own statement), without touching users: for re-announcing existing users to the providers (an
// operator's resync), and for tests and benchmarks. Empty EventIDs get a
// fresh UUIDv7, zero CreatedAt the current time; ID is assigned. It
// returns ErrConflict (wrapped) for a duplicate EventID.
func (s *Store) AppendOutbox(ctx context.Context, events []OutboxEvent) error {
	if len(events) == 0 {
		return nil
	}
	now := s.clock()
	for i := range events {
		if events[i].EventID == "" {
			events[i].EventID = uuid.Must(uuid.NewV7()).String()
		}
		if events[i].CreatedAt.IsZero() {
			events[i].CreatedAt = now
		}
	}
	if err := s.db.WithContext(ctx).CreateInBatches(events, 1000).Error; err != nil {
		return fmt.Errorf("appending %d outbox rows: %w", len(events), translate(err))
	}
	s.notify()
	return nil
}
