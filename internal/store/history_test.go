package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// A user's history holds its changes, pushes and resyncs, newest first, in
// pages; it is pruned by age.
func TestHistoryRecordsChangesPushesAndResyncs(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "h@example.com", Name: "H"}, nil)
	require.NoError(t, err)
	name := "H2"
	_, err = st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	remote, v := "cus_h", int64(2)
	require.NoError(t, st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, SyncedVersion: &v}, nil
	}))
	refused := "card declined"
	err = st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkFailed, LastError: &refused}, errors.New("400 from Stripe")
	})
	require.Error(t, err)
	require.NoError(t, st.Resync(ctx, u.ID, "stripe"))

	h, more, err := st.History(ctx, u.ID, store.HistoryQuery{Limit: 10})
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, h, 5)
	kinds := []string{}
	for _, e := range h {
		kinds = append(kinds, e.Kind+":"+e.Outcome)
	}
	require.Equal(t, []string{"resync:", "push:failed", "push:synced", "change:updated", "change:created"}, kinds)
	require.Equal(t, "card declined", h[1].Error)
	require.Equal(t, "stripe", h[1].Provider)
	require.Equal(t, int64(2), h[1].Version)
	require.Equal(t, store.OriginAPI, h[4].Origin)

	// Pages: two, then the rest from the cursor.
	p1, more, err := st.History(ctx, u.ID, store.HistoryQuery{Limit: 2})
	require.NoError(t, err)
	require.True(t, more)
	last := p1[len(p1)-1]
	p2, more, err := st.History(ctx, u.ID, store.HistoryQuery{Limit: 10, BeforeAt: last.At, BeforeID: last.ID})
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, p2, 3)
	require.Equal(t, h[2].ID, p2[0].ID)

	_, _, err = st.History(ctx, "0193a8b0-0000-7000-8000-000000000000", store.HistoryQuery{Limit: 10})
	require.ErrorIs(t, err, store.ErrNotFound)

	n, err := st.PruneHistory(ctx, time.Now().Add(time.Hour), 3)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	h, _, err = st.History(ctx, u.ID, store.HistoryQuery{Limit: 10})
	require.NoError(t, err)
	require.Len(t, h, 2, "the oldest entries are pruned first")
	require.Equal(t, store.HistoryResync, h[0].Kind)
}

// With history off nothing is recorded.
func TestHistoryOff(t *testing.T) {
	t.Parallel()
	_, dsn := testutil.NewStore(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn, store.Options{History: store.HistoryOptions{Off: true}})
	require.NoError(t, err)
	defer st.Close()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "off@example.com", Name: "Off"}, nil)
	require.NoError(t, err)
	h, _, err := st.History(ctx, u.ID, store.HistoryQuery{Limit: 10})
	require.NoError(t, err)
	require.Empty(t, h)
}

// The operator's views: users by sync status, the attention list, and the
// list filter.
func TestStatusViews(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	mk := func(email string) store.User {
		u, err := st.CreateUser(ctx, store.NewUser{Email: email, Name: "S"}, nil)
		require.NoError(t, err)
		return u
	}
	synced, failed, fresh := mk("s@example.com"), mk("f@example.com"), mk("n@example.com")
	v := int64(1)
	require.NoError(t, st.SyncLocked(ctx, synced.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, SyncedVersion: &v}, nil
	}))
	msg := "No such customer"
	_ = st.SyncLocked(ctx, failed.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkFailed, LastError: &msg}, errors.New("400")
	})

	counts, err := st.UsersByStatus(ctx, []string{"stripe"})
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"pending": 1, "synced": 1, "failed": 1, "conflict": 0}, counts["stripe"])

	items, err := st.Attention(ctx, []string{"stripe"}, time.Now().Add(-time.Minute), 50)
	require.NoError(t, err)
	require.Len(t, items, 1, "a user pending for less than the threshold needs no attention yet")
	require.Equal(t, failed.ID, items[0].UserID)
	require.Equal(t, msg, items[0].Reason)
	items, err = st.Attention(ctx, []string{"stripe"}, time.Now().Add(time.Minute), 50)
	require.NoError(t, err)
	require.Len(t, items, 2)
	require.Equal(t, fresh.ID, items[1].UserID)

	for status, want := range map[string]string{"failed": failed.ID, "pending": fresh.ID} {
		us, more, err := st.ListUsers(ctx, store.ListQuery{SyncStatus: status, Provider: "stripe", Limit: 10})
		require.NoError(t, err)
		require.False(t, more)
		require.Len(t, us, 1, status)
		require.Equal(t, want, us[0].ID, status)
	}
	us, _, err := st.ListUsers(ctx, store.ListQuery{SyncStatus: "conflict", Provider: "stripe", Limit: 10})
	require.NoError(t, err)
	require.Empty(t, us)

	pushes, err := st.PushesSince(ctx, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"synced": 1, "failed": 1}, pushes["stripe"])
}
