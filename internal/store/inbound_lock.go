package store

import (
	"errors"
	"fmt"

	"gorm.io/gorm/clause"
)

// lockLinkedSQL locks a link, by its primary key, and then its user, in one
// statement (STRAIGHT_JOIN keeps the link → user order every writer keeps).
// Links are only ever locked through their primary key: a lock taken through
// the (provider, remote_id) index first would deadlock with a writer that
// holds the row and then needs that index.
const lockLinkedSQL = `SELECT l.user_id, l.provider, l.remote_id, l.status, l.synced_version, l.pushed_hash,
	l.metadata_keys, l.last_inbound_at, l.last_error, l.synced_at, l.updated_at,
	l.attempt_version, l.attempt_hash, l.attempt_email, l.attempt_at, l.lease_seq, l.lease_until, l.pushed_remote_at, l.recent_hashes,
	u.id, u.email, u.name, u.phone, u.metadata, u.version, u.changed_by, u.api_version, u.api_changed_at,
	u.created_at, u.updated_at, u.deleted_at
	FROM provider_links l STRAIGHT_JOIN users u ON u.id = l.user_id
	WHERE l.user_id = ? AND l.provider = ? FOR UPDATE`

// lockLinked locks the link of the event's remote object and its user
// (deleted or not). It tries the user the object is tagged with first (one
// statement), else looks the link up by remote id and then locks it.
func (t *inboundTx) lockLinked() (Link, User, bool, error) {
	if t.ev.UserID != "" {
		l, u, found, err := t.lockLinkedUser(t.ev.UserID)
		if err != nil || found && l.RemoteID != nil && *l.RemoteID == t.ev.RemoteID {
			return l, u, found, err
		}
	}
	for range 3 {
		var ids []string
		err := t.tx.Model(&Link{}).Where("provider = ? AND remote_id = ?", t.provider, t.ev.RemoteID).Pluck("user_id", &ids).Error
		if err != nil {
			return Link{}, User{}, false, fmt.Errorf("looking up link: %w", translate(err))
		}
		if len(ids) == 0 {
			return Link{}, User{}, false, nil
		}
		l, u, found, err := t.lockLinkedUser(ids[0])
		if err != nil || found && l.RemoteID != nil && *l.RemoteID == t.ev.RemoteID {
			return l, u, found, err
		}
		// Re-pointed between the lookup and the lock: look again.
	}
	return Link{}, User{}, false, fmt.Errorf("%w: the link of %s kept changing", errRaceLost, t.ev.RemoteID)
}

// lockLinkedUser locks the link of user id and the user.
func (t *inboundTx) lockLinkedUser(id string) (Link, User, bool, error) {
	rows, err := t.tx.Raw(lockLinkedSQL, id, t.provider).Rows()
	if err != nil {
		return Link{}, User{}, false, fmt.Errorf("locking link: %w", translate(err))
	}
	defer rows.Close()
	if !rows.Next() {
		return Link{}, User{}, false, translate(rows.Err())
	}
	var l Link
	var r userRow
	if err := rows.Scan(&l.UserID, &l.Provider, &l.RemoteID, &l.Status, &l.SyncedVersion, &l.PushedHash,
		&l.MetadataKeys, &l.LastInboundAt, &l.LastError, &l.SyncedAt, &l.UpdatedAt,
		&l.AttemptVersion, &l.AttemptHash, &l.AttemptEmail, &l.AttemptAt, &l.LeaseSeq, &l.LeaseUntil, &l.PushedRemoteAt, &l.RecentHashes,
		&r.ID, &r.Email, &r.Name, &r.Phone, &r.Metadata, &r.Version, &r.ChangedBy, &r.APIVersion, &r.APIChangedAt,
		&r.CreatedAt, &r.UpdatedAt, &r.DeletedAt); err != nil {
		return Link{}, User{}, false, fmt.Errorf("reading link: %w", err)
	}
	u, err := r.user()
	if err != nil {
		return Link{}, User{}, false, err
	}
	return l, u, true, rows.Close()
}

// lockLink reads the link of user id FOR UPDATE.
func (t *inboundTx) lockLink(id string) (Link, bool, error) {
	var l Link
	err := t.tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("user_id = ? AND provider = ?", id, t.provider).Take(&l).Error
	if err != nil {
		if errors.Is(translate(err), ErrNotFound) {
			return Link{}, false, nil
		}
		return Link{}, false, fmt.Errorf("locking link: %w", translate(err))
	}
	return l, true, nil
}

// emailOwner returns the id of the live user holding email (other than
// except), or "".
func (t *inboundTx) emailOwner(email, except string) (string, error) {
	var ids []string
	q := t.tx.Model(&userRow{}).Where("live_email = LOWER(?)", email)
	if except != "" {
		q = q.Where("id <> ?", except)
	}
	if err := q.Limit(1).Pluck("id", &ids).Error; err != nil {
		return "", fmt.Errorf("looking up email: %w", translate(err))
	}
	if len(ids) == 0 {
		return "", nil
	}
	return ids[0], nil
}
