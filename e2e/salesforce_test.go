package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
)

// TestBothProvidersOneChangeReachesBoth runs the stripe and salesforce
// workers side by side (issue 6): one API write reaches the Stripe sandbox
// and the Salesforce fake through their own queues; a change made in the
// Salesforce UI is applied to the user through /webhook/salesforce with no
// outbound call to Salesforce (nor to Stripe: inbound changes are not
// republished), and the Outbound Messages of Tandem's own writes are
// recognised as echoes.
func TestBothProvidersOneChangeReachesBoth(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{salesforce: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	status, b, err := s.client.call(ctx, http.MethodPost, "/v1/users", map[string]any{
		"email": "grace@e2e.example.com", "name": "Grace Hopper", "phone": "+1 555 0100",
		"metadata": map[string]string{"plan": "pro"},
	})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("creating the user: %d %s %v", status, b, err)
	}
	var u apiUser
	if err := json.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	s.awaitBothSynced(t, ctx, u.ID, 1)
	c := s.contact(t, u.ID)
	if c.Email != "grace@e2e.example.com" || c.FirstName != "Grace" || c.LastName != "Hopper" || c.Phone != "+1 555 0100" {
		t.Errorf("the Salesforce contact does not hold the user: %+v", c)
	}
	if got := c.Custom[salesforcefake.DefaultCustomField]; got != `{"plan":"pro"}` {
		t.Errorf("the contact's metadata field holds %q", got)
	}

	if err := s.patchOK(ctx, u.ID, map[string]any{"name": "Grace Brewster Hopper"}); err != nil {
		t.Fatal(err)
	}
	st := s.awaitBothSynced(t, ctx, u.ID, 2)
	if c := s.contact(t, u.ID); c.FirstName != "Grace" || c.LastName != "Brewster Hopper" {
		t.Errorf("the contact was not updated: %+v", c)
	}
	if cus, ok := s.sb.Fake.Customer(*st["stripe"].RemoteID); !ok || cus.Name != "Grace Brewster Hopper" {
		t.Errorf("the Stripe customer was not updated: %+v", cus)
	}

	// Tandem's own writes came back as Outbound Messages: every one was
	// acknowledged and none changed the user.
	if err := s.sf.WaitDelivered(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.client.getUser(ctx, u.ID); got.Version != 2 {
		t.Fatalf("the echoes of Tandem's writes changed the user: version %d", got.Version)
	}

	// A person edits the contact in Salesforce.
	sfWrites, stripeWrites, outbox := s.sfWrites(), s.stripeWrites(), s.outboxRows(t)
	if _, err := s.sf.UIUpdate(c.ID, func(c *salesforcefake.Contact) {
		c.LastName, c.Phone = "Hopper-Murray", "+1 555 0199"
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.sf.WaitDelivered(ctx); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.client.getUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Grace Hopper-Murray" || got.Phone != "+1 555 0199" || got.Version != 3 {
		t.Errorf("the Salesforce edit was not applied: %+v", got)
	}
	if sf := got.Sync["salesforce"]; sf.Status != "synced" || sf.SyncedVersion != 3 {
		t.Errorf("sync.salesforce after the inbound change: %+v (want synced at version 3: Salesforce holds it)", sf)
	}
	if got.Metadata["plan"] != "pro" {
		t.Errorf("the user's metadata changed: %v", got.Metadata)
	}
	// The webhook acknowledged the message only after its commit, and it
	// wrote no outbox row: nothing can be published, so nothing is sent.
	if n := s.outboxRows(t); n != outbox {
		t.Errorf("the inbound change wrote %d outbox row(s)", n-outbox)
	}
	if n := s.sfWrites(); n != sfWrites {
		t.Errorf("the inbound change caused %d write(s) to Salesforce", n-sfWrites)
	}
	if n := s.stripeWrites(); n != stripeWrites {
		t.Errorf("the Salesforce change was sent to Stripe (%d write(s)); inbound changes are not republished", n-stripeWrites)
	}
	if d := s.sf.DeliveryStats(); d.FailedAttempts != 0 || d.Abandoned != 0 {
		t.Errorf("Outbound Message deliveries failed: %+v", d)
	}
}

// awaitBothSynced waits until the user's stripe and salesforce links are
// synced at version, and returns its sync block.
func (s *system) awaitBothSynced(t *testing.T, ctx context.Context, id string, version int64) map[string]apiSync {
	t.Helper()
	var last apiUser
	err := waitFor(ctx, 20*time.Millisecond, func() bool {
		u, status, err := s.client.getUser(ctx, id)
		if err != nil || status != http.StatusOK {
			return false
		}
		last = u
		for _, p := range []string{"stripe", "salesforce"} {
			if st := u.Sync[p]; st.Status != "synced" || st.SyncedVersion != version || st.RemoteID == nil {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("user %s did not sync to both providers at version %d: last seen %+v", id, version, last)
	}
	return last.Sync
}

// contact returns the one live Salesforce contact of user id.
func (s *system) contact(t *testing.T, id string) salesforcefake.Contact {
	t.Helper()
	cs := s.sf.ContactsByExternalID(id)
	if len(cs) != 1 {
		t.Fatalf("user %s has %d Salesforce contacts, want 1: %+v", id, len(cs), cs)
	}
	return cs[0]
}

// sfWrites counts the requests that could change a contact.
func (s *system) sfWrites() int {
	n := 0
	for _, r := range s.sf.Requests() {
		if strings.HasPrefix(r.Path, "/services/data/") && r.Method != http.MethodGet {
			n++
		}
	}
	return n
}

// stripeWrites counts the sandbox's API write requests.
func (s *system) stripeWrites() int {
	n := 0
	for _, r := range s.sb.Fake.Requests() {
		if r.Method == http.MethodPost || r.Method == http.MethodDelete {
			n++
		}
	}
	return n
}

func (s *system) outboxRows(t *testing.T) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow("SELECT COUNT(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(fmt.Errorf("counting outbox rows: %w", err))
	}
	return n
}
