package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

func createUsers(t *testing.T, st *store.Store, n int) []store.User {
	t.Helper()
	users := make([]store.User, n)
	for i := range users {
		u, err := st.CreateUser(context.Background(), store.NewUser{Email: fmt.Sprintf("u%d-%s@example.com", i, testutil.Suffix()), Name: "U"}, nil)
		require.NoError(t, err)
		users[i] = u
	}
	return users
}

func ids(events []store.OutboxEvent) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func publishAll(_ context.Context, events []store.OutboxEvent) ([]uint64, error) {
	return ids(events), nil
}

func TestRelayBatchClaimsOldestFirstAndMarksPublished(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	users := createUsers(t, st, 5)

	var got []store.OutboxEvent
	claimed, published, err := st.RelayBatch(ctx, 3, func(ctx context.Context, events []store.OutboxEvent) ([]uint64, error) {
		got = append(got, events...)
		return ids(events), nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, claimed)
	require.Equal(t, 3, published)
	for i, e := range got {
		require.Equal(t, users[i].ID, e.UserID)
		require.Equal(t, store.EventUserCreated, e.Type)
		require.Equal(t, int64(1), e.Version)
		require.Equal(t, store.OriginAPI, e.Origin)
		require.NotEmpty(t, e.EventID)
		require.Nil(t, e.PublishedAt)
		require.Equal(t, time.UTC, e.CreatedAt.Location())
	}
	require.Less(t, got[0].ID, got[1].ID)

	n, oldest, err := st.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	require.Equal(t, users[3].UpdatedAt, oldest)

	claimed, published, err = st.RelayBatch(ctx, 3, publishAll)
	require.NoError(t, err)
	require.Equal(t, 2, claimed)
	require.Equal(t, 2, published)
	claimed, _, err = st.RelayBatch(ctx, 3, publishAll)
	require.NoError(t, err)
	require.Zero(t, claimed)

	n, oldest, err = st.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.True(t, oldest.IsZero())
}

func TestRelayBatchKeepsUnconfirmedRows(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	createUsers(t, st, 3)
	boom := errors.New("broker down")

	claimed, published, err := st.RelayBatch(ctx, 10, func(_ context.Context, events []store.OutboxEvent) ([]uint64, error) {
		// Only the second was confirmed; an unknown id is ignored.
		return []uint64{events[1].ID, 999999}, boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 3, claimed)
	require.Equal(t, 1, published)
	require.Equal(t, int64(2), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"))

	// The unconfirmed rows are claimed again, oldest first.
	var again []store.OutboxEvent
	_, _, err = st.RelayBatch(ctx, 10, func(_ context.Context, events []store.OutboxEvent) ([]uint64, error) {
		again = events
		return nil, nil
	})
	require.NoError(t, err)
	require.Len(t, again, 2)
	require.Less(t, again[0].ID, again[1].ID)
}

func TestRelayBatchesSkipEachOthersRowsAndDoNotBlockWriters(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	// Another replica: its own connection pool on the same database.
	other, err := store.Open(context.Background(), dsn, store.Options{MaxOpenConns: 4})
	require.NoError(t, err)
	defer other.Close()
	createUsers(t, st, 6)
	// Bound every nested call: a lock wait would otherwise hang for 50s.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Some published rows, so the index holds rows after the unpublished ones.
	_, _, err = st.RelayBatch(ctx, 2, publishAll)
	require.NoError(t, err)

	var first, second []store.OutboxEvent
	var late store.User
	_, _, err = st.RelayBatch(ctx, 100, func(ctx context.Context, events []store.OutboxEvent) ([]uint64, error) {
		first = events
		// While this batch holds every unpublished row: a user write (a new
		// outbox row right after the locked ones) does not wait for it...
		var err error
		if late, err = other.CreateUser(ctx, store.NewUser{Email: "late@example.com", Name: "Late"}, nil); err != nil {
			return nil, fmt.Errorf("writing while the relay holds its rows: %w", err)
		}
		// ...and another relay claims only the new row, without waiting.
		_, _, err = other.RelayBatch(ctx, 100, func(_ context.Context, events []store.OutboxEvent) ([]uint64, error) {
			second = events
			return ids(events), nil
		})
		if err != nil {
			return nil, fmt.Errorf("claiming while another relay holds rows: %w", err)
		}
		return ids(events), nil
	})
	require.NoError(t, err)
	require.Len(t, first, 4)
	require.Len(t, second, 1)
	require.Equal(t, late.ID, second[0].UserID)

	n, _, err := st.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestRolledBackWriteLeavesNoOutboxRow(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	_, err := st.CreateUser(ctx, store.NewUser{Email: "taken@example.com", Name: "A"}, nil)
	require.NoError(t, err)
	_, err = st.CreateUser(ctx, store.NewUser{Email: "TAKEN@example.com", Name: "B"}, nil)
	require.ErrorIs(t, err, store.ErrConflict)
	require.Equal(t, int64(1), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"))
}

func TestPruneOutboxDeletesOnlyOldPublishedRows(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	createUsers(t, st, 5)
	_, _, err := st.RelayBatch(ctx, 3, publishAll)
	require.NoError(t, err)
	before := time.Now().Add(-time.Hour)
	after := time.Now().Add(time.Hour)

	n, err := st.PruneOutbox(ctx, before, 100)
	require.NoError(t, err)
	require.Zero(t, n, "nothing was published an hour ago")

	n, err = st.PruneOutbox(ctx, after, 2)
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "limit")
	n, err = st.PruneOutbox(ctx, after, 100)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.Equal(t, int64(2), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"))
	require.Equal(t, int64(2), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"))
}

func TestAppendOutbox(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	notified := 0
	st.OnCommit(func() { notified++ })
	events := make([]store.OutboxEvent, 2500)
	for i := range events {
		events[i] = store.OutboxEvent{UserID: fmt.Sprintf("user-%d", i), Version: 1, Type: store.EventUserUpdated, Origin: "resync"}
	}
	require.NoError(t, st.AppendOutbox(ctx, events))
	require.Equal(t, 1, notified)
	require.NotZero(t, events[2499].ID)
	require.NotEmpty(t, events[0].EventID)
	n, _, err := st.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2500), n)

	dup := []store.OutboxEvent{{EventID: events[0].EventID, UserID: "x", Version: 1, Type: store.EventUserUpdated, Origin: "resync"}}
	require.ErrorIs(t, st.AppendOutbox(ctx, dup), store.ErrConflict)
}

// TestRelayBatchFindsARowCommittedLateBelowTheClaimedOnes (issue 15): a row
// whose id is lower but whose transaction commits after batches were claimed
// above it is relayed by a later batch, and every row once, in batches of
// one row or of several (a claim that kept a cursor past the claimed ids
// would lose it).
func TestRelayBatchFindsARowCommittedLateBelowTheClaimedOnes(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{1, 10} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			t.Parallel()
			st, dsn := testutil.NewStore(t)
			ctx := context.Background()
			db, err := sql.Open("mysql", dsn)
			require.NoError(t, err)
			defer db.Close()
			slow, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer slow.Rollback()
			// The slow writer takes the next id first, then commits last.
			_, err = slow.ExecContext(ctx, `INSERT INTO outbox (event_id, user_id, version, type, origin, created_at)
				VALUES (UUID(), '00000000-0000-0000-0000-000000000001', 1, 'user.created', 'api', UTC_TIMESTAMP(6))`)
			require.NoError(t, err)
			users := createUsers(t, st, 3)

			seen := map[uint64]int{}
			var order []string
			relay := func() int {
				claimed, _, err := st.RelayBatch(ctx, limit, func(_ context.Context, events []store.OutboxEvent) ([]uint64, error) {
					for _, e := range events {
						seen[e.ID]++
						order = append(order, e.UserID)
					}
					return ids(events), nil
				})
				require.NoError(t, err)
				return claimed
			}
			for claimed := 0; claimed < 3; {
				n := relay()
				require.NotZero(t, n, "the committed rows above the slow one")
				claimed += n
			}
			require.NoError(t, slow.Commit())
			require.Equal(t, 1, relay(), "the slow row, committed after them")
			require.Zero(t, relay())
			require.Len(t, seen, 4)
			for id, n := range seen {
				require.Equal(t, 1, n, "row %d relayed once", id)
			}
			require.Equal(t, []string{users[0].ID, users[1].ID, users[2].ID, "00000000-0000-0000-0000-000000000001"}, order)
			require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"))
		})
	}
}
