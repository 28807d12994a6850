package stripe_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/conformance"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
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
