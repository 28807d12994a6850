package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// TestCursorNeverMovesBack: a cursor read less far than the stored one is
// not written (two catch-up processes racing); a gap is kept until cleared
// and grows to cover a second one; bad cursors are refused.
func TestCursorNeverMovesBack(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	ctx := context.Background()
	_, err := st.Cursor(ctx, "stripe")
	require.ErrorIs(t, err, store.ErrNotFound)

	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ok, err := st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: "a", ReadThrough: t0})
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: "c", ReadThrough: t0.Add(2 * time.Second), NewestAt: t0.Add(time.Second)})
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: "b", ReadThrough: t0.Add(time.Second)})
	require.NoError(t, err)
	require.False(t, ok, "an older read does not move the cursor back")
	c, err := st.Cursor(ctx, "stripe")
	require.NoError(t, err)
	require.Equal(t, "c", c.Position)
	require.Equal(t, t0.Add(time.Second), c.NewestAt)
	require.True(t, c.GapFrom.IsZero())

	_, err = st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: "d", ReadThrough: t0.Add(time.Hour), GapFrom: t0, GapTo: t0.Add(time.Hour)})
	require.NoError(t, err)
	_, err = st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: "e", ReadThrough: t0.Add(2 * time.Hour)})
	require.NoError(t, err)
	_, err = st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: "f", ReadThrough: t0.Add(3 * time.Hour),
		GapFrom: t0.Add(90 * time.Minute), GapTo: t0.Add(3 * time.Hour)})
	require.NoError(t, err)
	c, err = st.Cursor(ctx, "stripe")
	require.NoError(t, err)
	require.Equal(t, "f", c.Position)
	require.Equal(t, t0, c.GapFrom, "the gap is kept until cleared, and covers both")
	require.Equal(t, t0.Add(3*time.Hour), c.GapTo)
	require.Equal(t, t0.Add(time.Second), c.NewestAt, "newest_at never moves back")
	require.NoError(t, st.ClearCursorGap(ctx, "stripe"))
	c, err = st.Cursor(ctx, "stripe")
	require.NoError(t, err)
	require.True(t, c.GapFrom.IsZero())

	for _, bad := range []store.Cursor{
		{Provider: "", Position: "x", ReadThrough: t0},
		{Provider: "stripe", Position: "", ReadThrough: t0},
		{Provider: "stripe", Position: "with space", ReadThrough: t0},
		{Provider: "stripe", Position: "x"},
		{Provider: "stripe", Position: "x", ReadThrough: t0.Add(9 * time.Hour), GapFrom: t0},
	} {
		_, err := st.SaveCursor(ctx, bad)
		require.Error(t, err, "%+v", bad)
	}
	c2, err := st.Cursor(ctx, "stripe")
	require.NoError(t, err)
	require.Equal(t, c.Position, c2.Position, "refused cursors change nothing")
}

// TestTryLockIsExclusivePerDatabase: one session holds the lock of a
// database at a time; another database's lock is another lock.
func TestTryLockIsExclusivePerDatabase(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	other, err := store.Open(context.Background(), dsn, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	elsewhere, _ := testutil.NewStore(t)
	ctx := context.Background()

	release, ok, err := st.TryLock(ctx, "tandem-catchup")
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = other.TryLock(ctx, "tandem-catchup")
	require.NoError(t, err)
	require.False(t, ok, "held by the first process")
	r3, ok, err := elsewhere.TryLock(ctx, "tandem-catchup")
	require.NoError(t, err)
	require.True(t, ok, "another database, another lock")
	r3()
	release()
	r2, ok, err := other.TryLock(ctx, "tandem-catchup")
	require.NoError(t, err)
	require.True(t, ok, "free once released")
	r2()
	_, _, err = st.TryLock(ctx, "")
	require.Error(t, err)
}

// TestKnownInboundEvents finds recorded events in one query.
func TestKnownInboundEvents(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	insertEvents(t, dsn, "stripe", "evt", 3, time.Minute, 0)
	insertEvents(t, dsn, "salesforce", "sf", 1, time.Minute, 0)
	known, err := st.KnownInboundEvents(context.Background(), "stripe", []string{"evt-0", "evt-2", "evt-9", "sf-0"})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"evt-0": true, "evt-2": true}, known)
	known, err = st.KnownInboundEvents(context.Background(), "stripe", nil)
	require.NoError(t, err)
	require.Empty(t, known)
}
