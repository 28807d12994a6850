package store_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// BenchmarkSyncHistory is what recording a push in the history costs the
// worker's store path (lease, record): 32 goroutines push their own user,
// with history on and off. Compare the two with -count:
//
//	go test -run '^$' -bench SyncHistory -count 5 ./internal/store/
func BenchmarkSyncHistory(b *testing.B) {
	for _, m := range []struct {
		name string
		off  bool
	}{{"off", true}, {"on", false}} {
		b.Run("history="+m.name, func(b *testing.B) {
			_, dsn := testutil.NewStore(b)
			ctx := context.Background()
			st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 40, History: store.HistoryOptions{Off: m.off}})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			const users = 64
			ids := make([]string, users)
			for i := range ids {
				u, err := st.CreateUser(ctx, store.NewUser{Email: "bench" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "@example.com", Name: "B"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = u.ID
			}
			var next atomic.Int64
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				id := ids[int(next.Add(1)-1)%users]
				for pb.Next() {
					err := st.SyncLocked(ctx, id, "stripe", func(_ context.Context, u store.User, _ store.Link) (store.LinkUpdate, error) {
						v := u.Version
						return store.LinkUpdate{Status: store.LinkSynced, SyncedVersion: &v}, nil
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
