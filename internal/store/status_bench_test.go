package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// BenchmarkStatusViews times the operator's views on 200,000 links
// (100,000 users linked to two providers, statuses spread as
// seedStatusViews does), then in an outage: every synced stripe link
// failed. Seeding takes about 10 s.
//
//	go test -run '^$' -bench StatusViews -benchtime 2s ./internal/store/
func BenchmarkStatusViews(b *testing.B) {
	st, dsn := testutil.NewStore(b)
	ctx := context.Background()
	now := time.Now()
	seedStatusViews(b, dsn, 100_000, now)
	views := func(b *testing.B, prefix string) {
		b.Run(prefix+"attention", func(b *testing.B) {
			for b.Loop() {
				if _, err := st.Attention(ctx, seedProviders, now.Add(-time.Minute), 50); err != nil {
					b.Fatal(err)
				}
			}
		})
		for _, status := range []string{store.LinkFailed, store.LinkConflict, store.LinkPending} {
			b.Run(prefix+"sync_status="+status, func(b *testing.B) {
				for b.Loop() {
					if _, _, err := st.ListUsers(ctx, store.ListQuery{SyncStatus: status, Provider: "stripe", Limit: 100}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(prefix+"users_by_status", func(b *testing.B) {
			for b.Loop() {
				if _, err := st.UsersByStatus(ctx, seedProviders); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	views(b, "")
	db := openStore(b, dsn)
	if _, err := db.Exec("UPDATE provider_links SET status = ? WHERE provider = 'stripe' AND status = ?", store.LinkFailed, store.LinkSynced); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec("ANALYZE TABLE provider_links"); err != nil {
		b.Fatal(err)
	}
	views(b, "outage/")
}
