package stripefake_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"
	"golang.org/x/time/rate"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

func TestInjectedRateLimitChangesNothing(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})
	fake.SetFaults(stripefake.Faults{RateLimitRatio: 1})

	_, err := sc.Customers.New(createParams("key-429", "a@example.com", "u1"))
	se := stripeErr(t, err)
	require.Equal(t, http.StatusTooManyRequests, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeInvalidRequest, se.Type)
	require.Equal(t, stripe.ErrorCodeRateLimit, se.Code)
	require.Contains(t, se.Msg, "Request rate limit exceeded")
	require.Empty(t, fake.Customers())
	require.Empty(t, fake.Events())

	// The key stored nothing: the retry runs for real.
	fake.SetFaults(stripefake.Faults{})
	c, err := sc.Customers.New(createParams("key-429", "a@example.com", "u1"))
	require.NoError(t, err)
	require.Empty(t, c.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Equal(t, 1, fake.CountCreates())
	require.Equal(t, 1, fake.Stats().InjectedRateLimits)

	var faults []stripefake.Fault
	for _, r := range fake.Requests() {
		faults = append(faults, r.Fault)
	}
	require.Equal(t, []stripefake.Fault{stripefake.FaultRateLimit, stripefake.FaultNone}, faults)
}

func TestInjectedServerErrorChangesNothing(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})
	c, err := sc.Customers.New(createParams("", "a@example.com", "u1"))
	require.NoError(t, err)

	fake.SetFaults(stripefake.Faults{ServerErrorRatio: 1})
	upd := &stripe.CustomerParams{Name: stripe.String("New Name")}
	upd.SetIdempotencyKey("key-500")
	_, err = sc.Customers.Update(c.ID, upd)
	se := stripeErr(t, err)
	require.Equal(t, http.StatusInternalServerError, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeAPI, se.Type)
	var typed *stripe.APIError
	require.ErrorAs(t, se.Err, &typed)

	_, err = sc.Customers.Del(c.ID, nil)
	require.Equal(t, http.StatusInternalServerError, stripeErr(t, err).HTTPStatusCode)

	stored, _ := fake.Customer(c.ID)
	require.Empty(t, stored.Name)
	require.False(t, stored.Deleted)
	require.Len(t, fake.Events(), 1, "only the create")

	fake.SetFaults(stripefake.Faults{})
	updated, err := sc.Customers.Update(c.ID, upd)
	require.NoError(t, err)
	require.Equal(t, "New Name", updated.Name)
	require.Empty(t, updated.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Equal(t, 2, fake.Stats().InjectedServerErrors)
}

func TestFaultRatiosAreSeeded(t *testing.T) {
	t.Parallel()
	run := func(seed uint64) []int {
		fake, sc := startWithClient(t, stripefake.Options{Seed: seed})
		fake.SetFaults(stripefake.Faults{RateLimitRatio: 0.2, ServerErrorRatio: 0.2})
		statuses := make([]int, 200)
		for i := range statuses {
			_, err := sc.Customers.Get("cus_missing", nil)
			statuses[i] = stripeErr(t, err).HTTPStatusCode
		}
		return statuses
	}
	a, b, c := run(7), run(7), run(8)
	require.Equal(t, a, b, "same seed, same faults")
	require.NotEqual(t, a, c, "another seed, other faults")

	counts := map[int]int{}
	for _, s := range a {
		counts[s]++
	}
	for _, code := range []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusNotFound} {
		require.Greater(t, counts[code], 20, "status %d count %d", code, counts[code])
	}
}

func TestHardRateLimit(t *testing.T) {
	t.Parallel()

	t.Run("a client that bursts is refused and counted", func(t *testing.T) {
		t.Parallel()
		fake, sc := startWithClient(t, stripefake.Options{})
		fake.SetRateLimit(20)
		var refused int
		for range 100 {
			_, err := sc.Customers.Get("cus_missing", nil)
			if se := stripeErr(t, err); se.HTTPStatusCode == http.StatusTooManyRequests {
				require.Equal(t, stripe.ErrorCodeRateLimit, se.Code)
				refused++
			}
		}
		require.Positive(t, refused)
		require.Equal(t, refused, fake.RateLimitRejections())
		require.Zero(t, fake.Stats().InjectedRateLimits)
	})

	t.Run("a client that paces itself is never refused", func(t *testing.T) {
		t.Parallel()
		fake, sc := startWithClient(t, stripefake.Options{})
		fake.SetRateLimit(50)
		limiter := rate.NewLimiter(25, 1)
		for range 30 {
			require.NoError(t, limiter.Wait(context.Background()))
			it := sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{Single: true}})
			it.Next()
			require.NoError(t, it.Err())
		}
		require.Zero(t, fake.RateLimitRejections())
	})
}

// RejectEmailDomain refuses creates and updates at that domain with a 400
// that changes nothing; turned off, the same key goes through.
func TestRejectEmailDomain(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})
	fake.SetFaults(stripefake.Faults{RejectEmailDomain: "Blocked.example"})
	_, err := sc.Customers.New(createParams("key-400", "ada@blocked.example", "u1"))
	se := stripeErr(t, err)
	require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorCodeEmailInvalid, se.Code)
	require.Empty(t, fake.Customers())
	_, err = sc.Customers.New(createParams("key-ok", "bob@example.com", "u2"))
	require.NoError(t, err)

	fake.SetFaults(stripefake.Faults{})
	_, err = sc.Customers.New(createParams("key-400", "ada@blocked.example", "u1"))
	require.NoError(t, err)
	require.Equal(t, 2, fake.CountCreates())
}
