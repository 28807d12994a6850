package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// LinkUpdate is what a worker records on a provider link after a push. Nil
// fields are left as they are.
type LinkUpdate struct {
	Status        string  // required: pending, synced, failed, deleted
	RemoteID      *string // the remote object's id, once known
	SyncedVersion *int64  // the user version the provider now holds
	PushedHash    *string // hash of the state pushed
	// MetadataKeys are the metadata keys the remote object carries; set
	// SetMetadataKeys to write them (nil then means unknown).
	MetadataKeys    []string
	SetMetadataKeys bool
	// LastError is the error to show; nil clears it.
	LastError *string
}

// SyncFunc pushes u to a provider while the link is locked and says what to
// record. Its error is returned by SyncLocked after the update is committed.
type SyncFunc func(ctx context.Context, u User, l Link) (LinkUpdate, error)

// SyncLocked serialises work on one (user, provider) pair across every
// worker process: it creates the link if missing, locks it (SELECT … FOR
// UPDATE), reads the user as committed now (deleted users too), calls fn,
// writes fn's LinkUpdate and commits. fn runs while the lock is held, so two
// workers never push the same user to the same provider at once, and the
// state pushed is never older than the state read by an earlier push.
//
// It returns ErrNotFound when no user has that id (deleted or not), fn's
// error (after committing its update), or the error of the update.
func (s *Store) SyncLocked(ctx context.Context, userID, provider string, fn SyncFunc) error {
	var fnErr error
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.clock()
		res := tx.Exec(`INSERT INTO provider_links (user_id, provider, status, synced_version, updated_at)
			SELECT id, ?, ?, 0, ? FROM users WHERE id = ?
			ON DUPLICATE KEY UPDATE provider_links.user_id = provider_links.user_id`,
			provider, LinkPending, now, userID)
		if res.Error != nil {
			return fmt.Errorf("creating link: %w", translate(res.Error))
		}
		var l Link
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("user_id = ? AND provider = ?", userID, provider).Take(&l).Error; err != nil {
			return translate(err)
		}
		var row userRow
		if err := tx.Where("id = ?", userID).Take(&row).Error; err != nil {
			return fmt.Errorf("reading user: %w", translate(err))
		}
		u, err := row.user()
		if err != nil {
			return err
		}
		up, err := fn(ctx, u, l)
		fnErr = err
		if up.Status == "" {
			return nil
		}
		return writeLink(tx, userID, provider, up, s.clock())
	}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("syncing user %s to %s: %w", userID, provider, err)
	}
	return fnErr
}

func writeLink(tx *gorm.DB, userID, provider string, up LinkUpdate, now time.Time) error {
	set := map[string]any{"status": up.Status, "last_error": up.LastError, "updated_at": now}
	if up.RemoteID != nil {
		set["remote_id"] = *up.RemoteID
	}
	if up.SyncedVersion != nil {
		set["synced_version"] = *up.SyncedVersion
		set["synced_at"] = now
	}
	if up.PushedHash != nil {
		set["pushed_hash"] = *up.PushedHash
	}
	if up.SetMetadataKeys {
		if up.MetadataKeys == nil {
			set["metadata_keys"] = nil
		} else {
			b, err := json.Marshal(up.MetadataKeys)
			if err != nil {
				return err
			}
			set["metadata_keys"] = string(b)
		}
	}
	res := tx.Model(&Link{}).Where("user_id = ? AND provider = ?", userID, provider).Updates(set)
	if res.Error != nil {
		return fmt.Errorf("writing link: %w", translate(res.Error))
	}
	return nil
}

// MetadataKeyList decodes the link's stored metadata keys (nil = unknown).
func (l Link) MetadataKeyList() []string {
	if l.MetadataKeys == nil {
		return nil
	}
	var keys []string
	if err := json.Unmarshal([]byte(*l.MetadataKeys), &keys); err != nil {
		return nil
	}
	if keys == nil {
		keys = []string{}
	}
	return keys
}
