package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	"gorm.io/gorm"
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
	// InboundRelinked: the remote object was merged into another
	// (InboundChange.MergedInto): the user's link now names the survivor,
	// and the user is pushed over it.
	InboundRelinked InboundOutcome = "relinked"
)

// InboundPushMargin bounds the clock difference between a provider and
// Tandem. An inbound event whose time is not later than the link's last sync
// (synced_at) by more than this may predate Tandem's last push, which has
// since overwritten it in the provider: ApplyInbound then re-reads the
// object rather than trust the event.
const InboundPushMargin = 2 * time.Second

// InboundFutureAllowance is how far ahead of Tandem's clock an inbound
// event may be dated. A later one is recorded InboundInvalid and applies
// nothing: stored as the link's high-water mark, one forged or buggy date
// would make every genuine later edit of the object stale until then.
const InboundFutureAllowance = 5 * time.Minute

// RemoteClockResolution is the coarsest resolution of a provider's clock
// Tandem compares with (Stripe's event times and every HTTP Date header are
// whole seconds).
const RemoteClockResolution = time.Second

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
	// Invalid, if not "", says why the state can never be a user's (the
	// API's validation refuses it): an event carrying it is recorded
	// InboundInvalid with this reason, answered as handled, and applies
	// nothing.
	Invalid string
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

// over returns u holding st: its email, name and phone, and its metadata
// unless st keeps the user's (KeepMetadata).
func (st RemoteState) over(u User) User {
	u.Email, u.Name, u.Phone = st.Email, st.Name, st.Phone
	if !st.KeepMetadata {
		u.Metadata = maps.Clone(st.Metadata)
		if u.Metadata == nil {
			u.Metadata = map[string]string{}
		}
	}
	return u
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
	// MergedInto, with Deleted, is the remote object this one was merged
	// into: the user's link moves to it (InboundRelinked) instead of the
	// user being deleted.
	MergedInto string
	State      RemoteState
	Payload    []byte // the raw event, kept when it ends in conflict or invalid
	// NoCreate turns off making users of unknown remote objects
	// (TANDEM_INBOUND_CREATE=false): such an object is linked to the user
	// with its email, or ignored (InboundIgnoredUnknown).
	NoCreate bool
}

// RefetchFunc reads the remote object as the provider holds it now; found is
// false when it is gone. ApplyInbound calls it, outside any transaction, to
// settle a tie with the last applied event or an event that may predate the
// last push, and then applies the event again with the state it returned.
// Its error aborts ApplyInbound.
type RefetchFunc func(ctx context.Context) (state RemoteState, found bool, err error)

// InboundResult says what ApplyInbound did.
type InboundResult struct {
	Outcome InboundOutcome
	UserID  string // the user the event concerned, "" if none
	Version int64  // that user's version afterwards (0 if none)
	Detail  string // why, for outcomes other than applied, unchanged, created, linked, deleted
	// Refetched reports that the remote object was re-read (refetch called).
	Refetched bool
	// quiet: an echo of Tandem's own request that wrote nothing, recorded
	// nowhere (not in inbound_events, nor in the user's history, which
	// has the push it echoes).
	quiet bool
}

// errNeedRefetch asks ApplyInbound to roll back, re-read the remote object
// (outside the transaction) and apply the event again with what it read.
var errNeedRefetch = errors.New("the remote object must be re-read")

// needRefetch is errNeedRefetch naming the user whose link must be leased
// for the re-read: under the lease no push can land between the re-read and
// the transaction that applies it.
type needRefetch struct{ userID string }

func (needRefetch) Error() string        { return errNeedRefetch.Error() }
func (needRefetch) Is(target error) bool { return target == errNeedRefetch }

// maxRefetches bounds the re-reads of one event (each made stale by another
// event of the same object applied meanwhile); past it the event fails and
// the provider delivers it again later.
const maxRefetches = 3

// RefetchLeaseWait bounds how long ApplyInbound waits for a push of the same
// user in flight before it re-reads the object; past it the event fails
// (5xx) and the provider delivers it again later.
var RefetchLeaseWait = 15 * time.Second

// refetched is the outcome of a re-read, carried into the next run.
type refetched struct {
	state RemoteState
	found bool
	seq   int64 // the link's lease sequence under which it was read
}

// errRaceLost asks ApplyInbound to run its transaction again: a concurrent
// transaction linked the same remote object first.
var errRaceLost = errors.New("lost a race for a provider link")

// ApplyInbound applies one verified inbound event of provider, once and in
// order, in one short transaction (no provider call inside it), and writes
// no outbox row for a change it applies (an inbound change is not published:
// the provider already holds it, and publishing it would start an echo
// loop). The rules, in the order they are checked (docs/design.md has them
// with their reasons):
//
//  1. it locks the link of the remote object (found through the user the
//     object is tagged with, else by remote id; always through the link's
//     primary key) and then its user, and records (provider, event id) in
//     inbound_events before anything else: a recorded id is
//     InboundDuplicate, and nothing is changed;
//  2. an event dated more than InboundFutureAllowance ahead of Tandem's
//     clock, or whose state the API would refuse (RemoteState.Invalid), is
//     InboundInvalid and applies nothing;
//  3. an echo of Tandem's own request is InboundEcho; an event of a link or
//     user already deleted is InboundIgnoredDeleted; a deletion soft-deletes
//     the user (InboundDeleted);
//  4. an event older than the link's last applied one is InboundStale;
//  5. a state equal to one the provider is known to hold (the link's
//     pushed_hash) or may hold (a push whose outcome is unknown) changes
//     none of the synced fields: InboundEcho, nothing is applied (a push
//     it confirms is recorded as held);
//  6. an event older (by more than InboundPushMargin) than the user's last
//     API change, which this provider does not hold yet, is InboundStale:
//     the later write wins, and the worker's pending push overwrites it;
//  7. an event that ties with the last applied one, may predate Tandem's
//     last push (compared on the provider's own clock: pushed_remote_at,
//     the Date of the push's answer), or lies within InboundPushMargin of
//     an API change this provider does not hold yet, is settled by
//     re-reading the object (refetch, under the pair's lease, outside the
//     transaction) and applying what it holds;
//  8. otherwise the user takes the remote email, name, phone and metadata
//     (version + 1 if that changes anything), the link records the
//     version, the state's hash and metadata keys as synced, and the
//     link's lease is fenced (a push in flight records "unknown" instead
//     of "synced").
//
// A state with KeepMetadata (a provider that holds no metadata) leaves the
// user's metadata and the link's metadata keys as they are, and is compared
// with the pushed state as holding the user's metadata.
//
// An unknown remote object is linked to a user only when Tandem may have
// made it (the event is an echo, or the user's push has an unknown outcome)
// or its email is the user's; a tag alone is no proof, and a tagged object
// that fails both is InboundConflict on the tagged user's link. Linking
// never copies the object's fields over the user: the link records what the
// object holds, and unless that is the user's state an outbox row asks the
// provider's worker to push the user over it (InboundLinked). An object no
// user claims becomes a new user (InboundCreated), unless ev.NoCreate; one
// without an email is InboundIgnoredNoEmail. An email that belongs to
// another live user is InboundConflict: nothing of the event is applied,
// the link is marked conflict with the reason, the payload is kept.
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
	if ev.Echo && !ev.OccurredAt.After(s.clock().Add(InboundFutureAllowance)) {
		res, ok, err := s.echoWithoutWrite(ctx, provider, ev)
		if err != nil {
			return InboundResult{}, fmt.Errorf("applying %s event %s: %w", provider, ev.EventID, err)
		}
		if ok {
			return res, nil // quiet: recorded nowhere
		}
	}
	var re *refetched
	release := func() {}
	defer func() { release() }()
	refetches := 0
	for attempt := 1; ; attempt++ {
		res, err := s.applyInbound(ctx, provider, ev, re)
		var need needRefetch
		if errors.As(err, &need) && refetch != nil && refetches < maxRefetches {
			refetches++
			release()
			re, release, err = s.readLeased(ctx, need.userID, provider, ev.RemoteID, refetch)
			if err != nil {
				return InboundResult{}, fmt.Errorf("applying %s event %s: %w", provider, ev.EventID, err)
			}
			continue
		}
		if errors.Is(err, errNeedRefetch) {
			err = errors.New("the event may not be the latest and no re-read could settle it (no re-read possible, or other events of the object kept changing its link)")
		}
		if err != nil && attempt < 6 && retryable(err) {
			continue
		}
		if err != nil {
			return InboundResult{}, fmt.Errorf("applying %s event %s: %w", provider, ev.EventID, err)
		}
		res.Refetched = re != nil
		if !res.quiet {
			s.recordInbound(ctx, provider, ev, res)
		}
		return res, nil
	}
}

// readLeased re-reads remote object remoteID under the lease of userID's
// link, so no push of Tandem's lands between the read and the transaction
// that applies it; release frees the lease once that transaction is over.
// It waits up to RefetchLeaseWait for a push in flight.
func (s *Store) readLeased(ctx context.Context, userID, provider, remoteID string, refetch RefetchFunc) (re *refetched, release func(), err error) {
	owner := uuid.NewString()
	seq, err := s.leaseForRead(ctx, userID, provider, owner)
	if err != nil {
		return nil, func() {}, err
	}
	release = func() { s.releaseLease(context.WithoutCancel(ctx), userID, provider, owner) }
	st, found, err := refetch(ctx)
	if err != nil {
		release()
		return nil, func() {}, fmt.Errorf("re-reading object %s: %w", remoteID, err)
	}
	return &refetched{state: st, found: found, seq: seq}, release, nil
}

// leaseForRead takes the lease of the link of userID to provider, waiting
// (up to RefetchLeaseWait) while a push holds it, and returns its sequence.
func (s *Store) leaseForRead(ctx context.Context, userID, provider, owner string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, RefetchLeaseWait)
	defer cancel()
	wait := 5 * time.Millisecond
	for {
		res := s.db.WithContext(ctx).Exec(`UPDATE provider_links FORCE INDEX (PRIMARY)
			SET lease_seq = lease_seq + 1, lease_until = DATE_ADD(NOW(6), INTERVAL ? MICROSECOND), lease_owner = ?
			WHERE user_id = ? AND provider = ? AND (lease_until IS NULL OR lease_until <= NOW(6))`,
			(RefetchLeaseWait + time.Minute).Microseconds(), owner, userID, provider)
		if res.Error != nil {
			return 0, fmt.Errorf("leasing the link to re-read: %w", translate(res.Error))
		}
		if res.RowsAffected == 1 {
			var seq []int64
			if err := s.db.WithContext(ctx).Raw(`SELECT lease_seq FROM provider_links WHERE user_id = ? AND provider = ? AND lease_owner = ?`,
				userID, provider, owner).Scan(&seq).Error; err != nil {
				return 0, fmt.Errorf("leasing the link to re-read: %w", translate(err))
			}
			if len(seq) == 1 {
				return seq[0], nil
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("waiting for a push of the same user to finish before re-reading: %w", ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// releaseLease frees a lease taken by owner.
func (s *Store) releaseLease(ctx context.Context, userID, provider, owner string) {
	_ = s.db.WithContext(ctx).Exec(`UPDATE provider_links FORCE INDEX (PRIMARY) SET lease_until = NULL, lease_owner = NULL
		WHERE user_id = ? AND provider = ? AND lease_owner = ?`, userID, provider, owner).Error
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
	case ev.MergedInto != "" && (!ev.Deleted || len(ev.MergedInto) > maxRemoteIDBytes || !printableASCII(ev.MergedInto) || ev.MergedInto == ev.RemoteID):
		return fmt.Errorf("applying %s event %s: a merge is the deletion of one object into another (1-%d printable ASCII bytes)", provider, ev.EventID, maxRemoteIDBytes)
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
	re       *refetched // the re-read state, on a second run
	now      time.Time
	res      InboundResult
	// announced: an outbox row was written (a link asks for a push).
	announced bool
	payload   bool // keep the payload in inbound_events
	// wrote: the transaction wrote a link (writeLink).
	wrote bool
	// echoOnly: the event is an echo of Tandem's own request, not recorded
	// in inbound_events unless it writes something (see pureEcho).
	echoOnly bool
}

// echoWithoutWrite settles an echo of Tandem's own request that writes
// nothing, with plain reads and no transaction: the echo of an object no
// link holds yet (a create the worker has not recorded: it records the
// object) or that its tag's user is linked to another object
// (InboundIgnoredUnknown), and the echo a link already covers (echoCovered:
// pushed_remote_at and last_inbound_at only grow, so a later read would
// decide the same). ok is false when the echo must go through the locked
// path (it may record its time on the link).
func (s *Store) echoWithoutWrite(ctx context.Context, provider string, ev InboundChange) (InboundResult, bool, error) {
	// One round trip: the links holding the object, and the link of the
	// user it is tagged with.
	var rows []struct {
		ByRemote       bool
		UserID         string
		RemoteID       *string
		LastInboundAt  *time.Time
		AttemptHash    *string
		PushedRemoteAt *time.Time
	}
	const cols = "user_id, remote_id, last_inbound_at, attempt_hash, pushed_remote_at"
	if err := s.db.WithContext(ctx).Raw(`(SELECT 1 AS by_remote, `+cols+` FROM provider_links WHERE provider = ? AND remote_id = ? LIMIT 2)
		UNION ALL (SELECT 0, `+cols+` FROM provider_links WHERE user_id = ? AND provider = ?)`,
		provider, ev.RemoteID, ev.UserID, provider).Scan(&rows).Error; err != nil {
		return InboundResult{}, false, fmt.Errorf("reading links: %w", translate(err))
	}
	var holders []Link
	var tagged *Link
	for _, r := range rows {
		l := Link{UserID: r.UserID, RemoteID: r.RemoteID, LastInboundAt: r.LastInboundAt, AttemptHash: r.AttemptHash, PushedRemoteAt: r.PushedRemoteAt}
		if r.ByRemote {
			holders = append(holders, l)
		} else if ev.UserID != "" {
			tagged = &l
		}
	}
	t := &inboundTx{s: s, provider: provider, ev: ev}
	switch {
	case len(holders) == 1:
		if !t.echoCovered(holders[0]) {
			return InboundResult{}, false, nil
		}
		return InboundResult{Outcome: InboundEcho, UserID: holders[0].UserID, Detail: "caused by a request of Tandem's", quiet: true}, true, nil
	case len(holders) > 1:
		return InboundResult{}, false, nil
	case ev.UserID == "":
		return InboundResult{Outcome: InboundIgnoredUnknown, Detail: "no user is linked to this remote object", quiet: true}, true, nil
	case tagged == nil || tagged.RemoteID == nil:
		return InboundResult{Outcome: InboundEcho, UserID: ev.UserID, Detail: "caused by a request of Tandem's (the worker records the object)", quiet: true}, true, nil
	case *tagged.RemoteID == ev.RemoteID:
		return InboundResult{}, false, nil // changing under the read: look again, locked
	}
	return InboundResult{Outcome: InboundIgnoredUnknown,
		Detail: fmt.Sprintf("tagged with user %s, who is linked to %s", ev.UserID, *tagged.RemoteID), quiet: true}, true, nil
}

// pureEcho reports the outcomes an echo of Tandem's own request ends with
// when it changes nothing. Such an echo is not recorded in inbound_events:
// the record is what makes a redelivery a duplicate, and a redelivered echo
// is recognised as an echo again (the event itself says Tandem caused it)
// and again changes nothing. Real events are always recorded first.
func pureEcho(o InboundOutcome) bool {
	return o == InboundEcho || o == InboundIgnoredUnknown
}

// echoCovered reports whether an echo of Tandem's own request (to the
// remote object l links, locked) tells Tandem nothing its link does not
// hold: the link's last applied event is not older, or the echo is not
// later than the provider's clock at Tandem's last confirmed push
// (pushed_remote_at, whole seconds) and no push's outcome is unknown. Then
// its time need not be written as the link's last_inbound_at: an event
// older than it is either stale already or may predate that push, and is
// settled by re-reading the object (rule 7 of ApplyInbound).
func (t *inboundTx) echoCovered(l Link) bool {
	at := t.ev.OccurredAt
	if l.LastInboundAt != nil && !at.After(l.LastInboundAt.UTC()) {
		return true
	}
	return l.AttemptHash == nil && l.PushedRemoteAt != nil &&
		at.Before(l.PushedRemoteAt.UTC().Truncate(RemoteClockResolution).Add(RemoteClockResolution))
}

func (s *Store) applyInbound(ctx context.Context, provider string, ev InboundChange, re *refetched) (InboundResult, error) {
	var res InboundResult
	announced := false
	duplicate := errors.New("duplicate")
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		t := &inboundTx{s: s, tx: tx, provider: provider, ev: ev, re: re, now: s.clock()}
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
		record := func(outcome InboundOutcome, userID *string, detail *string) error {
			err := tx.Exec(`INSERT INTO inbound_events (provider, event_id, event_type, user_id, outcome, detail, occurred_at, received_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, provider, ev.EventID, ev.EventType, userID, string(outcome), detail, ev.OccurredAt, t.now).Error
			if err != nil {
				if errors.Is(translate(err), ErrConflict) {
					return duplicate
				}
				return fmt.Errorf("recording event: %w", translate(err))
			}
			return nil
		}
		// An echo of Tandem's own request is recorded only if it writes
		// something (see pureEcho); every other event is recorded first.
		echoFirst := ev.Echo && !ev.OccurredAt.After(t.now.Add(InboundFutureAllowance))
		if echoFirst {
			t.echoOnly = true
		} else if err := record(InboundApplied, userID, nil); err != nil {
			return err
		}
		switch {
		case ev.OccurredAt.After(t.now.Add(InboundFutureAllowance)):
			t.payload = true
			err = t.outcome(InboundInvalid, deref(userID), "dated "+ev.OccurredAt.Format(time.RFC3339)+
				", ahead of Tandem's clock by more than "+InboundFutureAllowance.String()+"; not applied")
		case found:
			err = t.known(l, &cur, false)
		default:
			err = t.notLinked()
		}
		if err != nil {
			return err
		}
		if echoFirst {
			res, announced = t.res, t.announced
			if pureEcho(t.res.Outcome) && !t.wrote && !t.announced {
				res.quiet = true
				return nil // nothing written, nothing to record (a redelivery is an echo again)
			}
			var uid, detail *string
			if t.res.UserID != "" {
				uid = &t.res.UserID
			}
			if t.res.Detail != "" {
				detail = &t.res.Detail
			}
			if err := record(t.res.Outcome, uid, detail); err != nil {
				return err
			}
			if t.payload && ev.Payload != nil {
				if err := tx.Exec("UPDATE inbound_events SET payload = ? WHERE provider = ? AND event_id = ?", ev.Payload, provider, ev.EventID).Error; err != nil {
					return fmt.Errorf("recording outcome: %w", translate(err))
				}
			}
			return nil
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
		announced = t.announced
		return nil
	}) // READ COMMITTED: the session default
	if err == nil && announced {
		s.notify()
	}
	if errors.Is(err, duplicate) {
		return InboundResult{Outcome: InboundDuplicate, Detail: "event already received"}, nil
	}
	return res, err
}

func (t *inboundTx) outcome(o InboundOutcome, userID, detail string) error {
	t.res.Outcome, t.res.UserID, t.res.Detail = o, userID, detail
	return nil
}

// writeLink writes set on the link of userID (locked by this transaction).
// fence also moves the link's lease on, so a push in flight cannot record
// its outcome over this change (see Store.Sync).
func (t *inboundTx) writeLink(userID string, set map[string]any, fence ...bool) error {
	set["updated_at"] = t.now
	t.wrote = true
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
	if len(fence) > 0 && fence[0] {
		q.WriteString(", lease_seq = lease_seq + 1")
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
