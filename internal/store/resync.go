package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// OriginResync marks the outbox rows Resync writes: a push an operator asked
// for (REST, tandemctl resync, tandemctl reconcile -repair), not a change of
// the user.
const OriginResync = "resync"

// Resync makes provider's worker push userID again even though Tandem
// believes the provider holds its state (someone edited the remote object
// by hand, a reconcile found drift). In one transaction it forgets the state
// the link says the provider holds (pushed_hash), lowers the link's synced
// version below the user's, marks it pending, fences off a push in flight
// (its record then counts as unknown and is retried), and writes a
// user.updated outbox row (origin OriginResync) at the user's version; the
// other providers' workers skip that row, since their links cover it.
//
// A deleted user's delete is pushed again. It returns ErrNotFound if the
// user never existed. A user with no link to provider yet gets one on the
// push (linked or created as for a new user).
func (s *Store) Resync(ctx context.Context, userID, provider string) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row userRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", userID).Take(&row).Error; err != nil {
			return fmt.Errorf("resync of user %s: %w", userID, translate(err))
		}
		u, err := row.user()
		if err != nil {
			return err
		}
		err = tx.Exec(`UPDATE provider_links FORCE INDEX (PRIMARY)
			SET pushed_hash = NULL, synced_version = LEAST(synced_version, ?), status = ?, last_error = NULL,
				lease_seq = lease_seq + 1, updated_at = ?
			WHERE user_id = ? AND provider = ?`,
			max(u.Version-1, 0), LinkPending, s.clock(), userID, provider).Error
		if err != nil {
			return fmt.Errorf("resync of user %s: %w", userID, translate(err))
		}
		typ := EventUserUpdated
		if u.DeletedAt != nil {
			typ = EventUserDeleted
		}
		ev := s.newEvent(u, typ, OriginResync)
		ev.CreatedAt = s.clock() // the request's time, not the change's: the outbox's age counts from it
		if err := tx.Create(ev).Error; err != nil {
			return fmt.Errorf("resync of user %s: inserting outbox row: %w", userID, translate(err))
		}
		return nil
	})
	if err == nil {
		s.notify()
		s.addHistory(HistoryEntry{UserID: userID, Kind: HistoryResync, Provider: provider})
	}
	return err
}
