package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// InboundOutcome is what applying one inbound event did. The values are
// recorded in inbound_events.outcome and used as metric labels.
type InboundOutcome string

// Outcomes of ApplyInbound.
const (
	// InboundApplied: the user now holds the remote state (version + 1).
	InboundApplied InboundOutcome = "applied"
	// InboundUnchanged: the remote state equals the user's; nothing to
	// write but the link (synced at the user's version).
	InboundUnchanged InboundOutcome = "unchanged"
	// InboundCreated: a remote object Tandem did not know, with an email no
	// live user has: a user was created (version 1) and linked to it.
	InboundCreated InboundOutcome = "created"
	// InboundLinked: a remote object Tandem did not know was linked to the
	// live user with its email (or the user its tag names), which had no
	// remote object for this provider, and its state applied.
	InboundLinked InboundOutcome = "linked"
	// InboundDeleted: the remote object was deleted: the user was
	// soft-deleted (version + 1) and the link marked deleted.
	InboundDeleted InboundOutcome = "deleted"
	// InboundDuplicate: the event id was recorded before; nothing done.
	InboundDuplicate InboundOutcome = "duplicate"
	// InboundStale: the event is older than the last one applied for the
	// link, or a re-read found the object gone (its deletion event applies).
	InboundStale InboundOutcome = "stale"
	// InboundEcho: the event reports Tandem's own push (a Tandem
	// idempotency key, or the state Tandem last pushed): nothing applied.
	InboundEcho InboundOutcome = "echo"
	// InboundConflict: the event cannot be applied without an operator: its
	// email belongs to another live user, or the object claims a user that
	// is linked to another object. The link (if any) is marked conflict
	// with the reason in last_error; the payload is kept in inbound_events.
	InboundConflict InboundOutcome = "conflict"
	// InboundInvalid: the remote state cannot be stored as a user (no
	// email, a field longer than its column). Handled like a conflict.
	InboundInvalid InboundOutcome = "invalid"
	// InboundIgnoredNoEmail: an unknown remote object without an email:
	// there is no user to link it to, and no user can be made of it.
	InboundIgnoredNoEmail InboundOutcome = "ignored_no_email"
	// InboundIgnoredUnknown: the deletion (or a Tandem echo) of a remote
	// object Tandem does not know.
	InboundIgnoredUnknown InboundOutcome = "ignored_unknown"
	// InboundIgnoredDeleted: the user or its link is already deleted.
	InboundIgnoredDeleted InboundOutcome = "ignored_deleted"
)

// InboundPushMargin bounds the clock difference between a provider and
// Tandem. An inbound event whose time is not later than the link's last sync
// (synced_at) by more than this may predate Tandem's last push, which has
// since overwritten it in the provider: ApplyInbound then re-reads the
// object rather than trust the event.
const InboundPushMargin = 2 * time.Second

// Column limits of a user, in characters (metadata: bytes of its JSON).
const (
	maxEmailChars    = 254
	maxNameChars     = 256
	maxPhoneChars    = 32
	maxMetadataBytes = 1<<24 - 1 // MEDIUMTEXT
	maxRemoteIDBytes = 255
	maxEventIDBytes  = 255
	maxEventTypeLen  = 64
)

// RemoteState is the state of a remote object, mapped to a user's fields.
type RemoteState struct {
	Email    string
	Name     string
	Phone    string
	Metadata map[string]string
	// Hash is the fingerprint of this state as the pushing side computes it
	// (integrations.Customer.Hash); it is compared with, and stored as, the
	// link's pushed_hash. Unused with KeepMetadata.
	Hash string
	// KeepMetadata says the provider does not hold metadata: Metadata is
	// ignored, the user keeps its own (a user made from the state gets
	// none), and the link's metadata keys are left alone.
	KeepMetadata bool
	// HashWith, required with KeepMetadata, is the fingerprint of this
	// state holding the given metadata (the user's): the state as the
	// pushing side would compute it.
	HashWith func(metadata map[string]string) string
}

// resolve returns the state the user would take when it holds md: st itself,
// or with KeepMetadata, st holding md.
func (st RemoteState) resolve(md map[string]string) (RemoteState, error) {
	if !st.KeepMetadata {
		return st, nil
	}
	if st.HashWith == nil {
		return st, errors.New("a remote state without metadata needs HashWith")
	}
	st.Metadata = maps.Clone(md)
	st.Hash = st.HashWith(md)
	return st, nil
}

// InboundChange is one verified inbound event, as ApplyInbound needs it.
type InboundChange struct {
	EventID    string    // the provider's event id: the de-duplication key (ASCII, ≤ 255)
	EventType  string    // the provider's event type, for the log (ASCII, ≤ 64)
	Deleted    bool      // the remote object was deleted (else created or updated)
	RemoteID   string    // the remote object's id (ASCII, ≤ 255)
	UserID     string    // the Tandem user id the object is tagged with, "" if none
	OccurredAt time.Time // the provider's time of the change
	Echo       bool      // a request of Tandem's caused the event
	State      RemoteState
	Payload    []byte // the raw event, kept when it ends in conflict or invalid
}

// RefetchFunc reads the remote object as the provider holds it now; found is
// false when it is gone. ApplyInbound calls it, while holding the link's
// lock, to settle a tie with the last applied event or an event that may
// predate the last push. Its error aborts ApplyInbound.
type RefetchFunc func(ctx context.Context) (state RemoteState, found bool, err error)

// InboundResult says what ApplyInbound did.
type InboundResult struct {
	Outcome InboundOutcome
	UserID  string // the user the event concerned, "" if none
	Version int64  // that user's version afterwards (0 if none)
	Detail  string // why, for outcomes other than applied, unchanged, created, linked, deleted
	// Refetched reports that the remote object was re-read (refetch called).
	Refetched bool
}

// errRaceLost asks ApplyInbound to run its transaction again: a concurrent
// transaction linked the same remote object first.
var errRaceLost = errors.New("lost a race for a provider link")

// ApplyInbound applies one verified inbound event of provider, once and in
// order, in one transaction, and writes no outbox row (an inbound change is
// not published: the provider already holds it, and publishing it would
// start an echo loop):
//
//  1. it locks the link of the remote object (found through the user the
//     object is tagged with, else by remote id; always through the link's
//     primary key) and then its user: the link before the user, the order
//     every writer keeps;
//  2. it records (provider, event id) in inbound_events before it writes
//     anything or calls refetch; a recorded id (or one a concurrent
//     transaction is recording: the unique key makes it wait) is
//     InboundDuplicate, and nothing is changed;
//  3. an echo of Tandem's own request is InboundEcho; an event of a link or
//     user already deleted is InboundIgnoredDeleted; a deletion soft-deletes
//     the user (InboundDeleted);
//  4. an event older than the link's last applied one is InboundStale, and so
//     is one older (by more than InboundPushMargin) than an API change of
//     the user this provider does not hold yet: the later write wins, by
//     time, and the worker's pending push overwrites the remote object
//     (a change applied from another provider's webhook is not pushed
//     here, so it does not count); on a
//     tie, or when the event may predate Tandem's last push (see
//     InboundPushMargin), refetch supplies the state to apply instead;
//  5. a state equal to the one Tandem last pushed is InboundEcho;
//  6. otherwise the user takes the remote email, name, phone and metadata
//     (version + 1 if that changes anything) and the link records the
//     version, the state's hash and metadata keys as synced.
//
// A state with KeepMetadata (a provider that holds no metadata) leaves the
// user's metadata and the link's metadata keys as they are, and is compared
// with the pushed state as holding the user's metadata.
//
// An unknown remote object is linked to the live user with its email when
// that user has no remote object for this provider (InboundLinked), or
// becomes a new user (InboundCreated); one without an email is
// InboundIgnoredNoEmail. An email that belongs to another live user is
// InboundConflict: nothing of the event is applied, the link is marked
// conflict with the reason, the payload is kept.
//
// A deadlock, or a race lost to a concurrent transaction linking the same
// object, runs the transaction again (up to 4 times). It returns an error
// only when the event could not be handled (database or refetch failure, an
// invalid change); then nothing is committed, so a redelivery applies it.
func (s *Store) ApplyInbound(ctx context.Context, provider string, ev InboundChange, refetch RefetchFunc) (InboundResult, error) {
	if err := checkChange(provider, ev); err != nil {
		return InboundResult{}, err
	}
	ev.OccurredAt = ev.OccurredAt.UTC().Truncate(time.Microsecond)
	// Without metadata, a user made from the state gets none; a known user's
	// is filled in once locked.
	st, err := ev.State.resolve(nil)
	if err != nil {
		return InboundResult{}, fmt.Errorf("applying %s event %s: %w", provider, ev.EventID, err)
	}
	ev.State = st
	if len(ev.UserID) > 36 || !printableASCII(ev.UserID) {
		ev.UserID = "" // not an id Tandem made: no user is tagged
	}
	for attempt := 1; ; attempt++ {
		res, err := s.applyInbound(ctx, provider, ev, refetch)
		if err != nil && attempt < 4 && retryable(err) {
			continue
		}
		if err != nil {
			return InboundResult{}, fmt.Errorf("applying %s event %s: %w", provider, ev.EventID, err)
		}
		return res, nil
	}
}

func checkChange(provider string, ev InboundChange) error {
	switch {
	case provider == "":
		return errors.New("applying inbound event: no provider")
	case ev.EventID == "" || len(ev.EventID) > maxEventIDBytes || !printableASCII(ev.EventID):
		return fmt.Errorf("applying %s event %q: the id must be 1-%d printable ASCII bytes", provider, ev.EventID, maxEventIDBytes)
	case len(ev.EventType) > maxEventTypeLen || !printableASCII(ev.EventType):
		return fmt.Errorf("applying %s event %s: the type must be at most %d printable ASCII bytes", provider, ev.EventID, maxEventTypeLen)
	case ev.RemoteID == "" || len(ev.RemoteID) > maxRemoteIDBytes || !printableASCII(ev.RemoteID):
		return fmt.Errorf("applying %s event %s: the remote id must be 1-%d printable ASCII bytes", provider, ev.EventID, maxRemoteIDBytes)
	case ev.OccurredAt.IsZero():
		return fmt.Errorf("applying %s event %s: no time of occurrence", provider, ev.EventID)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// retryable reports errors worth running the transaction again for: a lost
// race for a link, an InnoDB deadlock.
func retryable(err error) bool {
	var me *mysql.MySQLError
	return errors.Is(err, errRaceLost) || errors.As(err, &me) && me.Number == 1213
}

// inboundTx is one run of ApplyInbound's transaction.
type inboundTx struct {
	s        *Store
	tx       *gorm.DB
	provider string
	ev       InboundChange
	refetch  RefetchFunc
	now      time.Time
	res      InboundResult
	payload  bool // keep the payload in inbound_events
}

func (s *Store) applyInbound(ctx context.Context, provider string, ev InboundChange, refetch RefetchFunc) (InboundResult, error) {
	var res InboundResult
	duplicate := errors.New("duplicate")
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		t := &inboundTx{s: s, tx: tx, provider: provider, ev: ev, refetch: refetch, now: s.clock()}
		// Lock the link (and its user) first, then record the event: nothing
		// is written, and the provider is not called, before the record, so
		// a duplicate (which waits for the link, or for the record of a
		// concurrent first delivery) gives up having changed nothing.
		l, cur, found, err := t.lockLinked()
		if err != nil {
			return err
		}
		// The row is written with the most common outcome, and corrected
		// below when the event ends otherwise.
		var userID *string
		if found {
			userID = &l.UserID
		}
		err = tx.Exec(`INSERT INTO inbound_events (provider, event_id, event_type, user_id, outcome, occurred_at, received_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, provider, ev.EventID, ev.EventType, userID, string(InboundApplied), ev.OccurredAt, t.now).Error
		if err != nil {
			if errors.Is(translate(err), ErrConflict) {
				return duplicate
			}
			return fmt.Errorf("recording event: %w", translate(err))
		}
		if found {
			err = t.known(ctx, l, &cur, false)
		} else {
			err = t.notLinked(ctx)
		}
		if err != nil {
			return err
		}
		if t.res.Outcome != InboundApplied || userID == nil || t.res.UserID != *userID || t.res.Detail != "" || t.payload {
			set := map[string]any{"outcome": string(t.res.Outcome), "user_id": nil}
			if t.res.UserID != "" {
				set["user_id"] = t.res.UserID
			}
			if t.res.Detail != "" {
				set["detail"] = t.res.Detail
			}
			if t.payload && ev.Payload != nil {
				set["payload"] = ev.Payload
			}
			if err := tx.Table("inbound_events").Where("provider = ? AND event_id = ?", provider, ev.EventID).
				Updates(set).Error; err != nil {
				return fmt.Errorf("recording outcome: %w", translate(err))
			}
		}
		res = t.res
		return nil
	}) // READ COMMITTED: the session default
	if errors.Is(err, duplicate) {
		return InboundResult{Outcome: InboundDuplicate, Detail: "event already received"}, nil
	}
	return res, err
}

func (t *inboundTx) outcome(o InboundOutcome, userID, detail string) error {
	t.res.Outcome, t.res.UserID, t.res.Detail = o, userID, detail
	return nil
}

// lockLinkedSQL locks a link, by its primary key, and then its user, in one
// statement (STRAIGHT_JOIN keeps the link → user order every writer keeps).
// Links are only ever locked through their primary key: a lock taken through
// the (provider, remote_id) index first would deadlock with a writer that
// holds the row and then needs that index.
const lockLinkedSQL = `SELECT l.user_id, l.provider, l.remote_id, l.status, l.synced_version, l.pushed_hash,
	l.metadata_keys, l.last_inbound_at, l.last_error, l.synced_at, l.updated_at,
	u.id, u.email, u.name, u.phone, u.metadata, u.version, u.changed_by, u.created_at, u.updated_at, u.deleted_at
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
		&r.ID, &r.Email, &r.Name, &r.Phone, &r.Metadata, &r.Version, &r.ChangedBy, &r.CreatedAt, &r.UpdatedAt, &r.DeletedAt); err != nil {
		return Link{}, User{}, false, fmt.Errorf("reading link: %w", err)
	}
	u, err := r.user()
	if err != nil {
		return Link{}, User{}, false, err
	}
	return l, u, true, rows.Close()
}

// notLinked handles an event of a remote object no link names (yet).
func (t *inboundTx) notLinked(ctx context.Context) error {
	ev := t.ev
	if ev.UserID == "" {
		return t.unknown(ctx, "")
	}
	// Tagged with a user: not linked yet, or the worker that is creating
	// the object holds the link. Wait for it, then look again.
	l, found, err := t.lockLink(ev.UserID)
	if err != nil {
		return err
	}
	switch {
	case !found || l.RemoteID == nil:
		return t.unknown(ctx, ev.UserID)
	case *l.RemoteID == ev.RemoteID:
		return t.known(ctx, l, nil, false)
	case ev.Echo || ev.Deleted:
		return t.outcome(InboundIgnoredUnknown, "", fmt.Sprintf("tagged with user %s, who is linked to %s", ev.UserID, *l.RemoteID))
	}
	return t.foreign(l, fmt.Sprintf("%s object %s is tagged with this user (%s), who is linked to %s; event %s was not applied",
		t.provider, ev.RemoteID, ev.UserID, *l.RemoteID, ev.EventID))
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

// known handles an event of the remote object l links (locked). cur is its
// user, if already locked (nil: lock it now). claimed says the link had no
// remote object and takes this one now, so no earlier event was applied to
// it.
func (t *inboundTx) known(ctx context.Context, l Link, cur *User, claimed bool) error {
	ev := t.ev
	last := ev.OccurredAt
	if l.LastInboundAt != nil && l.LastInboundAt.After(last) {
		last = l.LastInboundAt.UTC()
	}
	set := map[string]any{"last_inbound_at": nullTime(last)}
	if claimed {
		set["remote_id"] = ev.RemoteID
	}
	if ev.Echo {
		if err := t.writeLink(l.UserID, set); err != nil {
			return err
		}
		return t.outcome(InboundEcho, l.UserID, "caused by a request of Tandem's")
	}
	if l.Status == LinkDeleted {
		return t.outcome(InboundIgnoredDeleted, l.UserID, "the link is deleted")
	}
	if cur == nil {
		u, err := lockLive(t.tx, l.UserID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("locking user %s: %w", l.UserID, err)
		}
		cur = &u
		if errors.Is(err, ErrNotFound) {
			cur.DeletedAt = &t.now
		}
	}
	if cur.DeletedAt != nil {
		// Deleted in Tandem; the worker is (or was) deleting the remote
		// object too.
		if ev.Deleted {
			set["status"], set["last_error"] = LinkDeleted, nil
			if err := t.writeLink(l.UserID, set); err != nil {
				return err
			}
		}
		return t.outcome(InboundIgnoredDeleted, l.UserID, "the user is deleted")
	}
	if ev.Deleted {
		// A deletion is final, whatever the order of events.
		del := *cur
		del.Version++
		del.UpdatedAt = t.now
		del.DeletedAt = &t.now
		cur = &del
		if err := writeUser(t.tx, &del, t.provider); err != nil {
			return err
		}
		t.res.Version = cur.Version
		set["status"], set["synced_version"], set["synced_at"], set["last_error"] = LinkDeleted, cur.Version, t.now, nil
		if err := t.writeLink(l.UserID, set); err != nil {
			return err
		}
		return t.outcome(InboundDeleted, l.UserID, "")
	}

	state := ev.State
	if !claimed && l.LastInboundAt != nil && ev.OccurredAt.Before(l.LastInboundAt.UTC()) {
		return t.outcome(InboundStale, l.UserID, "older than the last applied event ("+l.LastInboundAt.UTC().Format(time.RFC3339Nano)+")")
	}
	// A change applied from another provider's webhook (ChangedBy) is not
	// sent here, and its time is when Tandem received it: it does not
	// outrank this event. An API change this provider does not hold yet
	// does, when it is later.
	if cur.ChangedBy == OriginAPI && l.SyncedVersion < cur.Version && cur.UpdatedAt.UTC().After(ev.OccurredAt.Add(InboundPushMargin)) {
		return t.olderThanLocalChange(l, *cur, set, claimed)
	}
	if !claimed && t.ambiguous(l) {
		if t.refetch == nil {
			return errors.New("the event may not be the latest and no refetch is possible")
		}
		st, found, err := t.refetch(ctx)
		if err != nil {
			return fmt.Errorf("re-reading %s object %s: %w", t.provider, ev.RemoteID, err)
		}
		t.res.Refetched = true
		if !found {
			return t.outcome(InboundStale, l.UserID, "the remote object is gone; its deletion event applies")
		}
		state = st
	}
	state, err := state.resolve(cur.Metadata)
	if err != nil {
		return fmt.Errorf("re-reading %s object %s: %w", t.provider, ev.RemoteID, err)
	}
	if !claimed && l.PushedHash != nil && *l.PushedHash == state.Hash {
		if l.Status == LinkConflict {
			// The remote object is back to what Tandem pushed: whatever
			// conflicted is gone.
			set["status"], set["last_error"] = LinkSynced, nil
		}
		if err := t.writeLink(l.UserID, set); err != nil {
			return err
		}
		t.res.Version = cur.Version
		return t.outcome(InboundEcho, l.UserID, "the state Tandem last pushed")
	}
	t.res.Version = cur.Version
	if problem := invalidState(state); problem != "" {
		return t.conflict(l.UserID, set, InboundInvalid, fmt.Sprintf("%s object %s %s; event %s was not applied",
			t.provider, ev.RemoteID, problem, ev.EventID))
	}

	next := *cur
	next.Email, next.Name, next.Phone = state.Email, state.Name, state.Phone
	next.Metadata = maps.Clone(state.Metadata)
	if next.Metadata == nil {
		next.Metadata = map[string]string{}
	}
	outcome := InboundUnchanged
	if !sameState(*cur, next) {
		next.Version = cur.Version + 1
		next.UpdatedAt = t.now
		err := writeUser(t.tx, &next, t.provider)
		if errors.Is(err, ErrConflict) {
			// InnoDB rolled back only the failed statement.
			other, err := t.emailOwner(state.Email, cur.ID)
			if err != nil {
				return err
			}
			return t.conflict(l.UserID, set, InboundConflict, fmt.Sprintf("%s object %s has email %q, which belongs to another user (%s); event %s was not applied",
				t.provider, ev.RemoteID, state.Email, other, ev.EventID))
		}
		if err != nil {
			return err
		}
		outcome = InboundApplied
	}
	if claimed {
		outcome = InboundLinked
	}
	t.res.Version = next.Version
	set["status"] = LinkSynced
	set["synced_version"] = next.Version
	set["synced_at"] = t.now
	set["pushed_hash"] = state.Hash
	if !state.KeepMetadata {
		set["metadata_keys"] = metadataKeys(state.Metadata)
	}
	set["last_error"] = nil
	if err := t.writeLink(l.UserID, set); err != nil {
		return err
	}
	return t.outcome(outcome, l.UserID, "")
}

// olderThanLocalChange records an event older than the user's API change
// cur, which this provider does not hold yet: the later write wins, and the
// worker's pending push overwrites the remote object. The remote object
// holds something else than Tandem last pushed now, so the pushed-state
// hash is forgotten: a push of that state must not be skipped as done.
// claimed says the remote object is being linked to the user now (set
// carries its id): it is linked (InboundLinked), keeping the user's state.
func (t *inboundTx) olderThanLocalChange(l Link, cur User, set map[string]any, claimed bool) error {
	set["pushed_hash"] = nil
	if err := t.writeLink(l.UserID, set); err != nil {
		return err
	}
	t.res.Version = cur.Version
	detail := "older than the user's change of " + cur.UpdatedAt.UTC().Format(time.RFC3339Nano) +
		" (version " + strconv.FormatInt(cur.Version, 10) + "), which is not pushed yet"
	if claimed {
		return t.outcome(InboundLinked, l.UserID, "linked without applying its state: "+detail)
	}
	return t.outcome(InboundStale, l.UserID, detail)
}

// ambiguous reports whether the event's state may not be the remote
// object's latest: it ties with the last applied event, or it may predate
// Tandem's last push.
func (t *inboundTx) ambiguous(l Link) bool {
	at := t.ev.OccurredAt
	if l.LastInboundAt != nil && at.Equal(l.LastInboundAt.UTC()) {
		return true
	}
	return l.SyncedAt != nil && !at.After(l.SyncedAt.UTC().Add(InboundPushMargin))
}

// unknown handles an event of a remote object no link names. candidate is
// the user the object is tagged with and whose link (locked, if any) has no
// remote id, or "".
func (t *inboundTx) unknown(ctx context.Context, candidate string) error {
	ev := t.ev
	if ev.Echo || ev.Deleted {
		return t.outcome(InboundIgnoredUnknown, "", "no user is linked to this remote object")
	}
	if candidate != "" {
		done, err := t.claim(ctx, candidate, "")
		if done || err != nil {
			return err
		}
	}
	if ev.State.Email == "" {
		return t.outcome(InboundIgnoredNoEmail, "", "an unknown remote object without an email")
	}
	if problem := invalidState(ev.State); problem != "" {
		return t.outcome(InboundInvalid, "", fmt.Sprintf("%s object %s %s", t.provider, ev.RemoteID, problem))
	}
	for range 3 {
		owner, err := t.emailOwner(ev.State.Email, "")
		if err != nil {
			return err
		}
		if owner != "" {
			done, err := t.claim(ctx, owner, ev.State.Email)
			if done || err != nil {
				return err
			}
			continue // the user changed email or was deleted meanwhile
		}
		created, err := t.create()
		if created || err != nil {
			return err
		}
		// Someone took the email meanwhile: link to them.
	}
	return fmt.Errorf("%w: the owner of email %q kept changing", errRaceLost, ev.State.Email)
}

// claim links the remote object to user id (located by its tag, or by
// email when email is set) if that user is live and has no remote object for
// this provider. done is false when the user is no longer a candidate (not
// live, or no longer holding email).
func (t *inboundTx) claim(ctx context.Context, id, email string) (done bool, err error) {
	err = t.tx.Exec(`INSERT INTO provider_links (user_id, provider, status, synced_version, updated_at)
		SELECT id, ?, ?, 0, ? FROM users WHERE id = ? AND deleted_at IS NULL
		ON DUPLICATE KEY UPDATE provider_links.user_id = provider_links.user_id`,
		t.provider, LinkPending, t.now, id).Error
	if err != nil {
		return false, fmt.Errorf("creating link: %w", translate(err))
	}
	l, found, err := t.lockLink(id)
	if err != nil || !found {
		return false, err
	}
	if l.RemoteID != nil {
		if *l.RemoteID == t.ev.RemoteID {
			return true, t.known(ctx, l, nil, false) // linked meanwhile
		}
		if email == "" {
			return false, nil
		}
		return true, t.foreign(l, fmt.Sprintf("%s object %s has this user's email %q, but the user is linked to %s; event %s was not applied",
			t.provider, t.ev.RemoteID, email, *l.RemoteID, t.ev.EventID))
	}
	// Through the primary key only (see lockLinkedSQL); the email is checked
	// on the locked row.
	q := `SELECT id, email, name, phone, metadata, version, changed_by, created_at, updated_at, deleted_at
		FROM users FORCE INDEX (PRIMARY) WHERE id = ? AND deleted_at IS NULL`
	args := []any{id}
	if email != "" {
		q += " AND live_email = LOWER(?)"
		args = append(args, email)
	}
	var row userRow
	res := t.tx.Raw(q+" FOR UPDATE", args...).Scan(&row)
	if res.Error != nil {
		return false, fmt.Errorf("locking user %s: %w", id, translate(res.Error))
	}
	if res.RowsAffected == 0 {
		return false, nil
	}
	u, err := row.user()
	if err != nil {
		return false, err
	}
	return true, t.known(ctx, l, &u, true)
}

// create makes a user of the remote state and links it. created is false
// when the email turned out to be taken (by a transaction that committed
// meanwhile).
func (t *inboundTx) create() (created bool, err error) {
	st := t.ev.State
	u := User{ID: uuid.Must(uuid.NewV7()).String(), Email: st.Email, Name: st.Name, Phone: st.Phone,
		Metadata: maps.Clone(st.Metadata), Version: 1, ChangedBy: t.provider, CreatedAt: t.now, UpdatedAt: t.now}
	if u.Metadata == nil {
		u.Metadata = map[string]string{}
	}
	row, err := rowOf(u)
	if err != nil {
		return false, fmt.Errorf("creating user: %w", err)
	}
	if err := t.tx.Create(&row).Error; err != nil {
		if errors.Is(translate(err), ErrConflict) {
			return false, nil
		}
		return false, fmt.Errorf("creating user: %w", translate(err))
	}
	remote, hash, keys := t.ev.RemoteID, st.Hash, metadataKeys(st.Metadata)
	version := int64(1)
	l := Link{UserID: u.ID, Provider: t.provider, RemoteID: &remote, Status: LinkSynced, SyncedVersion: version,
		PushedHash: &hash, MetadataKeys: &keys, LastInboundAt: nullTime(t.ev.OccurredAt), SyncedAt: &t.now, UpdatedAt: t.now}
	if err := t.tx.Create(&l).Error; err != nil {
		if errors.Is(translate(err), ErrConflict) {
			return false, errRaceLost // another transaction linked the object first
		}
		return false, fmt.Errorf("creating link: %w", translate(err))
	}
	t.res.Version = 1
	return true, t.outcome(InboundCreated, u.ID, "")
}

// foreign marks link l conflict: a remote object that is not l's claims
// its user.
func (t *inboundTx) foreign(l Link, detail string) error {
	return t.conflict(l.UserID, map[string]any{}, InboundConflict, detail)
}

// conflict marks the link of userID conflict with detail (plus the columns in
// set), forgets the pushed-state hash and keeps the payload.
func (t *inboundTx) conflict(userID string, set map[string]any, o InboundOutcome, detail string) error {
	set["status"] = LinkConflict
	set["last_error"] = detail
	// The remote object may hold something else than Tandem last pushed:
	// the next push must not be skipped as done.
	set["pushed_hash"] = nil
	if err := t.writeLink(userID, set); err != nil {
		return err
	}
	t.payload = true
	return t.outcome(o, userID, detail)
}

func (t *inboundTx) writeLink(userID string, set map[string]any) error {
	set["updated_at"] = t.now
	// FORCE INDEX: on a small table MariaDB may otherwise scan the
	// (provider, remote_id) index and lock other links' entries there.
	var q strings.Builder
	q.WriteString("UPDATE provider_links FORCE INDEX (PRIMARY) SET ")
	args := make([]any, 0, len(set)+2)
	for i, col := range slices.Sorted(maps.Keys(set)) {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(col + " = ?")
		args = append(args, set[col])
	}
	q.WriteString(" WHERE user_id = ? AND provider = ?")
	args = append(args, userID, t.provider)
	if err := t.tx.Exec(q.String(), args...).Error; err != nil {
		if errors.Is(translate(err), ErrConflict) {
			return errRaceLost // the remote id was linked to another user meanwhile
		}
		return fmt.Errorf("writing link: %w", translate(err))
	}
	return nil
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

// invalidState describes why st cannot be a user's state, or returns "".
func invalidState(st RemoteState) string {
	switch {
	case st.Email == "":
		return "has no email (a Tandem user needs one)"
	case utf8.RuneCountInString(st.Email) > maxEmailChars:
		return fmt.Sprintf("has an email longer than %d characters", maxEmailChars)
	case utf8.RuneCountInString(st.Name) > maxNameChars:
		return fmt.Sprintf("has a name longer than %d characters", maxNameChars)
	case utf8.RuneCountInString(st.Phone) > maxPhoneChars:
		return fmt.Sprintf("has a phone number longer than %d characters", maxPhoneChars)
	}
	if b, err := json.Marshal(st.Metadata); err != nil || len(b) > maxMetadataBytes {
		return fmt.Sprintf("has more metadata than Tandem stores (%d bytes of JSON)", maxMetadataBytes)
	}
	return ""
}

// metadataKeys is the JSON array of md's keys, sorted.
func metadataKeys(md map[string]string) string {
	keys := slices.Sorted(maps.Keys(md))
	if keys == nil {
		keys = []string{}
	}
	b, _ := json.Marshal(keys)
	return string(b)
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// InboundEvent is one row of inbound_events: an inbound event as recorded.
type InboundEvent struct {
	Provider   string
	EventID    string
	EventType  string
	UserID     *string
	Outcome    string
	Detail     *string
	Payload    []byte
	OccurredAt *time.Time
	ReceivedAt time.Time
}

// TableName is the GORM table name.
func (InboundEvent) TableName() string { return "inbound_events" }

// InboundEvents returns the recorded inbound events of provider with the
// given outcome ("" for any), newest first, at most limit: what an operator
// looks at to resolve conflicts.
func (s *Store) InboundEvents(ctx context.Context, provider string, outcome InboundOutcome, limit int) ([]InboundEvent, error) {
	q := s.db.WithContext(ctx).Where("provider = ?", provider)
	if outcome != "" {
		q = q.Where("outcome = ?", string(outcome))
	}
	var rows []InboundEvent
	if err := q.Order("received_at DESC").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading inbound events: %w", translate(err))
	}
	for i := range rows {
		rows[i].ReceivedAt = rows[i].ReceivedAt.UTC()
	}
	return rows, nil
}
