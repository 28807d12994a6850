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

// LinkedUser is a user and its link to one provider, as reconcile reads
// them: the link names a remote object.
type LinkedUser struct {
	User User // ID, Email, Name, Phone, Metadata, Version, DeletedAt
	// RemoteID, Status and SyncedVersion are the link's.
	RemoteID      string
	Status        string
	SyncedVersion int64
	// Unsure: a push's outcome is unknown (the link's attempt is set).
	Unsure bool
	// Leased: a worker holds the pair's lease now (MySQL's clock).
	Leased bool
	// LinkUpdatedAt is when the link last changed.
	LinkUpdatedAt time.Time
}

// Settled reports whether Tandem believes the provider holds the user's
// current state: the link is synced at the user's version, and no push is
// in flight or of unknown outcome. Only then is a difference with the
// remote object drift; otherwise a push is owed (or failed, or in
// conflict) and the link shows it.
func (l LinkedUser) Settled() bool {
	return l.Status == LinkSynced && l.SyncedVersion >= l.User.Version && !l.Unsure && !l.Leased
}

// LinkedUsers returns up to limit links of provider that name a remote
// object, with their users (deleted users and links too: their objects are
// not anyone else's), in user id order after afterUserID: one indexed read
// per page.
func (s *Store) LinkedUsers(ctx context.Context, provider, afterUserID string, limit int) ([]LinkedUser, error) {
	rows, err := s.sql.QueryContext(ctx, `
		SELECT u.id, u.email, u.name, u.phone, u.metadata, u.version, u.deleted_at,
			l.remote_id, l.status, l.synced_version, l.attempt_hash IS NOT NULL OR l.attempt_version IS NOT NULL,
			COALESCE(l.lease_until > NOW(6), FALSE), l.updated_at
		FROM provider_links l FORCE INDEX (PRIMARY) JOIN users u ON u.id = l.user_id
		WHERE l.user_id > ? AND l.provider = ? AND l.remote_id IS NOT NULL
		ORDER BY l.user_id LIMIT ?`, afterUserID, provider, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the links of %s: %w", provider, translate(err))
	}
	defer rows.Close()
	var out []LinkedUser
	for rows.Next() {
		var (
			l       LinkedUser
			md      string
			deleted sql.NullTime
		)
		if err := rows.Scan(&l.User.ID, &l.User.Email, &l.User.Name, &l.User.Phone, &md, &l.User.Version, &deleted,
			&l.RemoteID, &l.Status, &l.SyncedVersion, &l.Unsure, &l.Leased, &l.LinkUpdatedAt); err != nil {
			return nil, fmt.Errorf("reading the links of %s: %w", provider, translate(err))
		}
		if err := json.Unmarshal([]byte(md), &l.User.Metadata); err != nil {
			return nil, fmt.Errorf("decoding metadata of user %s: %w", l.User.ID, err)
		}
		if l.User.Metadata == nil {
			l.User.Metadata = map[string]string{}
		}
		if deleted.Valid {
			t := deleted.Time.UTC()
			l.User.DeletedAt = &t
		}
		l.LinkUpdatedAt = l.LinkUpdatedAt.UTC()
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the links of %s: %w", provider, translate(err))
	}
	return out, nil
}

// ForgetRemote is a resync (see Resync) of a user whose remote object is
// gone: in one transaction it clears the link's remote id (if it is still
// goneRemoteID), the state and metadata keys the provider was believed to
// hold, marks the link pending, fences off a push in flight, and writes a
// user.updated outbox row (origin OriginResync). The worker then finds or
// creates the user's object as for a new user (link before create). A
// push whose outcome is unknown stays recorded, so the worker still looks
// for what it may have made; without one, the link is marked as after a
// push of unknown outcome too (attempt version and email: the user's), so
// that the worker looks for an object tagged with the user before it
// creates one, and keys the create to its attempt: the plain create key
// was spent by the first create, and Stripe would answer a second use
// within 24 hours with the gone customer. It returns false, and changes
// nothing, when
// the link no longer names goneRemoteID or the user is deleted; ErrNotFound
// when the user never existed.
func (s *Store) ForgetRemote(ctx context.Context, userID, provider, goneRemoteID string) (bool, error) {
	done := false
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row userRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", userID).Take(&row).Error; err != nil {
			return translate(err)
		}
		u, err := row.user()
		if err != nil {
			return err
		}
		if u.DeletedAt != nil {
			return nil
		}
		reason := fmt.Sprintf("%s object %s is gone (found by tandemctl reconcile): finding or creating another", provider, goneRemoteID)
		res := tx.Exec(`UPDATE provider_links FORCE INDEX (PRIMARY)
			SET remote_id = NULL, pushed_hash = NULL, metadata_keys = NULL, recent_hashes = NULL, pushed_remote_at = NULL,
				synced_version = 0, status = ?, last_error = ?, lease_seq = lease_seq + 1, updated_at = ?,
				attempt_email = IF(attempt_hash IS NULL AND attempt_version IS NULL, ?, attempt_email),
				attempt_version = IF(attempt_hash IS NULL AND attempt_version IS NULL, ?, attempt_version)
			WHERE user_id = ? AND provider = ? AND remote_id = ?`,
			LinkPending, reason, s.clock(), u.Email, u.Version, userID, provider, goneRemoteID)
		if res.Error != nil {
			return translate(res.Error)
		}
		if res.RowsAffected == 0 {
			return nil
		}
		ev := s.newEvent(u, EventUserUpdated, OriginResync)
		ev.CreatedAt = s.clock()
		if err := tx.Create(ev).Error; err != nil {
			return fmt.Errorf("inserting outbox row: %w", translate(err))
		}
		done = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("forgetting %s object %s of user %s: %w", provider, goneRemoteID, userID, err)
	}
	if done {
		s.notify()
	}
	return done, nil
}
