package store

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// known handles an event of the remote object l links (locked): the rules of
// ApplyInbound from step 3 on. cur is its user, if already locked (nil: lock
// it now). claimed says the link had no remote object and takes this one
// now, so no earlier event was applied to it.
func (t *inboundTx) known(l Link, cur *User, claimed bool) error {
	ev := t.ev
	last := ev.OccurredAt
	if l.LastInboundAt != nil && l.LastInboundAt.After(last) {
		last = l.LastInboundAt.UTC()
	}
	set := map[string]any{"last_inbound_at": nullTime(last)}
	if claimed {
		set["remote_id"] = ev.RemoteID
	}
	if ev.Echo && !claimed {
		if t.echoOnly && t.echoCovered(l) {
			return t.outcome(InboundEcho, l.UserID, "caused by a request of Tandem's")
		}
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
	if ev.Deleted && ev.MergedInto != "" {
		return t.merged(l, *cur, set)
	}
	if ev.Deleted {
		// A deletion is final, whatever the order of events.
		del := *cur
		del.Version++
		del.UpdatedAt = t.now
		del.DeletedAt = &t.now
		if err := writeUser(t.tx, &del, t.provider); err != nil {
			return err
		}
		t.res.Version = del.Version
		set["status"], set["synced_version"], set["synced_at"], set["last_error"] = LinkDeleted, del.Version, t.now, nil
		if err := t.writeLink(l.UserID, set, true); err != nil {
			return err
		}
		return t.outcome(InboundDeleted, l.UserID, "")
	}

	// 4. Order: an event older than the last one applied is stale.
	if !claimed && l.LastInboundAt != nil && ev.OccurredAt.Before(l.LastInboundAt.UTC()) {
		return t.outcome(InboundStale, l.UserID, "older than the last applied event ("+l.LastInboundAt.UTC().Format(time.RFC3339Nano)+")")
	}
	state := ev.State
	if t.re != nil && t.re.seq != l.LeaseSeq {
		// The link changed since the re-read, which was made under the
		// pair's lease (so no push landed meanwhile): another event was
		// applied. Read again.
		return needRefetch{userID: l.UserID}
	}
	if t.re != nil {
		if !t.re.found {
			return t.outcome(InboundStale, l.UserID, "the remote object is gone; its deletion event applies")
		}
		state = t.re.state
		state.KeepMetadata = state.KeepMetadata || ev.State.KeepMetadata
		if state.KeepMetadata && state.HashWith == nil {
			state.HashWith = ev.State.HashWith
		}
	}
	state, err := state.resolve(cur.Metadata)
	if err != nil {
		return fmt.Errorf("applying %s object %s: %w", t.provider, ev.RemoteID, err)
	}
	t.res.Version = cur.Version
	if claimed {
		return t.link(l, *cur, state, set)
	}

	// 5. A state the provider is known to hold, may hold through a push
	// whose answer Tandem never saw, or was sent by one of Tandem's recent
	// pushes (a late one can land after a newer one) changes none of the
	// synced fields as far as Tandem can tell: the event is about something
	// Tandem does not sync (a payment method, an address), or it shows one
	// of Tandem's own pushes. Nothing is applied; if that is not the user's
	// state, the user is pushed again (Tandem's current state wins over its
	// own late pushes).
	inFlight := l.AttemptHash != nil && *l.AttemptHash == state.Hash
	if inFlight || l.PushedHash != nil && *l.PushedHash == state.Hash || l.pushedRecently(state.Hash) {
		return t.ownState(l, *cur, state, set, inFlight)
	}
	if state.Invalid != "" {
		return t.conflict(l.UserID, set, InboundInvalid, fmt.Sprintf("%s object %s: %s; event %s was not applied",
			t.provider, ev.RemoteID, state.Invalid, ev.EventID))
	}

	// 6. The last writer wins, by time: an API change every provider is
	// sent, which this one does not hold yet, outranks an older event
	// (whoever made the user's current version).
	if cur.APIVersion > l.SyncedVersion && cur.APIChangedAt.After(ev.OccurredAt.Add(InboundPushMargin)) {
		return t.olderThanLocalChange(l, *cur, state, set)
	}

	// 7. A tie, or an event that may predate Tandem's last push: re-read.
	if t.re == nil && t.ambiguous(l, *cur) {
		return needRefetch{userID: l.UserID}
	}
	if problem := invalidState(state); problem != "" {
		return t.conflict(l.UserID, set, InboundInvalid, fmt.Sprintf("%s object %s %s; event %s was not applied",
			t.provider, ev.RemoteID, problem, ev.EventID))
	}

	// 8. Apply.
	next := state.over(*cur)
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
	t.res.Version = next.Version
	set["last_error"] = nil
	if state.KeepMetadata && l.SyncedVersion < cur.Version {
		// The provider holds no (readable) metadata: it does not hold the
		// user's unpushed change of it either, so the pending push stays
		// pending and what the provider holds is not known as a whole.
		set["pushed_hash"] = nil
	} else {
		set["status"] = LinkSynced
		set["synced_version"] = next.Version
		set["synced_at"] = t.now
		set["pushed_hash"] = state.Hash
		if !state.KeepMetadata {
			set["metadata_keys"] = metadataKeys(state.Metadata)
		}
	}
	if err := t.writeLink(l.UserID, set, outcome == InboundApplied); err != nil {
		return err
	}
	return t.outcome(outcome, l.UserID, "")
}

// ownState records an event whose state is one Tandem pushed (see rule 5
// of ApplyInbound): the provider holds it now. If that is not the user's
// state and no push is pending, the link is set back and an outbox row asks
// the worker to push the user.
func (t *inboundTx) ownState(l Link, cur User, state RemoteState, set map[string]any, inFlight bool) error {
	set["pushed_hash"] = state.Hash
	if inFlight {
		set["attempt_version"], set["attempt_hash"], set["attempt_email"], set["attempt_at"] = nil, nil, nil, nil
	}
	held := state.over(cur)
	detail := "changes none of the synced fields (a state Tandem pushed)"
	switch {
	case !sameState(cur, held) && l.SyncedVersion >= cur.Version && !inFlight:
		// A late push of an older state landed over the user's: push the
		// user again.
		set["synced_version"], set["status"] = max(cur.Version-1, 0), LinkPending
		if err := t.askPush(cur); err != nil {
			return err
		}
		detail = "the provider holds an older state Tandem pushed; the user is pushed again"
	case l.Status == LinkConflict && sameState(cur, held):
		// The remote object is back to the user's state: whatever
		// conflicted is gone.
		set["status"], set["last_error"] = LinkSynced, nil
	}
	if err := t.writeLink(l.UserID, set); err != nil {
		return err
	}
	return t.outcome(InboundEcho, l.UserID, detail)
}

// olderThanLocalChange records an event older than the user's API change
// (cur.APIVersion), which this provider does not hold yet: the later write
// wins, and the worker's pending push overwrites the remote object, which
// holds the event's state now (recorded as the state it is known to hold).
func (t *inboundTx) olderThanLocalChange(l Link, cur User, state RemoteState, set map[string]any) error {
	set["pushed_hash"] = state.Hash
	if err := t.writeLink(l.UserID, set); err != nil {
		return err
	}
	detail := "older than the user's API change of " + cur.APIChangedAt.UTC().Format(time.RFC3339Nano) +
		" (version " + strconv.FormatInt(cur.APIVersion, 10) + "), which is not pushed yet"
	return t.outcome(InboundStale, l.UserID, detail)
}

// ambiguous reports whether the event's state may not be the remote
// object's latest: it ties with the last applied event, or it may predate
// Tandem's last push, or it is within InboundPushMargin of an API change
// this provider does not hold yet (which of the two came last cannot be
// told from the times; the object as it is now says). The push is compared
// on the provider's own clock (the Date of its answer, at
// RemoteClockResolution) when the provider gave one; otherwise on the
// worker's, with InboundPushMargin for the difference.
func (t *inboundTx) ambiguous(l Link, cur User) bool {
	at := t.ev.OccurredAt
	if l.LastInboundAt != nil && at.Equal(l.LastInboundAt.UTC()) {
		return true
	}
	if cur.APIVersion > l.SyncedVersion && !cur.APIChangedAt.Before(at.Add(-InboundPushMargin)) {
		return true
	}
	if l.PushedRemoteAt != nil {
		return at.Before(l.PushedRemoteAt.UTC().Truncate(RemoteClockResolution).Add(RemoteClockResolution))
	}
	return l.SyncedAt != nil && !at.After(l.SyncedAt.UTC().Add(InboundPushMargin))
}
