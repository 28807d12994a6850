package stripe_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/conformance"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
)

func fakeAdapter(t *testing.T, fake *stripefake.Server) integrations.Provider {
	t.Helper()
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: fake.URL(), RateLimit: 1000}, stripe.Options{})
	require.NoError(t, err)
	return a
}

func startStripeFake(t *testing.T) *stripefake.Server {
	t.Helper()
	fake := stripefake.New(stripefake.Options{})
	t.Cleanup(fake.Close)
	_, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	return fake
}

// TestConformanceAgainstFake runs the shared suite against the project's
// stateful Stripe fake (stripe-mock, in stripemock_test.go, keeps no state).
func TestConformanceAgainstFake(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	conformance.Run(t, conformance.Harness{
		New:      func(t *testing.T) integrations.Provider { return fakeAdapter(t, fake) },
		Stateful: true,
		Lookup: func(_ context.Context, id string) (integrations.Customer, bool, error) {
			c, ok := fake.Customer(id)
			if !ok || c.Deleted {
				return integrations.Customer{}, false, nil
			}
			return integrations.Customer{Email: c.Email, Name: c.Name, Phone: c.Phone, Metadata: c.Metadata}, true, nil
		},
		ProviderMetadataKeys: []string{stripe.MetadataUserIDKey},
		NewDown: func(t *testing.T) integrations.Provider {
			down := startStripeFake(t)
			down.SetFaults(stripefake.Faults{ServerErrorRatio: 1})
			return fakeAdapter(t, down)
		},
	})
}

// TestPushesInFlightReuseConnections: the adapter's own HTTP client keeps
// a connection per push in flight; net/http's default keeps 2 per host, so
// 32 pushes at once opened a new connection (and TLS handshake, against
// Stripe) for most requests.
func TestPushesInFlightReuseConnections(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	proxy := tcpproxy.New(t, strings.TrimPrefix(fake.URL(), "http://"))
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: "http://" + proxy.Addr(), RateLimit: 100000}, stripe.Options{})
	require.NoError(t, err)
	const inFlight, rounds = 32, 4
	for r := range rounds {
		var wg sync.WaitGroup
		for i := range inFlight {
			wg.Go(func() {
				c := integrations.Customer{UserID: fmt.Sprintf("u-%d-%d", r, i), Email: fmt.Sprintf("u%d-%d@example.com", r, i)}
				_, err := a.Upsert(context.Background(), c, integrations.Link{Attempt: 1})
				assert.NoError(t, err)
			})
		}
		wg.Wait()
	}
	// At most one connection per push in flight, plus a few dialled while
	// a finished one was being put back.
	assert.LessOrEqual(t, proxy.Accepted(), inFlight+inFlight/4, "%d pushes, %d at a time", inFlight*rounds, inFlight)
}
