package store_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// A resync undoes Tandem's belief that the provider holds the user, so the
// worker's next message pushes instead of skipping, and writes that message.
func TestResyncForgetsThePushedStateAndAnnounces(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	db := st.DB()
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "r@example.com", Name: "R"}, nil)
	require.NoError(t, err)
	remote, hash, v := "cus_r", "h1", u.Version
	require.NoError(t, st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &remote, PushedHash: &hash, SyncedVersion: &v}, nil
	}))
	before := countOutbox(t, db, u.ID)

	require.NoError(t, st.Resync(ctx, u.ID, "stripe"))

	links, err := st.Links(ctx, u.ID)
	require.NoError(t, err)
	l := links[u.ID][0]
	require.Equal(t, store.LinkPending, l.Status)
	require.Nil(t, l.PushedHash, "the link still claims the provider holds a state")
	require.Less(t, l.SyncedVersion, u.Version, "a message at the user's version would be skipped")
	require.Equal(t, "cus_r", *l.RemoteID, "the remote object is kept: the push updates it")
	require.Equal(t, before+1, countOutbox(t, db, u.ID))
	var origin string
	require.NoError(t, db.QueryRow(`SELECT origin FROM outbox WHERE user_id = ? ORDER BY id DESC LIMIT 1`, u.ID).Scan(&origin))
	require.Equal(t, store.OriginResync, origin)

	err = st.Resync(ctx, "0193a8b0-0000-7000-8000-000000000000", "stripe")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, before+1, countOutbox(t, db, u.ID))
}

func countOutbox(t *testing.T, db *sql.DB, userID string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM outbox WHERE user_id = ?`, userID).Scan(&n))
	return n
}
