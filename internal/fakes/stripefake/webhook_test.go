package stripefake_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// waitDelivered waits for the fake's delivery queue to drain, at most 10 s.
func waitDelivered(t *testing.T, fake *stripefake.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, fake.WaitDelivered(ctx))
}

func webhookOptions(r *receiver) stripefake.Options {
	return stripefake.Options{
		WebhookURL:      r.srv.URL,
		WebhookSecret:   testSecret,
		RetryBackoff:    time.Millisecond,
		MaxRetryBackoff: 5 * time.Millisecond,
	}
}

func TestWebhookDelivery(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, testSecret)
	fake, sc := startWithClient(t, webhookOptions(r))

	c, err := sc.Customers.New(createParams("tandem-stripe-create-u1", "a@example.com", "u1"))
	require.NoError(t, err)
	_, err = sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String("Ada")})
	require.NoError(t, err)
	_, err = sc.Customers.Del(c.ID, nil)
	require.NoError(t, err)
	waitDelivered(t, fake)

	require.Empty(t, r.rejections(), "every signature verifies")
	got := r.accepted()
	require.Equal(t, []string{"customer.created", "customer.updated", "customer.deleted"}, eventTypes(got))
	for _, ev := range got {
		require.Equal(t, c.ID, ev.GetObjectValue("id"))
		require.Equal(t, stripe.APIVersion, ev.APIVersion)
		require.EqualValues(t, 1, ev.PendingWebhooks)
		require.NotEmpty(t, ev.Request.ID)
	}
	require.Equal(t, "tandem-stripe-create-u1", got[0].Request.IdempotencyKey)
	require.Equal(t, "Ada", got[1].GetObjectValue("name"))
	require.Equal(t, "u1", got[2].GetObjectValue("metadata", "tandem_user_id"))

	for _, ev := range fake.Events() {
		require.Zero(t, ev.PendingWebhooks, "delivered events have nothing pending")
	}
	st := fake.DeliveryStats()
	require.Equal(t, stripefake.DeliveryStats{Queued: 3, Attempts: 3, Delivered: 3}, st)
}

func TestWebhookWrongSecretIsRejectedByReceiver(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, "whsec_other")
	opts := webhookOptions(r)
	opts.DeliveryAttempts = 2
	fake, sc := startWithClient(t, opts)

	_, err := sc.Customers.New(createParams("", "a@example.com", "u1"))
	require.NoError(t, err)
	waitDelivered(t, fake)

	require.Len(t, r.rejections(), 2)
	require.Empty(t, r.accepted())
	st := fake.DeliveryStats()
	require.Equal(t, 1, st.Abandoned)
	require.Equal(t, 2, st.FailedAttempts)
	require.Equal(t, 1, fake.Events()[0].PendingWebhooks)
}

func TestWebhookRetriesUntilAccepted(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, testSecret)
	r.setStatus(func(_ stripe.Event, n int) int {
		if n < 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	fake, sc := startWithClient(t, webhookOptions(r))

	c, err := sc.Customers.New(createParams("", "a@example.com", "u1"))
	require.NoError(t, err)
	for i := range 3 {
		_, err = sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String(fmt.Sprint("name ", i))})
		require.NoError(t, err)
	}
	waitDelivered(t, fake)

	// Retries hold back the customer's later events: order survives.
	got := r.accepted()
	require.Equal(t, []string{"customer.created", "customer.updated", "customer.updated", "customer.updated"}, eventTypes(got))
	for i, ev := range got[1:] {
		require.Equal(t, fmt.Sprint("name ", i), ev.GetObjectValue("name"))
	}
	st := fake.DeliveryStats()
	require.Equal(t, 4, st.Delivered)
	require.Equal(t, 8, st.FailedAttempts)
	require.Equal(t, 12, st.Attempts)
	require.Zero(t, st.Abandoned)

	attempts := fake.Deliveries()
	require.Len(t, attempts, 12)
	require.Equal(t, []int{1, 2, 3}, []int{attempts[0].Attempt, attempts[1].Attempt, attempts[2].Attempt})
	require.Equal(t, http.StatusServiceUnavailable, attempts[0].StatusCode)
	require.True(t, attempts[2].OK)
}

func TestWebhookDuplicates(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, testSecret)
	opts := webhookOptions(r)
	opts.DuplicateDeliveries = 2
	fake, sc := startWithClient(t, opts)

	_, err := sc.Customers.New(createParams("", "a@example.com", "u1"))
	require.NoError(t, err)
	_, err = fake.DashboardCreate(stripefake.Customer{Email: "b@example.com"})
	require.NoError(t, err)
	waitDelivered(t, fake)

	got := r.accepted()
	require.Len(t, got, 6)
	perID := map[string]int{}
	for _, ev := range got {
		perID[ev.ID]++
	}
	require.Len(t, perID, 2)
	for id, n := range perID {
		require.Equal(t, 3, n, "event %s", id)
	}
	require.Equal(t, 6, fake.DeliveryStats().Delivered)
}

func TestWebhookPauseAndReverseOrder(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, testSecret)
	opts := webhookOptions(r)
	opts.DeliveryOrder = stripefake.OrderReversed
	fake, sc := startWithClient(t, opts)
	fake.PauseDelivery()

	c, err := sc.Customers.New(createParams("", "a@example.com", "u1"))
	require.NoError(t, err)
	_, err = sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String("Ada")})
	require.NoError(t, err)
	_, err = fake.DashboardUpdate(c.ID, func(c *stripefake.Customer) { c.Name = "Ada L." })
	require.NoError(t, err)

	// While paused nothing is sent, and waiting ends only by its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, fake.WaitDelivered(ctx), context.DeadlineExceeded)
	require.Empty(t, r.accepted())
	require.Equal(t, 3, fake.DeliveryStats().Pending)

	fake.ResumeDelivery()
	waitDelivered(t, fake)
	got := r.accepted()
	require.Equal(t, []string{"customer.updated", "customer.updated", "customer.created"}, eventTypes(got))
	require.Equal(t, "Ada L.", got[0].GetObjectValue("name"))
	require.Equal(t, "Ada", got[1].GetObjectValue("name"))
}

func TestWebhookShuffledOrderIsSeeded(t *testing.T) {
	t.Parallel()
	run := func(seed uint64) (received []string) {
		r := newReceiver(t, testSecret)
		opts := webhookOptions(r)
		opts.DeliveryOrder = stripefake.OrderShuffled
		opts.Seed = seed
		fake, sc := startWithClient(t, opts)
		fake.PauseDelivery()
		for i := range 12 {
			_, err := sc.Customers.New(createParams("", fmt.Sprintf("u%d@example.com", i), fmt.Sprint(i)))
			require.NoError(t, err)
		}
		fake.ResumeDelivery()
		waitDelivered(t, fake)
		for _, ev := range r.accepted() {
			received = append(received, ev.GetObjectValue("metadata", "tandem_user_id"))
		}
		return received
	}
	a, b := run(42), run(42)
	require.Equal(t, a, b, "same seed, same order")
	require.Len(t, a, 12)
	inOrder := make([]string, 12)
	for i := range inOrder {
		inOrder[i] = fmt.Sprint(i)
	}
	require.NotEqual(t, inOrder, a, "shuffled")
	sorted := slices.Clone(a)
	slices.SortFunc(sorted, func(x, y string) int { return atoi(x) - atoi(y) })
	require.Equal(t, inOrder, sorted, "every event arrives once")
}

func atoi(s string) int {
	var n int
	_, _ = fmt.Sscan(s, &n)
	return n
}

func TestSetWebhookEndpointAtRunTime(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})

	_, err := sc.Customers.New(createParams("", "before@example.com", "u0"))
	require.NoError(t, err)
	require.Zero(t, fake.Events()[0].PendingWebhooks, "no endpoint, nothing pending")

	r := newReceiver(t, testSecret)
	fake.SetWebhookEndpoint(r.srv.URL, testSecret)
	_, err = sc.Customers.New(createParams("", "after@example.com", "u1"))
	require.NoError(t, err)
	waitDelivered(t, fake)

	got := r.accepted()
	require.Len(t, got, 1)
	require.Equal(t, "after@example.com", got[0].GetObjectValue("email"))
}
