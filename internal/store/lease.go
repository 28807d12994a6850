package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// ErrBusy reports that another worker holds the lease of a (user, provider)
// pair: it is pushing that user now. Try again later; nothing was changed.
var ErrBusy = errors.New("another worker is pushing this user")

// ErrLeaseLost reports that a push's lease expired or was fenced off (by an
// inbound change, or by another worker after the lease ran out) before its
// outcome was recorded. What the provider holds is then unknown: the link
// was marked so (the push's state as a possible one, the synced version
// lowered) and the push must be tried again.
var ErrLeaseLost = errors.New("the sync lease was lost before the outcome was recorded")

// LinkUpdate is what a worker records on a provider link. Nil fields are
// left as they are.
type LinkUpdate struct {
	Status        string  // required: pending, synced, failed, conflict, deleted
	RemoteID      *string // the remote object's id, once known
	SyncedVersion *int64  // the user version the provider now holds
	// PushedHash is the state the provider is now known to hold.
	PushedHash *string
	// PushedRemoteAt is the provider's own clock when it answered the push
	// (its Date header); nil leaves it as is.
	PushedRemoteAt *time.Time
	// ClearAttempt says the outcome of the push in flight is known (it
	// succeeded, or the provider refused it without executing it, as a
	// 429): the provider no longer "may hold" its state. A push that
	// failed in a way that may have executed keeps the attempt recorded.
	ClearAttempt bool
	// MetadataKeys are the metadata keys the remote object carries; set
	// SetMetadataKeys to write them (nil then means unknown).
	MetadataKeys    []string
	SetMetadataKeys bool
	// LastError is the error to show; nil clears it.
	LastError *string
}

// Attempt describes a push about to be made: recorded on the link before
// the provider is called, so that its outcome is known to be unknown if the
// answer never arrives (the worker dies, the connection drops).
type Attempt struct {
	Version int64
	Hash    string
	Email   string
}

// Plan is what a worker decided after reading the user and its link.
type Plan struct {
	// Skip: nothing to do and nothing to record.
	Skip bool
	// Record, if set, is written without calling the provider (the
	// provider is known to hold the state already). It is written only if
	// no lease is held and the link did not change since it was read.
	Record *LinkUpdate
	// Otherwise the provider is called (PushFunc) under a lease, after
	// Attempt is recorded.
	Attempt Attempt
}

// PlanFunc decides what to do for a user and its link as read now.
type PlanFunc func(u User, l Link) Plan

// PushFunc calls the provider under a lease (seq is its fencing token, unique
// to this attempt: adapters use it in idempotency keys) and says what to
// record. Its error is returned by Sync after the update is recorded.
type PushFunc func(ctx context.Context, u User, l Link, seq int64) (LinkUpdate, error)

// Sync runs one push of user userID to provider, with no database
// transaction (and no row lock) held while the provider is called:
//
//  1. it reads the user (deleted or not) and its link, creating the link if
//     missing, and asks plan what to do;
//  2. to push, it takes the pair's lease in one conditional UPDATE (it must
//     be free, or expired, by MySQL's clock, and the link unchanged since
//     the read), recording plan's Attempt on the link; a lease held by
//     someone else is ErrBusy;
//  3. it calls push with the lease's sequence number (the fencing token);
//  4. it records push's LinkUpdate and releases the lease in one UPDATE that
//     checks the token. If the token no longer matches (the lease expired
//     and another worker took it, or an inbound change fenced it off), it
//     marks the link unknown instead (the attempt's state as possible, the
//     synced version below the attempt's) and returns ErrLeaseLost.
//
// ttl bounds the lease: push must have finished well within it (give its
// context a deadline shorter than ttl). It returns ErrNotFound when no user
// has that id, ErrBusy, ErrLeaseLost, push's error (after recording its
// update), or a database error.
func (s *Store) Sync(ctx context.Context, userID, provider string, ttl time.Duration, plan PlanFunc, push PushFunc) error {
	for range 5 {
		u, l, exists, err := s.readSync(ctx, userID, provider)
		if err != nil {
			return fmt.Errorf("syncing user %s to %s: %w", userID, provider, err)
		}
		l.exists = exists
		p := plan(u, l)
		switch {
		case p.Skip:
			return nil
		case p.Record != nil:
			ok, err := s.recordUnleased(ctx, l, *p.Record)
			if err != nil {
				return fmt.Errorf("syncing user %s to %s: %w", userID, provider, err)
			}
			if ok {
				return nil
			}
			if l.leased(s.clock()) {
				return ErrBusy
			}
			continue // changed since read: look again
		}
		owner := uuid.NewString()
		seq, ok, err := s.claim(ctx, l, p.Attempt, ttl, owner)
		if err != nil {
			return fmt.Errorf("syncing user %s to %s: %w", userID, provider, err)
		}
		if !ok {
			if busy, err := s.leaseHeld(ctx, userID, provider); err != nil || busy {
				if err == nil {
					err = ErrBusy
				}
				return err
			}
			continue
		}
		began := time.Now()
		up, pushErr := push(ctx, u, l, seq)
		took := time.Since(began)
		// Record even when ctx is over (a SIGTERM during the push): the
		// outcome must not be lost.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = s.record(rctx, l, seq, owner, p.Attempt, up)
		cancel()
		s.recordPush(userID, provider, p.Attempt.Version, up, pushErr, err, took)
		if err != nil {
			return fmt.Errorf("syncing user %s to %s: %w", userID, provider, err)
		}
		return pushErr
	}
	return fmt.Errorf("syncing user %s to %s: %w", userID, provider, ErrBusy)
}

// leased reports whether the link's lease is held at now (by the
// application's clock: only a hint, the claim itself uses MySQL's).
func (l Link) leased(now time.Time) bool {
	return l.LeaseUntil != nil && l.LeaseUntil.After(now)
}

const syncSelect = `SELECT u.id, u.email, u.name, u.phone, u.metadata, u.version, u.changed_by, u.api_version, u.api_changed_at,
		u.created_at, u.updated_at, u.deleted_at,
		l.user_id AS l_user_id, l.provider AS l_provider, l.remote_id AS l_remote_id, l.status AS l_status,
		l.synced_version AS l_synced_version, l.pushed_hash AS l_pushed_hash, l.metadata_keys AS l_metadata_keys,
		l.last_inbound_at AS l_last_inbound_at, l.last_error AS l_last_error, l.synced_at AS l_synced_at,
		l.updated_at AS l_updated_at, l.attempt_version AS l_attempt_version, l.attempt_hash AS l_attempt_hash,
		l.attempt_email AS l_attempt_email, l.attempt_at AS l_attempt_at, l.lease_seq AS l_lease_seq,
		l.lease_until AS l_lease_until, l.pushed_remote_at AS l_pushed_remote_at, l.recent_hashes AS l_recent_hashes
	FROM users u LEFT JOIN provider_links l ON l.user_id = u.id AND l.provider = ?
	WHERE u.id = ?`

// readSync reads a user and its link to provider. A missing link is returned
// as the link a new one starts as (pending, nothing synced, sequence 0),
// with exists false: claim creates it.
func (s *Store) readSync(ctx context.Context, userID, provider string) (u User, l Link, exists bool, err error) {
	var rows []syncRow
	if err := s.db.WithContext(ctx).Raw(syncSelect, provider, userID).Scan(&rows).Error; err != nil {
		return User{}, Link{}, false, fmt.Errorf("reading user and link: %w", translate(err))
	}
	if len(rows) == 0 {
		return User{}, Link{}, false, ErrNotFound
	}
	u, l, err = rows[0].split()
	if rows[0].LUserID == nil {
		l = Link{UserID: userID, Provider: provider, Status: LinkPending}
		return u, l, false, err
	}
	return u, l, true, err
}

// claim takes the lease of l's pair if it is free (or expired) and l's
// sequence is still the one read, and records the attempt. A link that did
// not exist is created holding the lease, in the same statement.
func (s *Store) claim(ctx context.Context, l Link, a Attempt, ttl time.Duration, owner string) (int64, bool, error) {
	if !l.exists {
		err := s.db.WithContext(ctx).Exec(`INSERT INTO provider_links (user_id, provider, status, synced_version, updated_at,
				lease_seq, lease_until, lease_owner, attempt_version, attempt_hash, attempt_email, attempt_at, recent_hashes)
			SELECT id, ?, ?, 0, ?, 1, DATE_ADD(NOW(6), INTERVAL ? MICROSECOND), ?, ?, ?, ?, NOW(6), ? FROM users WHERE id = ?`,
			l.Provider, LinkPending, s.clock(), ttl.Microseconds(), owner, a.Version, nullString(a.Hash), a.Email, l.withRecent(a.Hash), l.UserID).Error
		switch {
		case errors.Is(translate(err), ErrConflict):
			return 0, false, nil // created meanwhile: read again
		case err != nil:
			return 0, false, fmt.Errorf("creating link: %w", translate(err))
		}
		return 1, true, nil
	}
	res := s.db.WithContext(ctx).Exec(`UPDATE provider_links FORCE INDEX (PRIMARY)
		SET lease_seq = lease_seq + 1, lease_until = DATE_ADD(NOW(6), INTERVAL ? MICROSECOND), lease_owner = ?,
			attempt_version = ?, attempt_hash = ?, attempt_email = ?, attempt_at = NOW(6), recent_hashes = ?
		WHERE user_id = ? AND provider = ? AND lease_seq = ? AND (lease_until IS NULL OR lease_until <= NOW(6))`,
		ttl.Microseconds(), owner, a.Version, nullString(a.Hash), a.Email, l.withRecent(a.Hash), l.UserID, l.Provider, l.LeaseSeq)
	if res.Error != nil {
		return 0, false, fmt.Errorf("claiming the sync lease: %w", translate(res.Error))
	}
	return l.LeaseSeq + 1, res.RowsAffected == 1, nil
}

// leaseHeld reports whether the pair's lease is held now, by MySQL's clock.
func (s *Store) leaseHeld(ctx context.Context, userID, provider string) (bool, error) {
	var held []int
	err := s.db.WithContext(ctx).Raw(`SELECT 1 FROM provider_links WHERE user_id = ? AND provider = ? AND lease_until > NOW(6)`,
		userID, provider).Scan(&held).Error
	if err != nil {
		return false, fmt.Errorf("reading the sync lease: %w", translate(err))
	}
	return len(held) > 0, nil
}

// recordUnleased writes up if no lease is held and the link is as read.
func (s *Store) recordUnleased(ctx context.Context, l Link, up LinkUpdate) (bool, error) {
	set, err := linkSet(up, s.clock())
	if err != nil {
		return false, err
	}
	set["lease_seq"] = gorm.Expr("lease_seq + 1")
	res := s.db.WithContext(ctx).Table("provider_links FORCE INDEX (PRIMARY)").
		Where("user_id = ? AND provider = ? AND lease_seq = ? AND (lease_until IS NULL OR lease_until <= NOW(6))", l.UserID, l.Provider, l.LeaseSeq).
		Updates(set)
	if res.Error != nil {
		return false, fmt.Errorf("writing link: %w", translate(res.Error))
	}
	return res.RowsAffected == 1, nil
}

// record writes up and releases the lease seq, if it is still held. If not,
// it marks the link unknown (see Sync) and returns ErrLeaseLost.
func (s *Store) record(ctx context.Context, l Link, seq int64, owner string, a Attempt, up LinkUpdate) error {
	set, err := linkSet(up, s.clock())
	if err != nil {
		return err
	}
	set["lease_until"], set["lease_owner"] = nil, nil
	// Moving the sequence on invalidates every read made before this
	// record: a claim based on one fails and reads again.
	set["lease_seq"] = gorm.Expr("lease_seq + 1")
	db := s.db.WithContext(ctx)
	res := db.Table("provider_links FORCE INDEX (PRIMARY)").
		Where("user_id = ? AND provider = ? AND lease_seq = ?", l.UserID, l.Provider, seq).Updates(set)
	if res.Error != nil {
		return fmt.Errorf("writing link: %w", translate(res.Error))
	}
	if res.RowsAffected == 1 {
		return nil
	}
	// Fenced off: the push may have landed before or after whatever was
	// recorded since. Whoever holds the lease now is fenced off too (seq
	// moves on), so nobody records "synced" over this doubt; the lease is
	// released if it is still this push's (an inbound change fenced it).
	err = db.Exec(`UPDATE provider_links FORCE INDEX (PRIMARY)
		SET lease_seq = lease_seq + 1, attempt_version = ?, attempt_hash = ?, attempt_email = ?, attempt_at = NOW(6),
			synced_version = LEAST(synced_version, ?), status = IF(status = ?, ?, status), updated_at = ?,
			lease_until = IF(lease_owner = ?, NULL, lease_until)
		WHERE user_id = ? AND provider = ?`,
		a.Version, nullString(a.Hash), a.Email, max(a.Version-1, 0), LinkSynced, LinkPending, s.clock(), owner, l.UserID, l.Provider).Error
	if err != nil {
		return fmt.Errorf("marking a fenced-off push unknown: %w", translate(err))
	}
	return ErrLeaseLost
}

// SyncLocked pushes with fn under the pair's lease, waiting while another
// holds it, and records fn's update: a simple form of Sync for tools and
// tests that always push. The attempt recorded is the user's version with
// no hash, and is cleared when fn succeeds.
func (s *Store) SyncLocked(ctx context.Context, userID, provider string, fn func(ctx context.Context, u User, l Link) (LinkUpdate, error)) error {
	wait := time.Millisecond
	for {
		err := s.Sync(ctx, userID, provider, time.Minute, func(u User, _ Link) Plan {
			return Plan{Attempt: Attempt{Version: u.Version}}
		}, func(ctx context.Context, u User, l Link, _ int64) (LinkUpdate, error) {
			up, err := fn(ctx, u, l)
			up.ClearAttempt = up.ClearAttempt || err == nil
			return up, err
		})
		if !errors.Is(err, ErrBusy) && !errors.Is(err, ErrLeaseLost) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// syncRow is a user joined with one of its links (nil columns: no link).
type syncRow struct {
	ID, Email, Name, Phone, Metadata, ChangedBy string
	Version                                     int64
	APIVersion                                  *int64
	APIChangedAt                                *time.Time
	CreatedAt, UpdatedAt                        time.Time
	DeletedAt                                   *time.Time

	LUserID, LProvider, LStatus *string
	LRemoteID                   *string
	LSyncedVersion              *int64
	LPushedHash, LMetadataKeys  *string
	LLastInboundAt              *time.Time
	LLastError                  *string
	LSyncedAt                   *time.Time
	LUpdatedAt                  *time.Time
	LAttemptVersion             *int64
	LAttemptHash, LAttemptEmail *string
	LAttemptAt                  *time.Time
	LLeaseSeq                   *int64
	LLeaseUntil                 *time.Time
	LPushedRemoteAt             *time.Time
	LRecentHashes               *string
}

func (r syncRow) split() (User, Link, error) {
	u, err := userRow{ID: r.ID, Email: r.Email, Name: r.Name, Phone: r.Phone, Metadata: r.Metadata, Version: r.Version,
		ChangedBy: r.ChangedBy, APIVersion: r.APIVersion, APIChangedAt: r.APIChangedAt,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, DeletedAt: r.DeletedAt}.user()
	l := Link{UserID: deref(r.LUserID), Provider: deref(r.LProvider), RemoteID: r.LRemoteID, Status: deref(r.LStatus),
		PushedHash: r.LPushedHash, MetadataKeys: r.LMetadataKeys,
		LastInboundAt: r.LLastInboundAt, LastError: r.LLastError, SyncedAt: r.LSyncedAt,
		AttemptVersion: r.LAttemptVersion, AttemptHash: r.LAttemptHash, AttemptEmail: r.LAttemptEmail, AttemptAt: r.LAttemptAt,
		LeaseUntil: r.LLeaseUntil, PushedRemoteAt: r.LPushedRemoteAt, RecentHashes: r.LRecentHashes}
	if r.LSyncedVersion != nil {
		l.SyncedVersion = *r.LSyncedVersion
	}
	if r.LLeaseSeq != nil {
		l.LeaseSeq = *r.LLeaseSeq
	}
	if r.LUpdatedAt != nil {
		l.UpdatedAt = *r.LUpdatedAt
	}
	return u, l, err
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// linkSet is the column map of up.
func linkSet(up LinkUpdate, now time.Time) (map[string]any, error) {
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
	if up.PushedRemoteAt != nil {
		set["pushed_remote_at"] = up.PushedRemoteAt.UTC()
	}
	if up.ClearAttempt {
		set["attempt_version"], set["attempt_hash"], set["attempt_email"], set["attempt_at"] = nil, nil, nil, nil
	}
	if up.SetMetadataKeys {
		if up.MetadataKeys == nil {
			set["metadata_keys"] = nil
		} else {
			b, err := json.Marshal(up.MetadataKeys)
			if err != nil {
				return nil, err
			}
			set["metadata_keys"] = string(b)
		}
	}
	return set, nil
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

// FailLink marks the link of userID to provider failed with reason (creating
// it if missing), whatever its state: for a message the worker gives up on
// without a push outcome to record (RabbitMQ would dead-letter it behind
// Tandem's back otherwise). It returns ErrNotFound when no user has that id.
func (s *Store) FailLink(ctx context.Context, userID, provider, reason string) error {
	now := s.clock()
	res := s.db.WithContext(ctx).Exec(`INSERT INTO provider_links (user_id, provider, status, synced_version, last_error, updated_at)
		SELECT id, ?, ?, 0, ?, ? FROM users WHERE id = ?
		ON DUPLICATE KEY UPDATE status = VALUES(status), last_error = VALUES(last_error), updated_at = VALUES(updated_at)`,
		provider, LinkFailed, reason, now, userID)
	if res.Error != nil {
		return fmt.Errorf("marking the link of user %s to %s failed: %w", userID, provider, translate(res.Error))
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("marking the link of user %s to %s failed: %w", userID, provider, ErrNotFound)
	}
	s.addHistory(HistoryEntry{UserID: userID, Kind: HistoryPush, Provider: provider, Outcome: LinkFailed, Error: reason})
	return nil
}
