package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// The operator's views (the console's attention list and counts, the
// sync_status filter of GET /v1/users) find links by provider and status
// through provider_links_status (migration 13). These tests read MariaDB's
// plan of each statement (EXPLAIN) on a table of a few thousand links,
// where the optimizer weighs indexes as it does on a large one, and check
// the answers against a model of the rows.

// planRow is a row of EXPLAIN: how MariaDB reads one table.
type planRow struct {
	ID, SelectType, Table, Type, Key, Rows, Extra string
}

type plan []planRow

func (p plan) String() string {
	var b strings.Builder
	for _, r := range p {
		fmt.Fprintf(&b, "\n  id=%s %s table=%s type=%s key=%s rows=%s extra=%q", r.ID, r.SelectType, r.Table, r.Type, r.Key, r.Rows, r.Extra)
	}
	return b.String()
}

// linkReads are the rows of p that read provider_links.
func (p plan) linkReads() plan {
	var out plan
	for _, r := range p {
		if r.Table == "l" || r.Table == "provider_links" {
			out = append(out, r)
		}
	}
	return out
}

func explain(t *testing.T, db *sql.DB, q string, args ...any) plan {
	t.Helper()
	rows, err := db.Query("EXPLAIN "+q, args...)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var out plan
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		col := map[string]string{}
		for i, c := range cols {
			col[strings.ToLower(c)] = vals[i].String
		}
		out = append(out, planRow{ID: col["id"], SelectType: col["select_type"], Table: col["table"], Type: col["type"],
			Key: col["key"], Rows: col["rows"], Extra: col["extra"]})
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, out)
	return out
}

// TestAttentionReadsTheStatusIndex: the attention list reads each status's
// links of the provider from provider_links_status, newest first, and stops
// at its limit: no read of provider_links sorts what it read (a sort means
// every failed, conflicting or old pending link was read first; in an
// outage that is all of them).
func TestAttentionReadsTheStatusIndex(t *testing.T) {
	t.Parallel()
	_, dsn := testutil.NewStore(t)
	now := time.Now()
	seedStatusViews(t, dsn, 3000, now)
	db := openStore(t, dsn)
	for _, p := range seedProviders {
		q, args := store.AttentionLinksSQL(p, now.Add(-time.Hour), 50)
		pl := explain(t, db, q, args...)
		reads := pl.linkReads()
		require.NotEmpty(t, reads, "%s", pl)
		for _, r := range reads {
			require.Equal(t, "provider_links_status", r.Key, "provider_links read without provider_links_status:%s", pl)
			require.Contains(t, []string{"ref", "range"}, r.Type, "provider_links scanned:%s", pl)
			require.NotContains(t, r.Extra, "filesort", "the links read are sorted, so all of them were read:%s", pl)
		}
	}
}

// TestSyncStatusFilterReadsTheStatusIndex: GET /v1/users?sync_status=failed
// (or conflict) reads the provider's links with that status from
// provider_links_status alone (the index holds the user id) and then the
// users in id order up to the page's limit, not every such user copied
// into a temporary table and sorted. Pending (no link, or a pending one)
// is one primary-key lookup of the link per user, in id order: not a scan
// of provider_links.
func TestSyncStatusFilterReadsTheStatusIndex(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	users := seedStatusViews(t, dsn, 3000, time.Now())
	db := openStore(t, dsn)
	middle := users[len(users)/2].ID
	for _, p := range seedProviders {
		for _, after := range []string{"", middle} {
			for _, status := range []string{store.LinkFailed, store.LinkConflict} {
				pl := explain(t, db, st.ListUsersSQL(store.ListQuery{SyncStatus: status, Provider: p, After: after, Limit: 100}))
				reads := pl.linkReads()
				require.Len(t, reads, 1, "%s", pl)
				require.Equal(t, "provider_links_status", reads[0].Key, "%s %s: provider_links read without provider_links_status:%s", p, status, pl)
				require.Contains(t, []string{"ref", "range"}, reads[0].Type, "%s %s: provider_links scanned:%s", p, status, pl)
				require.Contains(t, reads[0].Extra, "Using index", "%s %s: the links' rows are read, not only the index:%s", p, status, pl)
				for _, r := range pl {
					require.NotContains(t, r.Extra, "Using temporary", "%s %s: every matching user is copied and sorted:%s", p, status, pl)
				}
			}
			pl := explain(t, db, st.ListUsersSQL(store.ListQuery{SyncStatus: store.LinkPending, Provider: p, After: after, Limit: 100}))
			reads := pl.linkReads()
			require.Len(t, reads, 1, "%s", pl)
			require.Equal(t, "eq_ref", reads[0].Type, "pending: provider_links is not read by user:%s", pl)
			require.Equal(t, "PRIMARY", reads[0].Key, "pending: provider_links is not read by user:%s", pl)
			for _, r := range pl {
				require.NotEqual(t, "ALL", r.Type, "pending: a table is scanned:%s", pl)
				require.NotEqual(t, "MATERIALIZED", r.SelectType, "pending: provider_links is read into a temporary table:%s", pl)
			}
		}
	}
}

// TestUsersByStatusReadsTheStatusIndex: the counts by status read
// provider_links_status alone (every entry: each link is counted, but not
// its row), in its order (no temporary table, no sort); the links of
// deleted users, which are subtracted, are looked up by user.
func TestUsersByStatusReadsTheStatusIndex(t *testing.T) {
	t.Parallel()
	_, dsn := testutil.NewStore(t)
	seedStatusViews(t, dsn, 3000, time.Now())
	db := openStore(t, dsn)
	pl := explain(t, db, store.LinksByStatusSQL)
	reads := pl.linkReads()
	require.Len(t, reads, 1, "%s", pl)
	require.Equal(t, "provider_links_status", reads[0].Key, "provider_links read without provider_links_status:%s", pl)
	require.Contains(t, reads[0].Extra, "Using index", "the links' rows are read, not only the index:%s", pl)
	for _, r := range pl {
		require.NotContains(t, r.Extra, "Using temporary", "%s", pl)
		require.NotContains(t, r.Extra, "filesort", "%s", pl)
	}
	pl = explain(t, db, store.DeletedLinksByStatusSQL)
	reads = pl.linkReads()
	require.Len(t, reads, 1, "%s", pl)
	require.Equal(t, "PRIMARY", reads[0].Key, "the links of deleted users are not looked up by user:%s", pl)
	require.Equal(t, "ref", reads[0].Type, "the links of deleted users are not looked up by user:%s", pl)
}

// TestStatusViewsOnManyLinks: on thousands of links with every status, the
// counts, the attention list and the sync_status filter give what the rows
// say (the tests above check how they are read).
func TestStatusViewsOnManyLinks(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	now := time.Now()
	users := seedStatusViews(t, dsn, 3000, now)

	counts, err := st.UsersByStatus(ctx, seedProviders)
	require.NoError(t, err)
	want := map[string]map[string]int64{}
	for _, p := range seedProviders {
		want[p] = map[string]int64{store.LinkPending: 0, store.LinkSynced: 0, store.LinkFailed: 0, store.LinkConflict: 0}
		for _, u := range users {
			if u.Deleted {
				continue
			}
			if l, ok := u.Links[p]; ok {
				want[p][l.Status]++
			} else {
				want[p][store.LinkPending]++
			}
		}
	}
	require.Equal(t, want, counts)

	pendingBefore := now.Add(-time.Hour)
	for _, limit := range []int{50, 10_000} {
		items, err := st.Attention(ctx, seedProviders, pendingBefore, limit)
		require.NoError(t, err)
		require.Equal(t, wantAttention(users, pendingBefore, limit), items, "limit %d", limit)
	}

	for _, p := range seedProviders {
		for _, status := range []string{store.LinkFailed, store.LinkConflict, store.LinkPending} {
			var wantIDs, got []string
			for _, u := range users {
				l, ok := u.Links[p]
				if !u.Deleted && (ok && l.Status == status || !ok && status == store.LinkPending) {
					wantIDs = append(wantIDs, u.ID)
				}
			}
			q := store.ListQuery{SyncStatus: status, Provider: p, Limit: 37}
			for {
				page, more, err := st.ListUsers(ctx, q)
				require.NoError(t, err)
				for _, u := range page {
					got = append(got, u.ID)
				}
				if !more {
					break
				}
				require.Len(t, page, q.Limit)
				q.After = page[len(page)-1].ID
			}
			require.NotEmpty(t, wantIDs)
			require.Equal(t, wantIDs, got, "%s %s", p, status)
		}
	}
}

// wantAttention is what Attention returns for users, by the rules it
// documents.
func wantAttention(users []seedUser, pendingBefore time.Time, limit int) []store.AttentionItem {
	var out []store.AttentionItem
	from, to := pendingBefore.Add(-store.UnlinkedWindow).UnixMilli(), pendingBefore.UnixMilli()
	for _, p := range seedProviders {
		var items []store.AttentionItem
		for _, u := range users {
			l, ok := u.Links[p]
			if u.Deleted || !ok {
				continue
			}
			if l.Status == store.LinkFailed || l.Status == store.LinkConflict || l.Status == store.LinkPending && l.UpdatedAt.Before(pendingBefore) {
				items = append(items, store.AttentionItem{UserID: u.ID, Email: u.Email, Provider: p, Status: l.Status,
					Reason: l.LastError, Since: l.UpdatedAt})
			}
		}
		slices.SortFunc(items, func(a, b store.AttentionItem) int { return b.Since.Compare(a.Since) })
		items = items[:min(len(items), limit)]
		for i := len(users) - 1; i >= 0 && len(items) < limit; i-- {
			u := users[i]
			created := u.UpdatedAt.UnixMilli()
			if _, ok := u.Links[p]; ok || u.Deleted || created < from || created >= to || !u.UpdatedAt.Before(pendingBefore) {
				continue
			}
			items = append(items, store.AttentionItem{UserID: u.ID, Email: u.Email, Provider: p, Status: store.LinkPending,
				Reason: "not picked up by a " + p + " worker yet", Since: u.UpdatedAt})
		}
		out = append(out, items...)
	}
	return out
}
