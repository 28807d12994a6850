package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
)

// LinkUpdate is what a worker records on a provider link after a push. Nil
// fields are left as they are.
type LinkUpdate struct {
	Status        string  // required: pending, synced, failed, deleted
	RemoteID      *string // the remote object's id, once known
	SyncedVersion *int64  // the user version the provider now holds
	PushedHash    *string // hash of the state pushed
	// ForgetPushedHash clears pushed_hash: a push failed, perhaps after the
	// provider applied it, so what the provider holds is unknown (a later
	// push of the state last recorded must not be skipped as done).
	ForgetPushedHash bool
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
	called := false
	try := func(tx *gorm.DB) error {
		now := s.clock()
		res := tx.Exec(`INSERT INTO provider_links (user_id, provider, status, synced_version, updated_at)
			SELECT id, ?, ?, 0, ? FROM users WHERE id = ?
			ON DUPLICATE KEY UPDATE provider_links.user_id = provider_links.user_id`,
			provider, LinkPending, now, userID)
		if res.Error != nil {
			return fmt.Errorf("creating link: %w", translate(res.Error))
		}
		// The insert above holds the link row's exclusive lock (a new row,
		// or the duplicate ON DUPLICATE KEY UPDATE locked) until commit:
		// read it and the user as committed now, in one round trip.
		var rows []syncRow
		if err := tx.Raw(`SELECT u.id, u.email, u.name, u.phone, u.metadata, u.version, u.changed_by, u.created_at, u.updated_at, u.deleted_at,
				l.user_id AS l_user_id, l.provider AS l_provider, l.remote_id AS l_remote_id, l.status AS l_status,
				l.synced_version AS l_synced_version, l.pushed_hash AS l_pushed_hash, l.metadata_keys AS l_metadata_keys,
				l.last_inbound_at AS l_last_inbound_at, l.last_error AS l_last_error, l.synced_at AS l_synced_at,
				l.updated_at AS l_updated_at
			FROM provider_links l JOIN users u ON u.id = l.user_id
			WHERE l.user_id = ? AND l.provider = ?`, userID, provider).Scan(&rows).Error; err != nil {
			return fmt.Errorf("reading user and link: %w", translate(err))
		}
		if len(rows) == 0 {
			return ErrNotFound
		}
		u, l, err := rows[0].split()
		if err != nil {
			return err
		}
		called = true
		up, err := fn(ctx, u, l)
		fnErr = err
		if up.Status == "" {
			return nil
		}
		return writeLink(tx, userID, provider, up, s.clock())
	}
	var err error
	for attempt := 0; ; attempt++ {
		err = s.db.WithContext(ctx).Transaction(try) // READ COMMITTED: the session default
		// Workers racing to create the same new link can deadlock in the
		// insert (InnoDB's duplicate-key locks); fn has not run then, so
		// the whole transaction is safe to try again.
		if err == nil || called || !isDeadlock(err) || attempt == 4 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("syncing user %s to %s: %w", userID, provider, err)
	}
	return fnErr
}

func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// syncRow is a user joined with one of its links.
type syncRow struct {
	ID, Email, Name, Phone, Metadata, ChangedBy string
	Version                                     int64
	CreatedAt, UpdatedAt                        time.Time
	DeletedAt                                   *time.Time

	LUserID, LProvider, LStatus string
	LRemoteID                   *string
	LSyncedVersion              int64
	LPushedHash, LMetadataKeys  *string
	LLastInboundAt              *time.Time
	LLastError                  *string
	LSyncedAt                   *time.Time
	LUpdatedAt                  time.Time
}

func (r syncRow) split() (User, Link, error) {
	u, err := userRow{ID: r.ID, Email: r.Email, Name: r.Name, Phone: r.Phone, Metadata: r.Metadata, Version: r.Version,
		ChangedBy: r.ChangedBy, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, DeletedAt: r.DeletedAt}.user()
	return u, Link{UserID: r.LUserID, Provider: r.LProvider, RemoteID: r.LRemoteID, Status: r.LStatus,
		SyncedVersion: r.LSyncedVersion, PushedHash: r.LPushedHash, MetadataKeys: r.LMetadataKeys,
		LastInboundAt: r.LLastInboundAt, LastError: r.LLastError, SyncedAt: r.LSyncedAt, UpdatedAt: r.LUpdatedAt}, err
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
	if up.ForgetPushedHash {
		set["pushed_hash"] = nil
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
	// FORCE INDEX: on a small table MariaDB may plan this as a range scan
	// of provider_links_remote, locking rows other workers need.
	res := tx.Table("provider_links FORCE INDEX (PRIMARY)").Where("user_id = ? AND provider = ?", userID, provider).Updates(set)
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
