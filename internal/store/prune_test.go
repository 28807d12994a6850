package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// insertEvents writes n inbound_events rows of provider received age ago
// (with a payload of payload bytes when payload > 0), ids prefix-0…n-1.
func insertEvents(t *testing.T, dsn, provider, prefix string, n int, age time.Duration, payload int) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	at := time.Now().UTC().Add(-age)
	var pl []byte
	if payload > 0 {
		pl = []byte(strings.Repeat("p", payload))
	}
	for start := 0; start < n; start += 500 {
		var q strings.Builder
		var args []any
		q.WriteString("INSERT INTO inbound_events (provider, event_id, event_type, outcome, payload, received_at) VALUES ")
		for i := start; i < min(n, start+500); i++ {
			if i > start {
				q.WriteString(",")
			}
			q.WriteString("(?, ?, 'customer.updated', 'echo', ?, ?)")
			args = append(args, provider, fmt.Sprintf("%s-%d", prefix, i), pl, at)
		}
		_, err := db.Exec(q.String(), args...)
		require.NoError(t, err)
	}
}

func count(t *testing.T, dsn, where string) int64 {
	t.Helper()
	return testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM inbound_events WHERE "+where)
}

// TestPruneInboundKeepsRowsLongerThanPayloads: rows past the row retention
// go; rows past the payload retention stay without their payload (they
// still de-duplicate redeliveries); recent rows keep everything.
func TestPruneInboundKeepsRowsLongerThanPayloads(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	insertEvents(t, dsn, "stripe", "old", 45, 100*time.Hour, 0)
	insertEvents(t, dsn, "salesforce", "old-conflict", 12, 100*time.Hour, 1000)
	insertEvents(t, dsn, "stripe", "mid-conflict", 23, 80*time.Hour, 1000)
	insertEvents(t, dsn, "stripe", "mid", 30, 80*time.Hour, 0)
	insertEvents(t, dsn, "salesforce", "new-conflict", 5, time.Hour, 1000)
	insertEvents(t, dsn, "stripe", "new", 10, time.Hour, 0)

	rows, payloads, err := st.PruneInbound(ctx, store.InboundRetention{Rows: 96 * time.Hour, Payloads: 72 * time.Hour}, 7)
	require.NoError(t, err)
	require.EqualValues(t, 12+23, payloads, "payloads dropped: the old conflicts' (first) and the middle ones'")
	require.EqualValues(t, 45+12, rows)
	require.EqualValues(t, 0, count(t, dsn, "event_id LIKE 'old%'"))
	require.EqualValues(t, 53, count(t, dsn, "event_id LIKE 'mid%' AND payload IS NULL"))
	require.EqualValues(t, 5, count(t, dsn, "event_id LIKE 'new-conflict%' AND LENGTH(payload) = 1000"))
	require.EqualValues(t, 15, count(t, dsn, "event_id LIKE 'new%'"))

	// Nothing left to do: a second pass changes nothing.
	rows, payloads, err = st.PruneInbound(ctx, store.InboundRetention{Rows: 96 * time.Hour, Payloads: 72 * time.Hour}, 7)
	require.NoError(t, err)
	require.Zero(t, rows)
	require.Zero(t, payloads)

	_, _, err = st.PruneInbound(ctx, store.InboundRetention{Rows: 96 * time.Hour}, 7)
	require.Error(t, err)
}

// TestPruneInboundDoesNotWaitForLockedRows: a prune locks only the rows
// it prunes and skips those another transaction holds, so neither an event
// being applied now nor a redelivery of an old one holds it up, and it
// holds neither up.
func TestPruneInboundDoesNotWaitForLockedRows(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	insertEvents(t, dsn, "stripe", "old", 20, 100*time.Hour, 10)
	insertEvents(t, dsn, "stripe", "new", 5, time.Minute, 10)

	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	tx, err := db.Begin()
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	// An event being applied: its row is written and locked, others are read.
	_, err = tx.Exec("INSERT INTO inbound_events (provider, event_id, event_type, outcome, received_at) VALUES ('stripe', 'now', 't', 'applied', UTC_TIMESTAMP(6))")
	require.NoError(t, err)
	var id string
	require.NoError(t, tx.QueryRow("SELECT event_id FROM inbound_events WHERE provider = 'stripe' AND event_id = 'new-0' FOR UPDATE").Scan(&id))
	// A redelivery of an old event, being applied.
	require.NoError(t, tx.QueryRow("SELECT event_id FROM inbound_events WHERE provider = 'stripe' AND event_id = 'old-7' FOR UPDATE").Scan(&id))

	// Were it to wait for those locks, it would fail on this deadline (far
	// below innodb_lock_wait_timeout) instead of answering.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cutoff := time.Now().Add(-time.Hour)
	n, err := st.DropInboundPayloads(ctx, cutoff, 8)
	require.NoError(t, err)
	require.EqualValues(t, 8, n)
	rows, payloads, err := st.PruneInbound(ctx, store.InboundRetention{Rows: time.Hour, Payloads: time.Hour}, 8)
	require.NoError(t, err)
	require.EqualValues(t, 19, rows)
	require.EqualValues(t, 11, payloads)
	// The applying transaction goes on and commits.
	_, err = tx.Exec("UPDATE inbound_events SET outcome = 'echo' WHERE provider = 'stripe' AND event_id = 'new-0'")
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	require.EqualValues(t, 7, count(t, dsn, "1"))
	require.EqualValues(t, 6, count(t, dsn, "payload IS NOT NULL"))
	rows, payloads, err = st.PruneInbound(ctx, store.InboundRetention{Rows: time.Hour, Payloads: time.Hour}, 8)
	require.NoError(t, err)
	require.EqualValues(t, 1, rows, "old-7, free now")
	require.EqualValues(t, 1, payloads)
	require.EqualValues(t, 6, count(t, dsn, "1"))
}

// TestPruneInboundConcurrently: several webhook replicas prune at once;
// together they delete each old row once, fail nothing, and keep the rest.
func TestPruneInboundConcurrently(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	insertEvents(t, dsn, "stripe", "old", 3000, 100*time.Hour, 0)
	insertEvents(t, dsn, "salesforce", "old-payload", 500, 80*time.Hour, 100)
	insertEvents(t, dsn, "stripe", "new", 100, time.Minute, 100)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var rows, payloads int64
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, p, err := st.PruneInbound(context.Background(), store.InboundRetention{Rows: 96 * time.Hour, Payloads: 72 * time.Hour}, 50)
			errs <- err
			mu.Lock()
			rows, payloads = rows+r, payloads+p
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 3000, rows)
	require.EqualValues(t, 500, payloads)
	require.EqualValues(t, 600, count(t, dsn, "1"))
	require.EqualValues(t, 100, count(t, dsn, "payload IS NOT NULL"))
}
