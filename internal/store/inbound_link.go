package store

import (
	"errors"
	"fmt"
	"maps"

	"github.com/google/uuid"
	"github.com/tandem-sync/tandem/internal/userfields"
)

// notLinked handles an event of a remote object no link names (yet).
func (t *inboundTx) notLinked() error {
	ev := t.ev
	if ev.UserID == "" {
		return t.unknown("")
	}
	// Tagged with a user: not linked yet, or the worker that is creating
	// the object holds the link. Wait for it, then look again.
	l, found, err := t.lockLink(ev.UserID)
	if err != nil {
		return err
	}
	switch {
	case !found || l.RemoteID == nil:
		return t.unknown(ev.UserID)
	case *l.RemoteID == ev.RemoteID:
		return t.known(l, nil, false)
	case ev.Echo || ev.Deleted:
		return t.outcome(InboundIgnoredUnknown, "", fmt.Sprintf("tagged with user %s, who is linked to %s", ev.UserID, *l.RemoteID))
	}
	return t.foreign(l, fmt.Sprintf("%s object %s is tagged with this user (%s), who is linked to %s; event %s was not applied",
		t.provider, ev.RemoteID, ev.UserID, *l.RemoteID, ev.EventID))
}

// unknown handles an event of a remote object no link names. candidate is
// the user the object is tagged with and whose link (locked, if any) has no
// remote id, or "".
func (t *inboundTx) unknown(candidate string) error {
	ev := t.ev
	if ev.Echo && candidate != "" {
		// Tandem's own create, whose answer the worker has not recorded
		// yet: it records the object itself.
		return t.outcome(InboundEcho, candidate, "caused by a request of Tandem's (the worker records the object)")
	}
	if ev.Echo || ev.Deleted {
		return t.outcome(InboundIgnoredUnknown, "", "no user is linked to this remote object")
	}
	if candidate != "" {
		done, err := t.claim(candidate, "")
		if done || err != nil {
			return err
		}
	}
	if ev.State.Email == "" {
		return t.outcome(InboundIgnoredNoEmail, "", "an unknown remote object without an email")
	}
	if problem := ev.State.Invalid; problem != "" {
		// Before looking its email up: LOWER() would fold an email the API
		// refuses (the Kelvin sign) onto another user's.
		t.payload = true
		return t.outcome(InboundInvalid, "", fmt.Sprintf("%s object %s: %s; it was not linked and no user was made of it", t.provider, ev.RemoteID, problem))
	}
	for range 3 {
		owner, err := t.emailOwner(ev.State.Email, "")
		if err != nil {
			return err
		}
		if owner != "" {
			done, err := t.claim(owner, ev.State.Email)
			if done || err != nil {
				return err
			}
			continue // the user changed email or was deleted meanwhile
		}
		if ev.NoCreate {
			return t.outcome(InboundIgnoredUnknown, "", "no user has this object's email, and TANDEM_INBOUND_CREATE is off")
		}
		if problem := invalidState(ev.State); problem != "" {
			t.payload = true
			return t.outcome(InboundInvalid, "", fmt.Sprintf("%s object %s %s", t.provider, ev.RemoteID, problem))
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
//
// A tag is no proof: anyone who can edit the object can write it. An object
// found by its tag alone is linked only when Tandem may have made it (the
// event is the echo of a Tandem request, or the user's push has an unknown
// outcome and the object has the email that push carried) or its email is
// the user's; otherwise the user's link is marked conflict, naming the
// object, for an operator.
func (t *inboundTx) claim(id, email string) (done bool, err error) {
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
			return true, t.known(l, nil, false) // linked meanwhile
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
	// Tandem's own create carried the user's email of the time
	// (attempt_email): an unknown create is recognised by it.
	mine := t.ev.Echo || l.Unsure() && l.AttemptEmail != nil && sameEmail(*l.AttemptEmail, t.ev.State.Email)
	if email == "" && !mine && !sameEmail(u.Email, t.ev.State.Email) {
		return true, t.foreign(l, fmt.Sprintf("%s object %s is tagged with this user, but Tandem did not make it and its email %q is not the user's; it was not linked (event %s)",
			t.provider, t.ev.RemoteID, t.ev.State.Email, t.ev.EventID))
	}
	return true, t.known(l, &u, true)
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

// link links the remote object to the user cur (locked; l is its link,
// with no remote object yet) without copying the object's fields over the
// user: the link records what the object holds, and unless that is the
// user's state, an outbox row asks the provider's worker to push the user
// over it. set carries the link's columns so far.
func (t *inboundTx) link(l Link, cur User, state RemoteState, set map[string]any) error {
	set["last_error"] = nil
	if !state.KeepMetadata {
		set["metadata_keys"] = metadataKeys(state.Metadata)
	}
	set["pushed_hash"] = state.Hash
	detail := "linked; the object holds the user's state"
	if sameState(cur, state.over(cur)) && !state.KeepMetadata {
		set["status"], set["synced_version"], set["synced_at"] = LinkSynced, cur.Version, t.now
	} else {
		set["status"] = LinkPending
		if err := t.askPush(cur); err != nil {
			return err
		}
		detail = "linked without applying its state: Tandem's state is pushed to it"
	}
	if err := t.writeLink(l.UserID, set, true); err != nil {
		return err
	}
	return t.outcome(InboundLinked, l.UserID, detail)
}

// askPush writes an outbox row for u as it is, so the provider's worker
// pushes it (the only inbound path that leads to a push: see link and
// ownState). Other providers' workers skip it when they hold u already.
func (t *inboundTx) askPush(u User) error {
	if err := t.tx.Create(t.s.newEvent(u, EventUserUpdated, t.provider)).Error; err != nil {
		return fmt.Errorf("inserting outbox row: %w", translate(err))
	}
	t.announced = true
	return nil
}

// sameEmail reports whether two emails are the same address, as the users'
// unique key compares them: both valid (ASCII, package userfields) and equal
// but for the case of ASCII letters. (strings.EqualFold and MariaDB's
// LOWER() would also match the Kelvin sign with k, İ with i.)
func sameEmail(a, b string) bool {
	return a != "" && len(userfields.CheckEmail(a)) == 0 && len(userfields.CheckEmail(b)) == 0 &&
		userfields.EmailKey(a) == userfields.EmailKey(b)
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
