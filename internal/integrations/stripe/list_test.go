package stripe_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/testutil/stripemock"
)

// Listing walks every live customer once, one request per 100, mapped so
// that a customer Tandem pushed hashes like the state it pushed.
func TestListRemoteWalksEveryCustomer(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	a := fakeAdapter(t, fake).(*stripe.Adapter)
	ctx := context.Background()

	pushed := integrations.Customer{UserID: "0193a8b0-0000-7000-8000-000000000001", Email: "pushed@example.com", Name: "Pushed",
		Phone: "+1 555", Metadata: map[string]string{"plan": "pro"}, Version: 3}
	res, err := a.Upsert(ctx, pushed, integrations.Link{})
	require.NoError(t, err)
	want := map[string]bool{res.RemoteID: true}
	for i := range 230 {
		c, err := fake.SilentCreate(stripefake.Customer{Email: fmt.Sprintf("old%d@example.com", i), Name: "Old",
			Metadata: map[string]string{"tandem_other": "x", "src": "legacy"}})
		require.NoError(t, err)
		want[c.ID] = true
	}
	gone, err := fake.SilentCreate(stripefake.Customer{Email: "gone@example.com"})
	require.NoError(t, err)
	require.NoError(t, fake.SilentDelete(gone.ID))
	before := fake.Stats().Requests

	got := map[string]integrations.RemoteObject{}
	cursor, pages := "", 0
	for {
		page, next, err := a.ListRemote(ctx, cursor)
		require.NoError(t, err)
		pages++
		for _, o := range page {
			require.NotContains(t, got, o.ID, "listed twice")
			got[o.ID] = o
		}
		if next == "" {
			break
		}
		cursor = next
	}
	require.Equal(t, 3, pages)
	require.Equal(t, 3, fake.Stats().Requests-before, "one request per page")
	require.Len(t, got, len(want))
	for id := range want {
		require.Contains(t, got, id)
	}
	mine := got[res.RemoteID]
	require.Equal(t, pushed.UserID, mine.UserID)
	require.Empty(t, mine.Customer.UserID)
	require.False(t, mine.WithoutMetadata)
	require.Equal(t, pushed.Hash(), mine.Customer.Hash(), "a pushed customer does not hash like its push")
	for id, o := range got {
		if id != res.RemoteID {
			require.Empty(t, o.UserID)
			require.Equal(t, map[string]string{"src": "legacy"}, o.Customer.Metadata, "reserved keys are not the user's")
		}
	}

	_, _, err = a.ListRemote(ctx, "cus_unknown")
	require.Error(t, err)
	require.True(t, integrations.IsPermanent(err), "%v", err)
}

// The list request has Stripe's shape (stripe-mock checks it).
func TestListRemoteAgainstStripeMock(t *testing.T) {
	base := stripemock.Start(t)
	a, err := stripe.New(stripe.Config{SecretKey: "sk_test_123", APIBase: base, RateLimit: 1000}, stripe.Options{})
	require.NoError(t, err)
	page, _, err := a.ListRemote(context.Background(), "cus_123")
	require.NoError(t, err)
	require.NotEmpty(t, page)
	require.NotEmpty(t, page[0].ID)
}
