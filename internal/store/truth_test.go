package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// TestAFailedPushThenAnUnrelatedEventLosesNothing (issue 10, finding 1): a
// PATCH whose push was refused (429), then a provider event about a field
// Tandem does not sync, still carrying the old name and dated after the
// PATCH: the event changes nothing, and the PATCH is still to be pushed.
func TestAFailedPushThenAnUnrelatedEventLosesNothing(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "lost@example.com", "cus_lost")
	name := "X"
	patched, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)

	// The worker's push of version 2 is refused with a 429.
	msg := "attempt 1 failed, retrying: stripe 429"
	push(t, st, u.ID, func(context.Context, store.User) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkPending, LastError: &msg, ClearAttempt: true}, nil
	})

	// customer.updated for a default payment method: the old state.
	ev := change("cus_lost", state(u.Email, u.Name, u.Metadata))
	ev.OccurredAt = patched.UpdatedAt.Add(10 * time.Second).Truncate(time.Second)
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "X", got.Name, "the API change is kept")
	require.EqualValues(t, 2, got.Version)
	l := link(t, st, u.ID)
	require.EqualValues(t, 1, l.SyncedVersion, "version 2 is still to be pushed")
}

// TestAnEventOfThePushInFlightIsItsEcho: the provider's event carries the
// state of a push whose answer Tandem has not seen: not a remote edit.
func TestAnEventOfThePushInFlightIsItsEcho(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "inflight@example.com", "cus_if")
	name := "B"
	b, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	bState := state(b.Email, b.Name, b.Metadata)
	push(t, st, u.ID, func(ctx context.Context, _ store.User) (store.LinkUpdate, error) {
		// While the push is in flight: the user moves on to C, and the
		// provider's event of the push (B) arrives, dated after C.
		name := "C"
		c, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
		require.NoError(t, err)
		ev := change("cus_if", bState)
		ev.OccurredAt = c.UpdatedAt.Add(10 * time.Second).Truncate(time.Second)
		res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
		require.NoError(t, err)
		require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
		msg := "timeout"
		return store.LinkUpdate{Status: store.LinkPending, LastError: &msg}, nil
	})
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "C", got.Name, "the echo of B never reverts C")
}

// TestAnEventDatedInTheFutureIsRefused (issue 10, finding 6): it applies
// nothing and does not become the link's high-water mark.
func TestAnEventDatedInTheFutureIsRefused(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "future@example.com", "cus_f")
	ev := change("cus_f", state(u.Email, "From 2036", nil))
	ev.OccurredAt = time.Now().AddDate(10, 0, 0)
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundInvalid, res.Outcome)
	require.Nil(t, link(t, st, u.ID).LastInboundAt, "no high-water mark from a forged date")

	genuine := change("cus_f", state(u.Email, "Genuine", nil))
	res, err = st.ApplyInbound(ctx, "stripe", genuine, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome, res.Detail)
}

// TestAnotherProvidersChangeDoesNotHideAnUnpushedAPIChange (finding 3).
func TestAnotherProvidersChangeDoesNotHideAnUnpushedAPIChange(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "hide@example.com", "cus_h")
	old := time.Now().Add(-30 * time.Second).Truncate(time.Second)
	name := "API"
	api, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	// A Salesforce edit of another field lands after the API change.
	contact := "003H"
	require.NoError(t, st.SyncLocked(ctx, u.ID, "salesforce", func(_ context.Context, cur store.User, _ store.Link) (store.LinkUpdate, error) {
		h := state(cur.Email, cur.Name, cur.Metadata).Hash
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &contact, SyncedVersion: &cur.Version, PushedHash: &h}, nil
	}))
	sf := change(contact, state(u.Email, "API", map[string]string{"plan": "sf"}))
	res, err := st.ApplyInbound(ctx, "salesforce", sf, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome, res.Detail)

	// A late Stripe event from before the API change.
	late := change("cus_h", state(u.Email, "Dashboard before the API", u.Metadata))
	late.OccurredAt = old
	res, err = st.ApplyInbound(ctx, "stripe", late, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundStale, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "API", got.Name)
	links, err := st.Links(ctx, u.ID)
	require.NoError(t, err)
	for _, l := range links[u.ID] {
		if l.Provider == "stripe" {
			require.Less(t, l.SyncedVersion, api.Version, "the API change is still to be pushed to Stripe")
		}
	}
}

// push runs one worker push of the user's current state with st: the attempt
// is that state, do stands for the provider call and says what to record.
func push(t *testing.T, st *store.Store, userID string, do func(ctx context.Context, cur store.User) (store.LinkUpdate, error)) {
	t.Helper()
	err := st.Sync(context.Background(), userID, "stripe", time.Minute, func(cur store.User, _ store.Link) store.Plan {
		return store.Plan{Attempt: store.Attempt{Version: cur.Version, Hash: state(cur.Email, cur.Name, cur.Metadata).Hash, Email: cur.Email}}
	}, func(ctx context.Context, cur store.User, _ store.Link, _ int64) (store.LinkUpdate, error) {
		return do(ctx, cur)
	})
	require.NoError(t, err)
}

// pushState records a successful push of the user's current state to remote.
func pushState(t *testing.T, st *store.Store, userID, remote string) {
	t.Helper()
	push(t, st, userID, func(_ context.Context, cur store.User) (store.LinkUpdate, error) {
		h := state(cur.Email, cur.Name, cur.Metadata).Hash
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, SyncedVersion: &cur.Version, PushedHash: &h, ClearAttempt: true}, nil
	})
}

// TestALatePushOfAnOlderStateIsNotARemoteEdit: the provider shows a state
// Tandem pushed earlier (a late push landed over a newer one, found by a
// re-read): it is not applied as a remote edit (which would revert the user
// everywhere); the user is pushed again instead.
func TestALatePushOfAnOlderStateIsNotARemoteEdit(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "late@example.com", Name: "A"}, nil)
	require.NoError(t, err)
	pushState(t, st, u.ID, "cus_late")
	name := "B"
	b, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	pushState(t, st, u.ID, "cus_late")
	before := outboxRows(t, dsn)

	ev := change("cus_late", state(u.Email, "A", u.Metadata))
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
	require.Contains(t, res.Detail, "pushed again")
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "B", got.Name, "Tandem's own older state never reverts the user")
	require.Equal(t, b.Version, got.Version)
	l := link(t, st, u.ID)
	require.Less(t, l.SyncedVersion, b.Version, "the provider does not hold the user's version")
	require.Equal(t, ev.State.Hash, *l.PushedHash, "the provider holds A")
	require.Equal(t, before+1, outboxRows(t, dsn), "the worker is asked to push the user again")
}

// TestNoCreateLeavesUnknownObjectsAlone: with TANDEM_INBOUND_CREATE=false an
// unknown customer (a Checkout guest) makes no user, but one with a user's
// email is still linked.
func TestNoCreateLeavesUnknownObjectsAlone(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	guest := change("cus_guest", state("guest@example.com", "Guest", nil))
	guest.NoCreate = true
	res, err := st.ApplyInbound(ctx, "stripe", guest, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundIgnoredUnknown, res.Outcome)
	_, err = st.CreateUser(ctx, store.NewUser{Email: "guest@example.com", Name: "Signed up later"}, nil)
	require.NoError(t, err, "the guest's email is free for a sign-up")

	again := change("cus_guest", state("guest@example.com", "Guest", nil))
	again.NoCreate = true
	res, err = st.ApplyInbound(ctx, "stripe", again, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundLinked, res.Outcome)
}

// TestATagAloneLinksNothing (finding 7): a customer someone tagged with a
// user's id, with another email, is not linked and copies nothing; the
// user's link shows the conflict, naming the customer.
func TestATagAloneLinksNothing(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	victim, err := st.CreateUser(ctx, store.NewUser{Email: "victim@example.com", Name: "Victim"}, nil)
	require.NoError(t, err)
	forged := change("cus_forged", state("attacker@example.com", "Attacker", nil))
	forged.UserID = victim.ID
	res, err := st.ApplyInbound(ctx, "stripe", forged, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundConflict, res.Outcome)
	got, err := st.GetUser(ctx, victim.ID)
	require.NoError(t, err)
	require.Equal(t, "victim@example.com", got.Email)
	require.Equal(t, "Victim", got.Name)
	l := link(t, st, victim.ID)
	require.Nil(t, l.RemoteID, "not linked")
	require.Equal(t, store.LinkConflict, l.Status)
	require.Contains(t, *l.LastError, "cus_forged")
}

// TestEventsAreComparedWithThePushOnTheProvidersClock (finding 4): the
// worker's clock runs 5 s behind. A dashboard edit made just before
// Tandem's push (which overwrote it in Stripe) arrives late: compared with
// the worker's synced_at it looks newer than the push; compared with the
// push's own Date (Stripe's clock) it may predate it, so it is settled by a
// re-read, which shows the push.
func TestEventsAreComparedWithThePushOnTheProvidersClock(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	behind, err := store.Open(ctx, dsn, store.Options{Now: func() time.Time { return time.Now().Add(-5 * time.Second) }})
	require.NoError(t, err)
	t.Cleanup(func() { behind.Close() })
	u, err := st.CreateUser(ctx, store.NewUser{Email: "skew@example.com", Name: "Pushed"}, nil)
	require.NoError(t, err)
	stripeNow := time.Now().Truncate(time.Second)
	remote := "cus_skew"
	pushed := state(u.Email, u.Name, u.Metadata)
	push(t, behind, u.ID, func(context.Context, store.User) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, SyncedVersion: &u.Version, PushedHash: &pushed.Hash,
			PushedRemoteAt: &stripeNow, ClearAttempt: true}, nil
	})

	ev := change(remote, state(u.Email, "Dashboard, overwritten by the push", nil))
	ev.OccurredAt = stripeNow.Add(-time.Second)
	reads := 0
	res, err := st.ApplyInbound(ctx, "stripe", ev, func(context.Context) (store.RemoteState, bool, error) {
		reads++
		return pushed, true, nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, reads, "settled by a re-read")
	require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Pushed", got.Name, "Tandem holds what Stripe holds")
}

// TestUnreadableMetadataNeverMarksAPendingPushSynced (finding 10): an
// inbound state without readable metadata (a Salesforce metadata field that
// does not parse) says nothing about the user's unpushed metadata change:
// the link stays behind, and the push is not skipped.
func TestUnreadableMetadataNeverMarksAPendingPushSynced(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "md@example.com", "003MD")
	v := "enterprise"
	patched, err := st.UpdateUser(ctx, u.ID, store.Patch{Metadata: map[string]*string{"plan": &v}}, 0)
	require.NoError(t, err)
	ev := change("003MD", store.RemoteState{Email: u.Email, Name: "Renamed in Salesforce", KeepMetadata: true,
		HashWith: func(md map[string]string) string { return state(u.Email, "Renamed in Salesforce", md).Hash }})
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Renamed in Salesforce", got.Name)
	require.Equal(t, "enterprise", got.Metadata["plan"], "the user keeps its metadata")
	l := link(t, st, u.ID)
	require.Less(t, l.SyncedVersion, patched.Version, "the metadata change is still to be pushed")
	require.Nil(t, l.PushedHash, "what the provider holds is not known as a whole")
}

// TestAnEmailTheAPIRefusesLinksNobody: MariaDB's LOWER() folds the Kelvin
// sign into k, so "Kate@…" written with it would find kate@…'s user. An
// unknown object whose state the API would refuse is recorded invalid
// before its email is looked up.
func TestAnEmailTheAPIRefusesLinksNobody(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	kate, err := st.CreateUser(ctx, store.NewUser{Email: "kate@example.com", Name: "Kate"}, nil)
	require.NoError(t, err)
	squat := change("cus_squat", state("\u212Aate@example.com", "Squatter", nil))
	squat.State.Invalid = "email: not a valid address"
	res, err := st.ApplyInbound(ctx, "stripe", squat, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundInvalid, res.Outcome)
	links, err := st.Links(ctx, kate.ID)
	require.NoError(t, err)
	require.Empty(t, links[kate.ID], "kate is linked to nothing")
}

// TestAnEventWithinTheMarginOfAnUnpushedAPIChangeIsReRead: which of a
// dashboard edit and an API change made within InboundPushMargin of each
// other came last cannot be told from their times, so the event is not
// applied at face value (a late, older edit would then undo newer writes on
// both sides): the object is re-read and what it holds now is applied.
func TestAnEventWithinTheMarginOfAnUnpushedAPIChangeIsReRead(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "margin@example.com", "cus_margin")
	name := "api 5"
	api, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	older := change("cus_margin", state(u.Email, "dash 4", u.Metadata))
	older.OccurredAt = api.UpdatedAt.Add(-time.Second).Truncate(time.Second)
	now := state(u.Email, "dash 5", u.Metadata)
	reads := 0
	res, err := st.ApplyInbound(ctx, "stripe", older, func(context.Context) (store.RemoteState, bool, error) {
		reads++
		return now, true, nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, reads)
	require.Equal(t, store.InboundApplied, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "dash 5", got.Name, "what the object holds now, not the older edit")
}
