package stripe_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/conformance"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/testutil/stripemock"
)

// TestStripeMock runs the adapter against stripe-mock, which checks every
// request against Stripe's OpenAPI spec (a parameter Stripe does not know, or
// of the wrong shape, is a 400 and fails the test as a permanent error).
// stripe-mock keeps no state, so only the stateless part of the conformance
// suite runs.
func TestStripeMock(t *testing.T) {
	base := stripemock.Start(t)
	newAdapter := func(t *testing.T) integrations.Provider {
		a, err := stripe.New(stripe.Config{SecretKey: "sk_test_123", APIBase: base, RateLimit: 1000}, stripe.Options{})
		require.NoError(t, err)
		return a
	}

	conformance.Run(t, conformance.Harness{New: newAdapter})

	t.Run("Shapes", func(t *testing.T) {
		t.Parallel()
		a, ctx := newAdapter(t), context.Background()
		c := conformance.NewCustomer()
		c.Name, c.Phone, c.Email = "", "", "" // cleared fields are sent as ""
		res, err := a.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(res.RemoteID, "cus_"), res.RemoteID)

		c.Version = 7
		c.Metadata = map[string]string{"only": "this"}
		_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: "cus_123", MetadataKeys: []string{"gone", "plan"}})
		require.NoError(t, err, "unsetting metadata keys with empty values")

		require.NoError(t, a.Delete(ctx, c, integrations.Link{RemoteID: "cus_123"}))
	})

	t.Run("BadKeyIsPermanent", func(t *testing.T) {
		t.Parallel()
		a, err := stripe.New(stripe.Config{SecretKey: "not-a-key", APIBase: base, RateLimit: 1000}, stripe.Options{})
		require.NoError(t, err)
		_, err = a.Upsert(context.Background(), conformance.NewCustomer(), integrations.Link{RemoteID: "cus_123"})
		require.Error(t, err)
		require.True(t, integrations.IsPermanent(err), "%v", err)
		require.Contains(t, err.Error(), "stripe 401 invalid_request_error: Please authenticate")
	})
}
