// Package conformance is the test suite every provider adapter passes (STYLE
// habit 11): run it against the provider's stateful fake, and, where one
// exists, against the provider's own mock server for request shapes.
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Harness{
//			New:      func(t *testing.T) integrations.Provider { ... },
//			Stateful: true,
//			Lookup:   fake.Lookup,
//		})
//	}
//
// It uses only the integrations.Provider contract, so it says nothing about
// a provider's wire format: adapters test that themselves.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// Harness describes the provider under test.
type Harness struct {
	// New returns the provider under test. It is called once per subtest,
	// and subtests run in parallel.
	New func(t *testing.T) integrations.Provider

	// Stateful says the backend keeps state (a fake, or the real service):
	// the suite then also checks that a repeated create returns the same
	// object and that an update of a deleted object is ErrNotFound. A mock
	// that answers every call from fixtures (stripe-mock) is not stateful.
	Stateful bool

	// Lookup, if set, reads the remote object back (found false once it is
	// deleted), so the suite can check what Upsert left there: Email, Name,
	// Phone and Metadata are compared.
	Lookup func(ctx context.Context, remoteID string) (c integrations.Customer, found bool, err error)

	// ProviderMetadataKeys are metadata keys the adapter itself adds (Stripe:
	// tandem_user_id); Lookup's metadata is compared without them.
	ProviderMetadataKeys []string

	// NewDown, if set, returns the provider wired to a backend that answers
	// every call with a server error (5xx), so the suite can check such
	// errors are transient. It must not share state with New's backend.
	NewDown func(t *testing.T) integrations.Provider
}

var seq atomic.Int64

// NewCustomer returns a customer with a new user id (a UUIDv7, like Tandem's).
func NewCustomer() integrations.Customer {
	n := seq.Add(1)
	return integrations.Customer{
		UserID:   uuid.Must(uuid.NewV7()).String(),
		Email:    fmt.Sprintf("user%d@example.com", n),
		Name:     "Ada Lovelace",
		Phone:    "+44 20 7946 0000",
		Metadata: map[string]string{"plan": "pro", "team": "core"},
		Version:  1,
	}
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Helper()
	require.NotNil(t, h.New, "Harness.New")

	t.Run("Name", func(t *testing.T) {
		t.Parallel()
		name := h.New(t).Name()
		require.NotEmpty(t, name)
		for _, r := range name {
			require.True(t, r >= 'a' && r <= 'z' || r >= '0' && r <= '9', "name %q: want lower-case letters and digits", name)
		}
	})

	t.Run("CreateThenUpdate", func(t *testing.T) {
		t.Parallel()
		p, ctx := h.New(t), context.Background()
		c := NewCustomer()
		res, err := p.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)
		require.NotEmpty(t, res.RemoteID)
		require.Equal(t, []string{"plan", "team"}, res.MetadataKeys)
		h.expect(t, res.RemoteID, c)

		c.Version, c.Name, c.Phone = 2, "Ada King", ""
		c.Metadata = map[string]string{"plan": "enterprise", "seats": "12"}
		res2, err := p.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID, MetadataKeys: res.MetadataKeys})
		require.NoError(t, err)
		require.Equal(t, res.RemoteID, res2.RemoteID)
		require.Equal(t, []string{"plan", "seats"}, res2.MetadataKeys)
		h.expect(t, res.RemoteID, c)
	})

	t.Run("UpdateWithUnknownMetadataKeys", func(t *testing.T) {
		t.Parallel()
		p, ctx := h.New(t), context.Background()
		c := NewCustomer()
		res, err := p.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)

		c.Version, c.Metadata = 2, nil
		res2, err := p.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID})
		require.NoError(t, err)
		require.Equal(t, res.RemoteID, res2.RemoteID)
		require.NotNil(t, res2.MetadataKeys)
		require.Empty(t, res2.MetadataKeys)
		h.expect(t, res.RemoteID, c)
	})

	t.Run("StaleMetadataKeysAreRemovedAnyway", func(t *testing.T) {
		t.Parallel()
		p, ctx := h.New(t), context.Background()
		c := NewCustomer()
		res, err := p.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)

		// The caller's record of the remote keys is wrong (empty): the
		// adapter must still leave exactly the user's metadata.
		c.Version, c.Metadata = 2, map[string]string{"plan": "pro"}
		_, err = p.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID, MetadataKeys: []string{}})
		require.NoError(t, err)
		h.expect(t, res.RemoteID, c)
	})

	t.Run("RepeatedCreateIsIdempotent", func(t *testing.T) {
		if !h.Stateful {
			t.Skip("needs a stateful backend")
		}
		t.Parallel()
		p, ctx := h.New(t), context.Background()
		c := NewCustomer()
		res, err := p.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)
		c.Version, c.Name = 2, "Changed Before The Id Was Stored"
		again, err := p.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)
		require.Equal(t, res.RemoteID, again.RemoteID, "a second create for the same user must return the first object")
		h.expect(t, res.RemoteID, c)
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		p, ctx := h.New(t), context.Background()
		// Without a remote id (none recorded): done, whatever the adapter
		// does to find one a lost create may have made.
		require.NoError(t, p.Delete(ctx, NewCustomer(), integrations.Link{}), "nothing recorded to delete")

		c := NewCustomer()

		res, err := p.Upsert(ctx, c, integrations.Link{})
		require.NoError(t, err)
		link := integrations.Link{RemoteID: res.RemoteID}
		require.NoError(t, p.Delete(ctx, c, link))
		require.NoError(t, p.Delete(ctx, c, link), "deleting twice is done")
		if h.Lookup != nil {
			_, found, err := h.Lookup(ctx, res.RemoteID)
			require.NoError(t, err)
			require.False(t, found)
		}
		if h.Stateful {
			c.Version = 2
			_, err := p.Upsert(ctx, c, link)
			require.ErrorIs(t, err, integrations.ErrNotFound)
			require.True(t, integrations.IsPermanent(err), "ErrNotFound is permanent: %v", err)
		}
	})

	t.Run("InvalidEmailIsPermanent", func(t *testing.T) {
		if !h.Stateful {
			t.Skip("needs a backend that validates")
		}
		t.Parallel()
		p, ctx := h.New(t), context.Background()
		c := NewCustomer()
		c.Email = "not an email"
		_, err := p.Upsert(ctx, c, integrations.Link{})
		require.Error(t, err)
		require.True(t, integrations.IsPermanent(err), "the provider refuses this on every retry: %v", err)
		require.False(t, errors.Is(err, integrations.ErrNotFound), "%v", err)
	})

	t.Run("ServerErrorsAreTransient", func(t *testing.T) {
		if h.NewDown == nil {
			t.Skip("Harness.NewDown not set")
		}
		t.Parallel()
		p, ctx := h.NewDown(t), context.Background()
		c := NewCustomer()
		_, err := p.Upsert(ctx, c, integrations.Link{})
		require.Error(t, err)
		require.False(t, integrations.IsPermanent(err), "a 5xx must be retried: %v", err)
		err = p.Delete(ctx, c, integrations.Link{RemoteID: "remote-1"})
		require.Error(t, err)
		require.False(t, integrations.IsPermanent(err), "a 5xx must be retried: %v", err)
	})

	t.Run("CanceledContextIsNotPermanent", func(t *testing.T) {
		t.Parallel()
		p := h.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := p.Upsert(ctx, NewCustomer(), integrations.Link{})
		require.Error(t, err)
		require.False(t, integrations.IsPermanent(err), "a canceled call must be retried: %v", err)
		require.True(t, errors.Is(err, context.Canceled), "want context.Canceled in %v", err)
	})
}

// expect checks, through Lookup, that the remote object holds c's state.
func (h Harness) expect(t *testing.T, remoteID string, c integrations.Customer) {
	t.Helper()
	if h.Lookup == nil {
		return
	}
	got, found, err := h.Lookup(context.Background(), remoteID)
	require.NoError(t, err)
	require.True(t, found, "remote object %s not found", remoteID)
	want := map[string]string{}
	maps.Copy(want, c.Metadata)
	gotMD := map[string]string{}
	maps.Copy(gotMD, got.Metadata)
	for _, k := range h.ProviderMetadataKeys {
		delete(gotMD, k)
	}
	require.Equal(t, c.Email, got.Email, "email")
	require.Equal(t, c.Name, got.Name, "name")
	require.Equal(t, c.Phone, got.Phone, "phone")
	require.Equal(t, want, gotMD, "metadata (keys %v)", slices.Sorted(maps.Keys(gotMD)))
}
