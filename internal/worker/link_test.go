package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/worker"
)

// Link before create: a customer Stripe already holds for the user's email
// is linked and tagged, never duplicated; several are a conflict; one tagged
// for another user is not the user's.
func TestLinkBeforeCreate(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{LinkByEmail: true}})
	dash := func(email string, meta map[string]string) string {
		c, err := p.fake.DashboardCreate(stripefake.Customer{Email: email, Name: "Before Tandem", Metadata: meta})
		require.NoError(t, err)
		return c.ID
	}
	existing := dash("ann@example.com", map[string]string{"plan": "pro"})
	twinA, twinB := dash("twin@example.com", nil), dash("twin@example.com", nil)
	other := dash("taken@example.com", map[string]string{stripe.MetadataUserIDKey: "0193a8b0-0000-7000-8000-00000000aaaa"})
	creates := p.fake.CountCreates()

	// The user's email differs in case: Stripe's filter is case-sensitive,
	// the lookup tries the lower-case form too.
	ann := p.create("Ann@Example.com")
	twin := p.create("twin@example.com")
	taken := p.create("taken@example.com")
	p.waitSynced(15*time.Second, store.LinkSynced, ann, taken)

	l := p.link(ann.ID)
	require.Equal(t, existing, deref(l.RemoteID), "the existing customer was not linked")
	cust, ok := p.fake.Customer(existing)
	require.True(t, ok)
	require.Equal(t, ann.ID, cust.Metadata[stripe.MetadataUserIDKey], "the linked customer is not tagged")
	require.Equal(t, ann.Name, cust.Name, "the user's state was not pushed over the linked customer")
	require.NotContains(t, cust.Metadata, "plan", "the push leaves the customer holding the user as Tandem has it")

	lt := p.link(taken.ID)
	require.NotEqual(t, other, deref(lt.RemoteID), "a customer tagged for another user was taken")

	lc := p.waitStatus(15*time.Second, twin.ID, store.LinkConflict)
	require.Nil(t, lc.RemoteID)
	require.Contains(t, deref(lc.LastError), twinA)
	require.Contains(t, deref(lc.LastError), twinB)

	require.Equal(t, creates+1, p.fake.CountCreates(), "only the user whose email no untagged customer holds gets a new customer")
	for _, c := range p.fake.Customers() {
		if strings.EqualFold(c.Email, "twin@example.com") {
			require.Empty(t, c.Metadata[stripe.MetadataUserIDKey], "a conflict tagged a candidate")
		}
	}
}

// With TANDEM_LINK_BY_EMAIL off, an untagged customer with the same email is
// left alone and a new one made, and a first create costs no lookup (only
// an earlier push of this user can have made a tagged customer).
func TestLinkByEmailOff(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{LinkByEmail: false}})
	c, err := p.fake.DashboardCreate(stripefake.Customer{Email: "bo@example.com", Name: "Bo"})
	require.NoError(t, err)
	bo := p.create("bo@example.com")
	p.waitSynced(15*time.Second, store.LinkSynced, bo)
	require.NotEqual(t, c.ID, deref(p.link(bo.ID).RemoteID))
	require.Equal(t, 1, p.fake.CountCreates())
	for _, r := range p.fake.Requests() {
		require.False(t, r.Method == "GET" && r.Path == "/v1/customers", "a first create looked customers up: %+v", r)
	}
}
