package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

func TestLinkedUsersAndForgetRemote(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	link := func(u store.User, remote string) {
		h, v := "h-"+u.ID, u.Version
		require.NoError(t, st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
			return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, PushedHash: &h, SyncedVersion: &v, ClearAttempt: true}, nil
		}))
	}
	a, err := st.CreateUser(ctx, store.NewUser{Email: "a@example.com", Name: "A", Metadata: map[string]string{"k": "v"}}, nil)
	require.NoError(t, err)
	b, err := st.CreateUser(ctx, store.NewUser{Email: "b@example.com", Name: "B"}, nil)
	require.NoError(t, err)
	_, err = st.CreateUser(ctx, store.NewUser{Email: "c@example.com", Name: "C, never pushed"}, nil)
	require.NoError(t, err)
	link(a, "cus_a")
	link(b, "cus_b")
	name := "B2"
	_, err = st.UpdateUser(ctx, b.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)

	got, err := st.LinkedUsers(ctx, "stripe", "", 1)
	require.NoError(t, err)
	require.Len(t, got, 1, "a page of 1")
	rest, err := st.LinkedUsers(ctx, "stripe", got[0].User.ID, 10)
	require.NoError(t, err)
	require.Len(t, rest, 1)
	all := map[string]store.LinkedUser{got[0].RemoteID: got[0], rest[0].RemoteID: rest[0]}
	require.Equal(t, a.ID, all["cus_a"].User.ID)
	require.Equal(t, map[string]string{"k": "v"}, all["cus_a"].User.Metadata)
	require.True(t, all["cus_a"].Settled())
	require.False(t, all["cus_b"].Settled(), "a change not pushed yet")
	none, err := st.LinkedUsers(ctx, "salesforce", "", 10)
	require.NoError(t, err)
	require.Empty(t, none)

	outbox := countOutbox(t, st.DB(), a.ID)
	done, err := st.ForgetRemote(ctx, a.ID, "stripe", "cus_other")
	require.NoError(t, err)
	require.False(t, done, "the link names another object")
	require.Equal(t, outbox, countOutbox(t, st.DB(), a.ID))

	done, err = st.ForgetRemote(ctx, a.ID, "stripe", "cus_a")
	require.NoError(t, err)
	require.True(t, done)
	links, err := st.Links(ctx, a.ID)
	require.NoError(t, err)
	l := links[a.ID][0]
	require.Nil(t, l.RemoteID)
	require.Nil(t, l.PushedHash)
	require.Equal(t, store.LinkPending, l.Status)
	require.True(t, l.Unsure(), "the next create must look for a tagged object and key itself to its attempt")
	require.Equal(t, "a@example.com", *l.AttemptEmail)
	require.Contains(t, *l.LastError, "cus_a is gone")
	require.Equal(t, outbox+1, countOutbox(t, st.DB(), a.ID))

	_, err = st.DeleteUser(ctx, b.ID, 0)
	require.NoError(t, err)
	done, err = st.ForgetRemote(ctx, b.ID, "stripe", "cus_b")
	require.NoError(t, err)
	require.False(t, done, "a deleted user's link is left alone")
	_, err = st.ForgetRemote(ctx, "0193a8b0-0000-7000-8000-000000000000", "stripe", "cus_x")
	require.ErrorIs(t, err, store.ErrNotFound)
}
