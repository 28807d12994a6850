package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// Cursor is the catch-up's position in one provider's own change log
// (table provider_cursors): where the next round starts reading.
type Cursor struct {
	Provider string
	// Position is the adapter's opaque position (integrations.ChangeLog).
	Position string
	// ReadThrough: every change the provider recorded before this time (by
	// its clock) has been read. SaveCursor never moves it back.
	ReadThrough time.Time
	// NewestAt is the provider's time of the newest change read (zero
	// before the first).
	NewestAt time.Time
	// GapFrom and GapTo bound a stretch of the log that could not be read
	// (the position had aged out of the provider's log): changes made then
	// may have been missed. Zero when there is none.
	GapFrom, GapTo time.Time
	// UpdatedAt is when the row was last written (Tandem's clock).
	UpdatedAt time.Time
}

type cursorRow struct {
	Provider    string
	Position    string
	ReadThrough time.Time
	NewestAt    sql.NullTime
	GapFrom     sql.NullTime
	GapTo       sql.NullTime
	UpdatedAt   time.Time
}

// Cursor returns provider's catch-up cursor, or an error matching ErrNotFound
// when catch-up never ran for it.
func (s *Store) Cursor(ctx context.Context, provider string) (Cursor, error) {
	var rows []cursorRow
	err := s.db.WithContext(ctx).Raw(`SELECT provider, position, read_through, newest_at, gap_from, gap_to, updated_at
		FROM provider_cursors WHERE provider = ?`, provider).Scan(&rows).Error
	if err != nil {
		return Cursor{}, fmt.Errorf("reading the %s catch-up cursor: %w", provider, translate(err))
	}
	if len(rows) == 0 {
		return Cursor{}, fmt.Errorf("the %s catch-up cursor: %w", provider, ErrNotFound)
	}
	r := rows[0]
	return Cursor{Provider: r.Provider, Position: r.Position, ReadThrough: r.ReadThrough.UTC(),
		NewestAt: fromNull(r.NewestAt), GapFrom: fromNull(r.GapFrom), GapTo: fromNull(r.GapTo), UpdatedAt: r.UpdatedAt.UTC()}, nil
}

func fromNull(t sql.NullTime) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

// maxPositionBytes is the column's size.
const maxPositionBytes = 1024

// SaveCursor records c as its provider's cursor, unless the stored one has
// read further (a later ReadThrough): it reports whether it wrote. Two
// processes racing never move a cursor back. A gap in c (GapFrom set) is
// added to the stored one (the union of both); a cursor without a gap keeps
// the stored gap (see ClearCursorGap). NewestAt never moves back either.
func (s *Store) SaveCursor(ctx context.Context, c Cursor) (bool, error) {
	switch {
	case c.Provider == "" || len(c.Provider) > 32:
		return false, errors.New("saving a catch-up cursor: the provider must be 1-32 bytes")
	case c.Position == "" || len(c.Position) > maxPositionBytes || !printableASCII(c.Position):
		return false, fmt.Errorf("saving the %s catch-up cursor: the position must be 1-%d printable ASCII bytes", c.Provider, maxPositionBytes)
	case c.ReadThrough.IsZero():
		return false, fmt.Errorf("saving the %s catch-up cursor: no read-through time", c.Provider)
	case c.GapFrom.IsZero() != c.GapTo.IsZero():
		return false, fmt.Errorf("saving the %s catch-up cursor: a gap needs both ends", c.Provider)
	}
	now := s.clock()
	rt := c.ReadThrough.UTC().Truncate(time.Microsecond)
	var written bool
	tx := s.db.WithContext(ctx)
	err := func() error {
		res := tx.Exec(`INSERT IGNORE INTO provider_cursors (provider, position, read_through, newest_at, gap_from, gap_to, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, c.Provider, c.Position, rt, timeOrNil(c.NewestAt), timeOrNil(c.GapFrom), timeOrNil(c.GapTo), now)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 1 {
			written = true
			return nil
		}
		res = tx.Exec(`UPDATE provider_cursors SET position = ?, read_through = ?,
				newest_at = GREATEST(COALESCE(newest_at, ?), COALESCE(?, newest_at)),
				gap_from = IF(? IS NULL, gap_from, LEAST(COALESCE(gap_from, ?), ?)),
				gap_to = IF(? IS NULL, gap_to, GREATEST(COALESCE(gap_to, ?), ?)),
				updated_at = ?
			WHERE provider = ? AND read_through <= ?`,
			c.Position, rt,
			timeOrNil(c.NewestAt), timeOrNil(c.NewestAt),
			timeOrNil(c.GapFrom), timeOrNil(c.GapFrom), timeOrNil(c.GapFrom),
			timeOrNil(c.GapTo), timeOrNil(c.GapTo), timeOrNil(c.GapTo),
			now, c.Provider, rt)
		if res.Error != nil {
			return res.Error
		}
		written = res.RowsAffected == 1
		return nil
	}()
	if err != nil {
		return false, fmt.Errorf("saving the %s catch-up cursor: %w", c.Provider, translate(err))
	}
	return written, nil
}

// ClearCursorGap forgets the gap recorded on provider's cursor (an operator
// reconciled the provider since). A provider without a cursor is no error.
func (s *Store) ClearCursorGap(ctx context.Context, provider string) error {
	err := s.db.WithContext(ctx).Exec(`UPDATE provider_cursors SET gap_from = NULL, gap_to = NULL WHERE provider = ?`, provider).Error
	if err != nil {
		return fmt.Errorf("clearing the %s catch-up gap: %w", provider, translate(err))
	}
	return nil
}

// KnownInboundEvents returns which of ids are recorded in inbound_events for
// provider (received before, by the webhook or a catch-up), in one query.
// The answer is a hint that saves work: ApplyInbound still de-duplicates
// exactly.
func (s *Store) KnownInboundEvents(ctx context.Context, provider string, ids []string) (map[string]bool, error) {
	known := make(map[string]bool, len(ids))
	for start := 0; start < len(ids); start += 500 {
		var got []string
		err := s.db.WithContext(ctx).Raw(`SELECT event_id FROM inbound_events WHERE provider = ? AND event_id IN ?`,
			provider, ids[start:min(len(ids), start+500)]).Scan(&got).Error
		if err != nil {
			return nil, fmt.Errorf("looking up %d %s events: %w", len(ids), provider, translate(err))
		}
		for _, id := range got {
			known[id] = true
		}
	}
	return known, nil
}

// TryLock takes the MySQL advisory lock name (GET_LOCK, scoped to this
// database: replicas of one deployment share it, other databases on the
// same server do not) without waiting. ok is false when another session
// holds it. The lock lives on a connection of its own until release is
// called (or that connection drops: then another process may take it).
func (s *Store) TryLock(ctx context.Context, name string) (release func(), ok bool, err error) {
	if name == "" || len(name) > 20 {
		return nil, false, errors.New("advisory lock: the name must be 1-20 bytes")
	}
	conn, err := s.sql.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("advisory lock %s: %w", name, err)
	}
	// The lock name is at most 64 characters: name, then a digest of the
	// database name.
	const lockName = "CONCAT(?, ':', LEFT(SHA1(DATABASE()), 40))"
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", 0)", name).Scan(&got); err != nil {
		_ = conn.Close()
		return nil, false, fmt.Errorf("advisory lock %s: %w", name, err)
	}
	if !got.Valid || got.Int64 != 1 {
		_ = conn.Close()
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(ctx, "DO RELEASE_LOCK("+lockName+")", name); err != nil {
			// Do not hand a connection that may still hold the lock back
			// to the pool: drop it, which frees the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}, true, nil
}
