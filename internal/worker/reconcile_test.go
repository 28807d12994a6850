package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/reconcile"
	"github.com/tandem-sync/tandem/internal/store"
)

// The repairs of tandemctl reconcile converge through the real worker:
// drift is pushed over, and a customer deleted with no event is replaced by
// exactly one new customer (the first create's key, which Stripe still
// remembers, is not reused: it would answer with the deleted customer).
func TestReconcileRepairsConvergeThroughTheWorker(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{})
	ctx := context.Background()
	drifted, gone, fine := p.create("drift@example.com"), p.create("gone@example.com"), p.create("fine@example.com")
	p.waitSynced(10*time.Second, store.LinkSynced, drifted, gone, fine)
	dl, gl := p.link(drifted.ID), p.link(gone.ID)
	_, err := p.fake.SilentUpdate(*dl.RemoteID, func(c *stripefake.Customer) { c.Name = "Edited quietly" })
	require.NoError(t, err)
	require.NoError(t, p.fake.SilentDelete(*gl.RemoteID))

	a := p.adapter()
	opts := reconcile.Options{Provider: "stripe", Lister: a.(integrations.Lister), Fetcher: a.(integrations.WebhookReceiver)}
	rep, err := reconcile.Run(ctx, p.store, opts)
	require.NoError(t, err)
	require.Len(t, rep.Drift, 1)
	require.Len(t, rep.MissingRemote, 1)

	opts.Repair = true
	rep, err = reconcile.Run(ctx, p.store, opts)
	require.NoError(t, err)
	require.Empty(t, rep.Failures)
	require.Equal(t, 2, rep.Repaired)

	p.waitSynced(10*time.Second, store.LinkSynced, drifted, gone)
	c, ok := p.fake.Customer(*p.link(drifted.ID).RemoteID)
	require.True(t, ok)
	require.Equal(t, drifted.Name, c.Name, "Tandem's state was pushed over the drift")
	live := 0
	for _, c := range customersOf(p.fake, gone.ID) {
		if !c.Deleted {
			live++
			require.Equal(t, c.ID, *p.link(gone.ID).RemoteID)
		}
	}
	require.Equal(t, 1, live, "the gone customer is replaced by exactly one")

	opts.Repair = false
	rep, err = reconcile.Run(ctx, p.store, opts)
	require.NoError(t, err)
	require.Empty(t, rep.Drift)
	require.Empty(t, rep.MissingRemote)
	require.Equal(t, 3, rep.InSync)
}
