package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// state builds a RemoteState with a stand-in hash (the store treats it as
// opaque).
func state(email, name string, md map[string]string) store.RemoteState {
	st := store.RemoteState{Email: email, Name: name, Metadata: md}
	keys := slices.Sorted(maps.Keys(md))
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q", email, name, "")
	for _, k := range keys {
		fmt.Fprintf(h, " %q=%q", k, md[k])
	}
	st.Hash = hex.EncodeToString(h.Sum(nil))
	return st
}

var evSeq atomic.Int64

// change is an inbound update of remote, at a time clearly after any push
// made in the test (so no re-read is needed).
func change(remote string, st store.RemoteState) store.InboundChange {
	return store.InboundChange{EventID: fmt.Sprintf("evt_%d", evSeq.Add(1)), EventType: "customer.updated",
		RemoteID: remote, OccurredAt: time.Now().Add(30 * time.Second).Truncate(time.Second), State: st, Payload: []byte(`{"raw":true}`)}
}

// noRefetch fails the test if a re-read happens.
func noRefetch(t *testing.T) store.RefetchFunc {
	return func(context.Context) (store.RemoteState, bool, error) {
		t.Error("unexpected refetch")
		return store.RemoteState{}, false, errors.New("unexpected refetch")
	}
}

// linked creates a user and records a push of it to remote as the worker
// does; it returns the user.
func linked(t *testing.T, st *store.Store, email, remote string) store.User {
	t.Helper()
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: email, Name: "Ada", Metadata: map[string]string{"plan": "pro"}}, nil)
	require.NoError(t, err)
	pushed := state(u.Email, u.Name, u.Metadata).Hash
	err = st.SyncLocked(ctx, u.ID, "stripe", func(_ context.Context, u store.User, _ store.Link) (store.LinkUpdate, error) {
		v := u.Version
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, SyncedVersion: &v, PushedHash: &pushed,
			MetadataKeys: []string{"plan"}, SetMetadataKeys: true}, nil
	})
	require.NoError(t, err)
	return u
}

func link(t *testing.T, st *store.Store, userID string) store.Link {
	t.Helper()
	links, err := st.Links(context.Background(), userID)
	require.NoError(t, err)
	require.Len(t, links[userID], 1)
	return links[userID][0]
}

func outboxRows(t *testing.T, dsn string) int64 {
	return testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox")
}

func TestApplyInboundUpdatesUserWithoutOutboxRow(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "ada@example.com", "cus_1")
	before := outboxRows(t, dsn)

	ev := change("cus_1", state("ada.k@example.com", "Ada King", map[string]string{"tier": "gold"}))
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundResult{Outcome: store.InboundApplied, UserID: u.ID, Version: 2}, res)

	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "ada.k@example.com", got.Email)
	require.Equal(t, "Ada King", got.Name)
	require.Equal(t, map[string]string{"tier": "gold"}, got.Metadata)
	require.EqualValues(t, 2, got.Version)
	require.Equal(t, before, outboxRows(t, dsn), "an inbound change writes no outbox row")

	l := link(t, st, u.ID)
	require.Equal(t, store.LinkSynced, l.Status)
	require.EqualValues(t, 2, l.SyncedVersion)
	require.Equal(t, ev.State.Hash, *l.PushedHash)
	require.Equal(t, []string{"tier"}, l.MetadataKeyList())
	require.True(t, l.LastInboundAt.Equal(ev.OccurredAt))
	require.Nil(t, l.LastError)

	rows, err := st.InboundEvents(ctx, "stripe", "", 10)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, string(store.InboundApplied), rows[0].Outcome)
	require.Equal(t, u.ID, *rows[0].UserID)
	require.Nil(t, rows[0].Payload, "payloads are kept only for conflicts")

	// The same state again (another event) changes nothing.
	ev2 := change("cus_1", ev.State)
	ev2.OccurredAt = ev.OccurredAt.Add(time.Minute)
	ev2.State.Hash = "different-hash-same-fields"
	res, err = st.ApplyInbound(ctx, "stripe", ev2, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundUnchanged, res.Outcome)
	require.EqualValues(t, 2, res.Version)
}

func TestApplyInboundDuplicatesApplyOnce(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "dup@example.com", "cus_dup")
	ev := change("cus_dup", state("dup@example.com", "Renamed", nil))

	var wg sync.WaitGroup
	outcomes := make(chan store.InboundOutcome, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
			require.NoError(t, err)
			outcomes <- res.Outcome
		}()
	}
	wg.Wait()
	close(outcomes)
	count := map[store.InboundOutcome]int{}
	for o := range outcomes {
		count[o]++
	}
	require.Equal(t, map[store.InboundOutcome]int{store.InboundApplied: 1, store.InboundDuplicate: 4}, count)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.EqualValues(t, 2, got.Version)

	// The same id from another provider is another event.
	_, err = st.ApplyInbound(ctx, "other", ev, noRefetch(t))
	require.NoError(t, err)
}

func TestApplyInboundIgnoresOlderEventsAndSettlesTies(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "order@example.com", "cus_o")

	newer := change("cus_o", state("order@example.com", "Newer", nil))
	res, err := st.ApplyInbound(ctx, "stripe", newer, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome)

	older := change("cus_o", state("order@example.com", "Older", nil))
	older.OccurredAt = newer.OccurredAt.Add(-time.Second)
	res, err = st.ApplyInbound(ctx, "stripe", older, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundStale, res.Outcome)

	// Same second: the object is re-read and what it holds now applies.
	tie := change("cus_o", state("order@example.com", "Tie", nil))
	tie.OccurredAt = newer.OccurredAt
	calls := 0
	res, err = st.ApplyInbound(ctx, "stripe", tie, func(context.Context) (store.RemoteState, bool, error) {
		calls++
		return state("order@example.com", "Current", nil), true, nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, calls)
	require.Equal(t, store.InboundApplied, res.Outcome)
	require.True(t, res.Refetched)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Current", got.Name)
	require.EqualValues(t, 3, got.Version)

	// A tie whose object is gone: its deletion event will apply.
	gone := change("cus_o", state("order@example.com", "Gone", nil))
	gone.OccurredAt = newer.OccurredAt
	res, err = st.ApplyInbound(ctx, "stripe", gone, func(context.Context) (store.RemoteState, bool, error) {
		return store.RemoteState{}, false, nil
	})
	require.NoError(t, err)
	require.Equal(t, store.InboundStale, res.Outcome)
}

func TestApplyInboundOlderThanAnUnpushedLocalChangeLoses(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "lww@example.com", "cus_lww")
	name := "Local"
	local, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	require.EqualValues(t, 2, local.Version)
	require.Equal(t, store.OriginAPI, local.ChangedBy)

	// A dashboard edit made well before the local change (its webhook held
	// back), while the worker has not pushed the local change yet.
	older := change("cus_lww", state(u.Email, "Dashboard", nil))
	older.OccurredAt = local.UpdatedAt.Add(-store.InboundPushMargin - time.Second).Truncate(time.Second)
	res, err := st.ApplyInbound(ctx, "stripe", older, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundStale, res.Outcome)
	require.Contains(t, res.Detail, "not pushed yet")
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Local", got.Name)
	require.EqualValues(t, 2, got.Version)
	l := link(t, st, u.ID)
	require.EqualValues(t, 1, l.SyncedVersion, "the local change is still to be pushed")
	require.Equal(t, older.State.Hash, *l.PushedHash, "Stripe holds the dashboard edit: a push of the user's state must not be skipped")
	require.True(t, l.LastInboundAt.Equal(older.OccurredAt), "the event's time is recorded")

	// A remote change made after the local one wins, pushed or not.
	newer := change("cus_lww", state(u.Email, "Dashboard later", nil))
	res, err = st.ApplyInbound(ctx, "stripe", newer, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome)
	got, err = st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Dashboard later", got.Name)
	require.EqualValues(t, 3, got.Version)
	require.EqualValues(t, 3, link(t, st, u.ID).SyncedVersion)
}

// TestApplyInboundAnotherProvidersChangeDoesNotOutrankAnEvent: a change
// applied from Salesforce's webhook is not pushed to Stripe and is dated
// when Tandem received it, so a Stripe event made after the Salesforce
// change (but received later) still applies.
func TestApplyInboundAnotherProvidersChangeDoesNotOutrankAnEvent(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "two@example.com", "cus_two")
	contact := "003TWO"
	err := st.SyncLocked(ctx, u.ID, "salesforce", func(_ context.Context, u store.User, _ store.Link) (store.LinkUpdate, error) {
		v, h := u.Version, state(u.Email, u.Name, u.Metadata).Hash
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &contact, SyncedVersion: &v, PushedHash: &h}, nil
	})
	require.NoError(t, err)
	now := time.Now()
	reread := func(st store.RemoteState) store.RefetchFunc {
		return func(context.Context) (store.RemoteState, bool, error) { return st, true, nil }
	}

	sf := change(contact, state(u.Email, "From Salesforce", u.Metadata))
	sf.OccurredAt = now.Add(-20 * time.Second).Truncate(time.Second)
	res, err := st.ApplyInbound(ctx, "salesforce", sf, reread(sf.State))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "salesforce", got.ChangedBy, "version 2 came from Salesforce's webhook")

	stripeEdit := change("cus_two", state(u.Email, "From Stripe", u.Metadata))
	stripeEdit.OccurredAt = now.Add(-10 * time.Second).Truncate(time.Second)
	res, err = st.ApplyInbound(ctx, "stripe", stripeEdit, reread(stripeEdit.State))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome, res.Detail)
	got, err = st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "From Stripe", got.Name)
	require.EqualValues(t, 3, got.Version)
	require.Equal(t, "stripe", got.ChangedBy)
}

// TestApplyInboundLinkingAnOlderObjectKeepsTheUsersNewerState: a customer
// made in the dashboard before the user was created through the API (its
// webhook late, the user not pushed yet) is linked by email, but its older
// state does not overwrite the user's: the worker pushes the user's.
func TestApplyInboundLinkingAnOlderObjectKeepsTheUsersNewerState(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "late-link@example.com", Name: "From the API"}, nil)
	require.NoError(t, err)
	ev := change("cus_old", state("late-link@example.com", "From the dashboard", nil))
	ev.EventType = "customer.created"
	ev.OccurredAt = u.UpdatedAt.Add(-store.InboundPushMargin - 5*time.Second).Truncate(time.Second)
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundLinked, res.Outcome)
	require.Contains(t, res.Detail, "without applying its state")
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "From the API", got.Name)
	require.EqualValues(t, 1, got.Version)
	l := link(t, st, u.ID)
	require.Equal(t, "cus_old", *l.RemoteID, "linked: the worker updates this customer, no second one")
	require.EqualValues(t, 0, l.SyncedVersion, "the user's state is still to be pushed")
	require.Equal(t, ev.State.Hash, *l.PushedHash, "the link knows what the customer holds")
}

func TestApplyInboundReReadsEventsThatMayPredateAPush(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "race@example.com", "cus_r")
	// A dashboard edit made just before the push, delivered after it: the
	// push has overwritten it, so what Stripe holds now is the pushed state.
	ev := change("cus_r", state("race@example.com", "Dashboard", nil))
	ev.OccurredAt = time.Now().Add(-time.Second).Truncate(time.Second)
	res, err := st.ApplyInbound(ctx, "stripe", ev, func(context.Context) (store.RemoteState, bool, error) {
		return state(u.Email, u.Name, u.Metadata), true, nil
	})
	require.NoError(t, err)
	require.Equal(t, store.InboundEcho, res.Outcome)
	require.True(t, res.Refetched)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Ada", got.Name)
}

func TestApplyInboundRefetchFailureCommitsNothing(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "fail@example.com", "cus_f")
	ev := change("cus_f", state("fail@example.com", "X", nil))
	ev.OccurredAt = time.Now().Truncate(time.Second)
	_, err := st.ApplyInbound(ctx, "stripe", ev, func(context.Context) (store.RemoteState, bool, error) {
		return store.RemoteState{}, false, errors.New("stripe is down")
	})
	require.ErrorContains(t, err, "stripe is down")
	require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events"))

	// Redelivered, it applies.
	res, err := st.ApplyInbound(ctx, "stripe", ev, func(context.Context) (store.RemoteState, bool, error) {
		return state("fail@example.com", "Y", nil), true, nil
	})
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Y", got.Name)
}

func TestApplyInboundIgnoresEchoes(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "echo@example.com", "cus_e")

	ev := change("cus_e", state("echo@example.com", "Echoed", nil))
	ev.Echo = true
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundEcho, res.Outcome)
	l := link(t, st, u.ID)
	require.True(t, l.LastInboundAt.Equal(ev.OccurredAt), "an echo still advances the last event time")

	// The pushed state, changed in a field Tandem does not sync.
	ev = change("cus_e", state(u.Email, u.Name, u.Metadata))
	ev.OccurredAt = ev.OccurredAt.Add(time.Minute)
	res, err = st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundEcho, res.Outcome)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.EqualValues(t, 1, got.Version)
}

func TestApplyInboundDeletesUser(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "del@example.com", "cus_d")
	before := outboxRows(t, dsn)
	ev := change("cus_d", state("del@example.com", "Ada", nil))
	ev.Deleted, ev.EventType = true, "customer.deleted"
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundResult{Outcome: store.InboundDeleted, UserID: u.ID, Version: 2}, res)
	_, err = st.GetUser(ctx, u.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	l := link(t, st, u.ID)
	require.Equal(t, store.LinkDeleted, l.Status)
	require.EqualValues(t, 2, l.SyncedVersion)
	require.Equal(t, before, outboxRows(t, dsn))

	// A late update of the deleted customer changes nothing.
	res, err = st.ApplyInbound(ctx, "stripe", change("cus_d", state("del@example.com", "Late", nil)), noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundIgnoredDeleted, res.Outcome)

	// The email is free again.
	_, err = st.CreateUser(ctx, store.NewUser{Email: "del@example.com", Name: "New"}, nil)
	require.NoError(t, err)
}

func TestApplyInboundUnknownCustomers(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	before := outboxRows(t, dsn)

	// A new email: a new user, linked.
	ev := change("cus_new", state("new@example.com", "New", map[string]string{"a": "1"}))
	ev.EventType = "customer.created"
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundCreated, res.Outcome)
	require.EqualValues(t, 1, res.Version)
	u, err := st.GetUser(ctx, res.UserID)
	require.NoError(t, err)
	require.Equal(t, "new@example.com", u.Email)
	require.Equal(t, map[string]string{"a": "1"}, u.Metadata)
	l := link(t, st, u.ID)
	require.Equal(t, "cus_new", *l.RemoteID)
	require.Equal(t, store.LinkSynced, l.Status)
	require.EqualValues(t, 1, l.SyncedVersion)
	require.Equal(t, ev.State.Hash, *l.PushedHash)
	require.Equal(t, []string{"a"}, l.MetadataKeyList())

	// The email of a user without a Stripe customer: linked, but the
	// customer's fields are not copied over the user: an outbox row asks
	// the worker to push the user's state over the customer.
	plain, err := st.CreateUser(ctx, store.NewUser{Email: "Plain@Example.com", Name: "Plain"}, nil)
	require.NoError(t, err)
	plainEv := change("cus_plain", state("plain@example.com", "Plain Dashboard", nil))
	res, err = st.ApplyInbound(ctx, "stripe", plainEv, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundLinked, res.Outcome)
	require.Equal(t, plain.ID, res.UserID)
	require.EqualValues(t, 1, res.Version)
	got, err := st.GetUser(ctx, plain.ID)
	require.NoError(t, err)
	require.Equal(t, "Plain", got.Name, "linking never copies the object's fields")
	l = link(t, st, plain.ID)
	require.Equal(t, "cus_plain", *l.RemoteID)
	require.Equal(t, store.LinkPending, l.Status)
	require.EqualValues(t, 0, l.SyncedVersion)
	require.Equal(t, plainEv.State.Hash, *l.PushedHash)

	// The email of a user linked to another customer: a conflict.
	other := linked(t, st, "taken@example.com", "cus_taken")
	dupe := change("cus_dupe", state("taken@example.com", "Dupe", nil))
	res, err = st.ApplyInbound(ctx, "stripe", dupe, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundConflict, res.Outcome)
	require.Equal(t, other.ID, res.UserID)
	l = link(t, st, other.ID)
	require.Equal(t, store.LinkConflict, l.Status)
	require.Contains(t, *l.LastError, "cus_dupe")
	require.Equal(t, "cus_taken", *l.RemoteID)

	// A customer tagged with a user whose link has no remote id yet, with
	// the user's email (in another case): linked.
	tagged, err := st.CreateUser(ctx, store.NewUser{Email: "tagged@example.com", Name: "T"}, nil)
	require.NoError(t, err)
	ev = change("cus_tagged", state("Tagged@example.com", "T", nil))
	ev.UserID = tagged.ID
	res, err = st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundLinked, res.Outcome)
	require.Equal(t, tagged.ID, res.UserID)

	// Without an email, or deleted: ignored.
	res, err = st.ApplyInbound(ctx, "stripe", change("cus_anon", state("", "Anon", nil)), noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundIgnoredNoEmail, res.Outcome)
	del := change("cus_unknown", state("x@example.com", "X", nil))
	del.Deleted = true
	res, err = st.ApplyInbound(ctx, "stripe", del, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundIgnoredUnknown, res.Outcome)

	require.Equal(t, before+5, outboxRows(t, dsn), "the API's creates and the two links that need a push wrote outbox rows")
}

func TestApplyInboundUnknownCustomerRacesCreateOneUser(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	// created and updated of one new customer arrive at once.
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := change("cus_race", state("race@example.com", fmt.Sprintf("N%d", i), nil))
			ev.OccurredAt = ev.OccurredAt.Add(time.Duration(i) * time.Second)
			_, err := st.ApplyInbound(ctx, "stripe", ev, func(context.Context) (store.RemoteState, bool, error) {
				return state("race@example.com", "Fetched", nil), true, nil
			})
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.EqualValues(t, 1, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM provider_links WHERE remote_id = 'cus_race'"))
	require.EqualValues(t, 6, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events"))
}

func TestApplyInboundEmailConflictKeepsEverything(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	a := linked(t, st, "a@example.com", "cus_a")
	b, err := st.CreateUser(ctx, store.NewUser{Email: "b@example.com", Name: "B"}, nil)
	require.NoError(t, err)
	before := outboxRows(t, dsn)

	ev := change("cus_a", state("B@example.com", "A renamed", nil))
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundConflict, res.Outcome)
	require.Contains(t, res.Detail, b.ID)

	got, err := st.GetUser(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, "a@example.com", got.Email)
	require.Equal(t, "Ada", got.Name, "nothing of the event is applied")
	require.EqualValues(t, 1, got.Version)
	l := link(t, st, a.ID)
	require.Equal(t, store.LinkConflict, l.Status)
	require.Contains(t, *l.LastError, `"B@example.com"`)
	require.Nil(t, l.PushedHash, "Stripe holds something else than the push now: the next push must happen")
	require.Equal(t, before, outboxRows(t, dsn))

	rows, err := st.InboundEvents(ctx, "stripe", store.InboundConflict, 10)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, ev.Payload, rows[0].Payload, "the event is kept for an operator")
	require.Equal(t, ev.EventID, rows[0].EventID)

	// Fixed in Stripe (the email changed to a free one): the next event
	// applies and clears the conflict.
	fixed := change("cus_a", state("a2@example.com", "A renamed", nil))
	fixed.OccurredAt = ev.OccurredAt.Add(time.Minute)
	res, err = st.ApplyInbound(ctx, "stripe", fixed, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome)
	l = link(t, st, a.ID)
	require.Equal(t, store.LinkSynced, l.Status)
	require.Nil(t, l.LastError)
}

func TestApplyInboundRejectsStateItCannotStore(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "inv@example.com", "cus_inv")
	res, err := st.ApplyInbound(ctx, "stripe", change("cus_inv", state("", "No Email", nil)), noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundInvalid, res.Outcome)
	l := link(t, st, u.ID)
	require.Equal(t, store.LinkConflict, l.Status)
	require.Contains(t, *l.LastError, "no email")

	_, err = st.ApplyInbound(ctx, "stripe", store.InboundChange{EventID: "évt", RemoteID: "cus_inv", OccurredAt: time.Now()}, nil)
	require.Error(t, err, "ids must be printable ASCII")
	_, err = st.ApplyInbound(ctx, "stripe", store.InboundChange{EventID: "evt_x", RemoteID: "cus_inv"}, nil)
	require.Error(t, err, "a time is required")
}

// TestApplyInboundAndWorkerPushesDoNotDeadlock runs inbound events and
// worker-style pushes (SyncLocked, which does not retry) on one link at once:
// neither may fail. (On so small a table MariaDB runs SyncLocked's UPDATE of
// the link through the (provider, remote_id) index; had ApplyInbound locked
// the link through that index, the two would deadlock.)
func TestApplyInboundAndWorkerPushesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	var users []store.User
	for i := range 1 {
		users = append(users, linked(t, st, fmt.Sprintf("mix%d@example.com", i), fmt.Sprintf("cus_mix%d", i)))
	}
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 15 {
				u := users[(g+n)%len(users)]
				remote := fmt.Sprintf("cus_mix%d", (g+n)%len(users))
				if g%2 == 0 {
					err := st.SyncLocked(ctx, u.ID, "stripe", func(_ context.Context, cur store.User, _ store.Link) (store.LinkUpdate, error) {
						v, h := cur.Version, state(cur.Email, cur.Name, cur.Metadata).Hash
						return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, SyncedVersion: &v, PushedHash: &h,
							MetadataKeys: []string{}, SetMetadataKeys: true}, nil
					})
					require.NoError(t, err)
					continue
				}
				ev := change(remote, state(u.Email, fmt.Sprintf("N%d-%d", g, n), nil))
				ev.UserID = u.ID
				ev.OccurredAt = ev.OccurredAt.Add(time.Duration(n) * time.Second)
				_, err := st.ApplyInbound(ctx, "stripe", ev, func(context.Context) (store.RemoteState, bool, error) {
					return state(u.Email, "Fetched", nil), true, nil
				})
				require.NoError(t, err)
			}
		}()
	}
	wg.Wait()
}
