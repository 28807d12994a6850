package stripefake_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// TestDroppedDeliveriesAreStillListed: with deliveries dropped, events are
// recorded (and listed) but never sent; turning it off sends again.
func TestDroppedDeliveriesAreStillListed(t *testing.T) {
	t.Parallel()
	var got atomic.Int32
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
	t.Cleanup(endpoint.Close)
	fake := stripefake.New(stripefake.Options{WebhookURL: endpoint.URL, WebhookSecret: "whsec_x"})
	t.Cleanup(fake.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	fake.SetDropDeliveries(1)
	c, err := fake.DashboardCreate(stripefake.Customer{Email: "a@example.com", Name: "A"})
	require.NoError(t, err)
	require.NoError(t, fake.WaitDelivered(ctx))
	require.Zero(t, got.Load())
	require.Equal(t, 1, fake.DeliveryStats().Dropped)
	evs := fake.Events()
	require.Len(t, evs, 1)
	require.Equal(t, c.ID, evs[0].CustomerID)

	fake.SetDropDeliveries(0)
	_, err = fake.DashboardUpdate(c.ID, func(c *stripefake.Customer) { c.Name = "B" })
	require.NoError(t, err)
	require.NoError(t, fake.WaitDelivered(ctx))
	require.EqualValues(t, 1, got.Load())
	require.Equal(t, 1, fake.DeliveryStats().Dropped)
}
