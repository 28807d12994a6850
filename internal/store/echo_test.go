package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// TestAnEchoOfAConfirmedPushWritesNothing (issue 15): the echo of a push
// whose answer Tandem recorded, and the echo of a create not recorded yet,
// are dropped without a write (no inbound_events row, the link untouched),
// also when redelivered; an older real event delivered after the echo is
// still settled by a re-read, and real events stay de-duplicated.
func TestAnEchoOfAConfirmedPushWritesNothing(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "echo15@example.com", Name: "Pushed"}, nil)
	require.NoError(t, err)
	stripeNow := time.Now().Truncate(time.Second)
	remote := "cus_echo15"
	pushed := state(u.Email, u.Name, u.Metadata)
	push(t, st, u.ID, func(context.Context, store.User) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, SyncedVersion: &u.Version, PushedHash: &pushed.Hash,
			PushedRemoteAt: &stripeNow, ClearAttempt: true}, nil
	})
	before := link(t, st, u.ID)
	rows := func() int64 { return testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events") }

	echo := change(remote, pushed)
	echo.Echo, echo.UserID, echo.OccurredAt = true, u.ID, stripeNow
	for range 2 { // the delivery and a redelivery
		res, err := st.ApplyInbound(ctx, "stripe", echo, noRefetch(t))
		require.NoError(t, err)
		require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
		require.Zero(t, rows(), "an echo is not recorded")
		after := link(t, st, u.ID)
		require.Equal(t, before.UpdatedAt, after.UpdatedAt, "an echo writes nothing to the link")
		require.Nil(t, after.LastInboundAt)
	}

	// A dashboard edit made before the push (which overwrote it), delivered
	// after the echo: not the latest, so settled by a re-read.
	older := change(remote, state(u.Email, "Dashboard, overwritten by the push", nil))
	older.OccurredAt = stripeNow.Add(-time.Second)
	reads := 0
	res, err := st.ApplyInbound(ctx, "stripe", older, func(context.Context) (store.RemoteState, bool, error) {
		reads++
		return pushed, true, nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, reads, "settled by a re-read")
	require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Pushed", got.Name)
	require.EqualValues(t, 1, got.Version)

	// A real edit is applied once, however often it is delivered.
	edit := change(remote, state(u.Email, "Edited", nil))
	res, err = st.ApplyInbound(ctx, "stripe", edit, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundApplied, res.Outcome)
	res, err = st.ApplyInbound(ctx, "stripe", edit, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundDuplicate, res.Outcome)
	got, err = st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.EqualValues(t, 2, got.Version)

	// The echo of a create whose answer the worker has not recorded yet:
	// the worker records the object; nothing is written, nobody is made.
	v, err := st.CreateUser(ctx, store.NewUser{Email: "echo15b@example.com", Name: "New"}, nil)
	require.NoError(t, err)
	users := testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users")
	created := change("cus_echo15b", state(v.Email, v.Name, nil))
	created.Echo, created.UserID, created.EventType = true, v.ID, "customer.created"
	for range 2 {
		res, err := st.ApplyInbound(ctx, "stripe", created, noRefetch(t))
		require.NoError(t, err)
		require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
	}
	require.Equal(t, users, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users"))
	require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM provider_links WHERE user_id = ?", v.ID))
	require.EqualValues(t, 2, rows(), "only the real events (the older edit and the edit) are recorded")
}

// TestAnEchoOfAPushInFlightKeepsItsTime: an echo that arrives while the
// push's outcome is unknown is the only sign the push executed: its time
// is recorded as the link's last event, so an older real event delivered
// after it (made before the push overwrote it) is stale, even when the
// push's answer is never seen.
func TestAnEchoOfAPushInFlightKeepsItsTime(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u := linked(t, st, "inflight15@example.com", "cus_if15")
	name := "B"
	b, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	at := time.Now().Add(10 * time.Second).Truncate(time.Second)
	push(t, st, u.ID, func(ctx context.Context, _ store.User) (store.LinkUpdate, error) {
		echo := change("cus_if15", state(b.Email, b.Name, b.Metadata))
		echo.Echo, echo.UserID, echo.OccurredAt = true, u.ID, at
		res, err := st.ApplyInbound(ctx, "stripe", echo, noRefetch(t))
		require.NoError(t, err)
		require.Equal(t, store.InboundEcho, res.Outcome, res.Detail)
		msg := "timeout" // the answer is lost: the outcome stays unknown
		return store.LinkUpdate{Status: store.LinkPending, LastError: &msg}, nil
	})
	l := link(t, st, u.ID)
	require.NotNil(t, l.LastInboundAt)
	require.True(t, l.LastInboundAt.Equal(at), "the echo's time is kept")

	older := change("cus_if15", state(u.Email, "Dashboard, before the push", nil))
	older.OccurredAt = at.Add(-time.Second)
	res, err := st.ApplyInbound(ctx, "stripe", older, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundStale, res.Outcome, res.Detail)
	got, err := st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "B", got.Name)
}
