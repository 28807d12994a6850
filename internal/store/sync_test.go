package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

func TestSyncLockedSerialisesPerUser(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "s@example.com", Name: "S"}, nil)
	require.NoError(t, err)

	var active, maxActive, calls atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.SyncLocked(ctx, u.ID, "stripe", func(ctx context.Context, got store.User, l store.Link) (store.LinkUpdate, error) {
				n := active.Add(1)
				defer active.Add(-1)
				for {
					m := maxActive.Load()
					if n <= m || maxActive.CompareAndSwap(m, n) {
						break
					}
				}
				calls.Add(1)
				// Each call sees the previous call's committed update.
				v := l.SyncedVersion + 1
				return store.LinkUpdate{Status: store.LinkSynced, SyncedVersion: &v}, nil
			})
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.EqualValues(t, 1, maxActive.Load(), "two pushes of one user ran at once")
	links, err := st.Links(ctx, u.ID)
	require.NoError(t, err)
	require.Len(t, links[u.ID], 1)
	require.EqualValues(t, 8, links[u.ID][0].SyncedVersion)
	require.Equal(t, store.LinkSynced, links[u.ID][0].Status)
}

func TestSyncLockedRecordsUpdateEvenWhenPushFails(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	u, err := st.CreateUser(ctx, store.NewUser{Email: "f@example.com", Name: "F"}, nil)
	require.NoError(t, err)
	boom := errors.New("boom")
	msg := "boom"
	remote := "cus_1"
	err = st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkFailed, RemoteID: &remote, LastError: &msg,
			MetadataKeys: []string{"a"}, SetMetadataKeys: true}, boom
	})
	require.ErrorIs(t, err, boom)
	links, err := st.Links(ctx, u.ID)
	require.NoError(t, err)
	l := links[u.ID][0]
	require.Equal(t, store.LinkFailed, l.Status)
	require.Equal(t, "cus_1", *l.RemoteID)
	require.Equal(t, "boom", *l.LastError)
	require.Equal(t, []string{"a"}, l.MetadataKeyList())

	err = st.SyncLocked(ctx, "0193a8b0-0000-7000-8000-000000000000", "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		t.Fatal("called for a missing user")
		return store.LinkUpdate{}, nil
	})
	require.ErrorIs(t, err, store.ErrNotFound)
}
