package stripefake_test

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

func createParams(key, email, userID string) *stripe.CustomerParams {
	p := &stripe.CustomerParams{Email: stripe.String(email)}
	p.AddMetadata("tandem_user_id", userID)
	if key != "" {
		p.SetIdempotencyKey(key)
	}
	return p
}

func TestIdempotentReplay(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})

	first, err := sc.Customers.New(createParams("tandem-stripe-create-u1", "a@example.com", "u1"))
	require.NoError(t, err)
	require.Empty(t, first.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Equal(t, "tandem-stripe-create-u1", first.LastResponse.IdempotencyKey)

	second, err := sc.Customers.New(createParams("tandem-stripe-create-u1", "a@example.com", "u1"))
	require.NoError(t, err)
	require.Equal(t, first.ID, second.ID)
	require.Equal(t, "true", second.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Equal(t, first.LastResponse.RequestID, second.LastResponse.Header.Get("Original-Request"))
	require.Equal(t, first.LastResponse.RawJSON, second.LastResponse.RawJSON)

	require.Equal(t, 1, fake.CountCreates())
	require.Len(t, fake.CustomersWithMetadata("tandem_user_id", "u1"), 1)
	require.Len(t, fake.Events(), 1, "a replay emits no event")

	var creates, replays int
	for _, r := range fake.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v1/customers" {
			creates++
			require.Equal(t, "tandem-stripe-create-u1", r.IdempotencyKey)
			require.Equal(t, first.ID, r.CustomerID)
			require.Equal(t, []string{"u1"}, r.Params["metadata[tandem_user_id]"])
			if r.Replayed {
				replays++
			}
		}
	}
	require.Equal(t, 2, creates)
	require.Equal(t, 1, replays)
	require.Equal(t, 1, fake.Stats().IdempotentReplays)
}

func TestIdempotencyMismatch(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})

	c, err := sc.Customers.New(createParams("key-1", "a@example.com", "u1"))
	require.NoError(t, err)

	_, err = sc.Customers.New(createParams("key-1", "b@example.com", "u1"))
	se := stripeErr(t, err)
	require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeIdempotency, se.Type)
	require.Contains(t, se.Msg, "same parameters")
	var typed *stripe.IdempotencyError
	require.ErrorAs(t, se.Err, &typed)

	// The same key on another endpoint is refused too.
	upd := &stripe.CustomerParams{Name: stripe.String("x")}
	upd.SetIdempotencyKey("key-1")
	_, err = sc.Customers.Update(c.ID, upd)
	se = stripeErr(t, err)
	require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeIdempotency, se.Type)
	require.Contains(t, se.Msg, "same endpoint")

	stored, _ := fake.Customer(c.ID)
	require.Equal(t, "a@example.com", stored.Email)
	require.Empty(t, stored.Name)
	require.Equal(t, 1, fake.CountCreates())
}

func TestIdempotencyValidationErrorIsNotStored(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})

	_, err := sc.Customers.New(createParams("key-v", "not-an-email", "u1"))
	require.Equal(t, http.StatusBadRequest, stripeErr(t, err).HTTPStatusCode)

	// Stripe saves no result when parameters fail validation, so the key
	// is still free for a corrected request.
	c, err := sc.Customers.New(createParams("key-v", "ok@example.com", "u1"))
	require.NoError(t, err)
	require.Empty(t, c.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Equal(t, 1, fake.CountCreates())
}

func TestIdempotencyKeyInFlight(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})
	fake.SetFaults(stripefake.Faults{Latency: 500 * time.Millisecond})

	type result struct {
		c   *stripe.Customer
		err error
	}
	firstDone := make(chan result, 1)
	go func() {
		c, err := sc.Customers.New(createParams("key-busy", "a@example.com", "u1"))
		firstDone <- result{c, err}
	}()
	require.Eventually(t, func() bool { return fake.InFlight() == 1 }, 5*time.Second, time.Millisecond)

	_, err := sc.Customers.New(createParams("key-busy", "a@example.com", "u1"))
	se := stripeErr(t, err)
	require.Equal(t, http.StatusConflict, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeIdempotency, se.Type)
	require.Equal(t, stripe.ErrorCodeIdempotencyKeyInUse, se.Code)

	first := <-firstDone
	require.NoError(t, first.err)
	fake.SetFaults(stripefake.Faults{})

	again, err := sc.Customers.New(createParams("key-busy", "a@example.com", "u1"))
	require.NoError(t, err)
	require.Equal(t, first.c.ID, again.ID)
	require.Equal(t, "true", again.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Equal(t, 1, fake.CountCreates())
}

// A request that times out on the client still completes on the server, and
// the retry with the same key gets the stored answer instead of a duplicate.
func TestLostResponseThenRetry(t *testing.T) {
	t.Parallel()
	fake, url := start(t, stripefake.Options{})
	// The client gives up well after its request reached the fake (a
	// tighter timeout could fire before the request arrives on a busy
	// machine) and well before the fake answers.
	fake.SetFaults(stripefake.Faults{Latency: 1500 * time.Millisecond})

	impatient := newClient(url, stripefake.DefaultAPIKey, &http.Client{Timeout: 500 * time.Millisecond})
	_, err := impatient.Customers.New(createParams("key-lost", "a@example.com", "u1"))
	require.Error(t, err)

	require.Eventually(t, func() bool { return fake.CountCreates() == 1 && fake.InFlight() == 0 },
		15*time.Second, time.Millisecond)
	fake.SetFaults(stripefake.Faults{})

	sc := newClient(url, stripefake.DefaultAPIKey, nil)
	c, err := sc.Customers.New(createParams("key-lost", "a@example.com", "u1"))
	require.NoError(t, err)
	require.Equal(t, "true", c.LastResponse.Header.Get("Idempotent-Replayed"))
	require.Len(t, fake.CustomersWithMetadata("tandem_user_id", "u1"), 1)
	require.Equal(t, fake.Customers()[0].ID, c.ID)
}

func TestIdempotencyKeysExpireAfter24Hours(t *testing.T) {
	t.Parallel()
	clk := newClock()
	fake, sc := startWithClient(t, stripefake.Options{Clock: clk.Now})

	first, err := sc.Customers.New(createParams("key-old", "a@example.com", "u1"))
	require.NoError(t, err)

	clk.Advance(23 * time.Hour)
	replay, err := sc.Customers.New(createParams("key-old", "a@example.com", "u1"))
	require.NoError(t, err)
	require.Equal(t, first.ID, replay.ID)

	clk.Advance(time.Hour)
	fresh, err := sc.Customers.New(createParams("key-old", "b@example.com", "u2"))
	require.NoError(t, err)
	require.NotEqual(t, first.ID, fresh.ID)
	require.Equal(t, 2, fake.CountCreates())
}

func TestConcurrentCreatesWithOneKeyMakeOneCustomer(t *testing.T) {
	t.Parallel()
	fake, url := start(t, stripefake.Options{})

	const users, attempts = 10, 8
	var wg sync.WaitGroup
	ids := make([][]string, users)
	for u := range users {
		ids[u] = make([]string, attempts)
		for a := range attempts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := newClient(url, stripefake.DefaultAPIKey, nil)
				userID := fmt.Sprintf("u%d", u)
				for {
					c, err := sc.Customers.New(createParams("tandem-stripe-create-"+userID, userID+"@example.com", userID))
					if err == nil {
						ids[u][a] = c.ID
						return
					}
					var se *stripe.Error
					if !errors.As(err, &se) || se.HTTPStatusCode != http.StatusConflict {
						t.Errorf("user %s: %v", userID, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()

	require.Equal(t, users, fake.CountCreates())
	for u := range users {
		matches := fake.CustomersWithMetadata("tandem_user_id", fmt.Sprintf("u%d", u))
		require.Len(t, matches, 1)
		for a := range attempts {
			require.Equal(t, matches[0].ID, ids[u][a])
		}
	}
}
