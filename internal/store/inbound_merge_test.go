package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// TestApplyInboundMergeRelinksTheUser: a remote object deleted by a merge
// (Salesforce's MasterRecordId) moves the user's link to the survivor
// instead of deleting the user, and asks a push over it; a survivor another
// user is linked to is a conflict that moves nothing; a merge that is not a
// deletion, or into itself, is refused.
func TestApplyInboundMergeRelinksTheUser(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	a := linked(t, st, "ada@example.com", "003victim")
	b := linked(t, st, "bob@example.com", "003bob")
	outbox := outboxRows(t, dsn)

	ev := change("003victim", state("ada@example.com", "Ada", nil))
	ev.Deleted, ev.MergedInto = true, "003survivor"
	res, err := st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundRelinked, res.Outcome)
	require.Equal(t, a.ID, res.UserID)
	u, err := st.GetUser(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, a.Version, u.Version, "the user lives on, unchanged")
	l := link(t, st, a.ID)
	require.Equal(t, "003survivor", *l.RemoteID)
	require.Equal(t, store.LinkPending, l.Status)
	require.Equal(t, outbox+1, outboxRows(t, dsn), "a push over the survivor is asked")

	// Merged into an object another user holds: a conflict.
	ev = change("003survivor", state("ada@example.com", "Ada", nil))
	ev.Deleted, ev.MergedInto = true, "003bob"
	res, err = st.ApplyInbound(ctx, "stripe", ev, noRefetch(t))
	require.NoError(t, err)
	require.Equal(t, store.InboundConflict, res.Outcome)
	require.Contains(t, res.Detail, b.ID)
	require.Equal(t, "003survivor", *link(t, st, a.ID).RemoteID)
	require.Equal(t, "003bob", *link(t, st, b.ID).RemoteID)

	for _, bad := range []store.InboundChange{
		func() store.InboundChange {
			c := change("003bob", state("b@example.com", "B", nil))
			c.MergedInto = "003x"
			return c
		}(),
		func() store.InboundChange {
			c := change("003bob", state("b@example.com", "B", nil))
			c.Deleted, c.MergedInto = true, "003bob"
			return c
		}(),
	} {
		_, err := st.ApplyInbound(ctx, "stripe", bad, noRefetch(t))
		require.Error(t, err)
	}
}
