package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// TestSyncTruth runs issue 10's findings against the real binaries: each
// once made MySQL and Stripe disagree (or both hold an older state) while
// the link said synced.
func TestSyncTruth(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{workers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Finding 1: a PATCH whose push gets a 429, then a customer.updated for
	// a field Tandem does not sync (the description), still carrying the
	// old name and dated after the PATCH. Both sides must end on the PATCH.
	one := s.createUser(t, ctx, "truth1@e2e.example.com", "Before")
	s.awaitSynced(t, ctx, one.ID, one.Version)
	customer := s.customerOf(t, one.ID)
	s.sb.Fake.SetFaults(stripefake.Faults{RateLimitRatio: 1})
	limited := s.sb.Fake.Stats().InjectedRateLimits
	if err := s.patchOK(ctx, one.ID, map[string]any{"name": "After the 429"}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 10*time.Millisecond, func() bool { return s.sb.Fake.Stats().InjectedRateLimits > limited }); err != nil {
		t.Fatal(err)
	}
	if err := s.dashboardOK(ctx, "/_sandbox/customers/"+customer, map[string]string{"description": "VIP"}); err != nil {
		t.Fatal(err)
	}
	if err := s.sb.Fake.WaitDelivered(ctx); err != nil {
		t.Fatal(err)
	}
	s.sb.Fake.SetFaults(stripefake.Faults{})

	// Finding 2: Stripe made the customer, answered 500 and saved the 500
	// under the create key. No second customer, neither now nor once the
	// key has expired; an update answered 500 after the write is not stuck.
	s.sb.Fake.FailAfterWrite(1)
	two := s.createUser(t, ctx, "truth2@e2e.example.com", "Saved 500")
	s.awaitSynced(t, ctx, two.ID, two.Version)
	s.sb.Fake.ExpireIdempotencyKeys()
	s.sb.Fake.FailAfterWrite(1)
	if err := s.patchOK(ctx, two.ID, map[string]any{"name": "A day later"}); err != nil {
		t.Fatal(err)
	}

	settled := s.settle(t, 60*time.Second)
	users, err := s.users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{one.ID: "After the 429", two.ID: "A day later"}
	for _, u := range users {
		name, ok := want[u.ID]
		if !ok {
			continue
		}
		cs := s.sb.Fake.CustomersWithMetadata("tandem_user_id", u.ID)
		live := 0
		for _, c := range cs {
			if !c.Deleted {
				live++
				if c.Name != name {
					t.Errorf("user %s: Stripe holds %q, want %q", u.ID, c.Name, name)
				}
			}
		}
		if live != 1 {
			t.Errorf("user %s has %d live customers, want 1", u.ID, live)
		}
		if u.Name != name {
			t.Errorf("user %s: MySQL holds %q, want %q", u.ID, u.Name, name)
		}
	}
	if !(settled.converged && settled.apiOK && settled.quiet) {
		t.Error("did not reach a fixed point (see above)")
	}
}

// TestForgedTagTakesOverNobody (issue 10, finding 7): whoever can edit a
// Stripe customer can write any user's id into its metadata. A customer
// tagged with a user that has no customer yet (its first push failed), but
// with another email, is not linked and copies nothing over the user: the
// user's link shows the conflict, naming the customer.
func TestForgedTagTakesOverNobody(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 50 metadata keys: accepted by the API, refused by Stripe (which
	// counts tandem_user_id among its 50), so the user never gets a customer.
	md := map[string]string{}
	for i := range 50 {
		md[fmt.Sprintf("k%02d", i)] = "v"
	}
	status, b, err := s.client.call(ctx, http.MethodPost, "/v1/users",
		map[string]any{"email": "victim@e2e.example.com", "name": "Victim", "metadata": md})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("creating the victim: %d %s %v", status, b, err)
	}
	var victim apiUser
	if err := json.Unmarshal(b, &victim); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 20*time.Millisecond, func() bool {
		u, _, err := s.client.getUser(ctx, victim.ID)
		return err == nil && u.Sync[provider].Status == "failed"
	}); err != nil {
		t.Fatal("the victim's push never failed:", err)
	}

	_, body, err := s.dashboard(ctx, http.MethodPost, "/_sandbox/customers", map[string]any{
		"email": "attacker@e2e.example.com", "name": "Attacker", "metadata": map[string]string{"tandem_user_id": victim.ID}})
	if err != nil {
		t.Fatal(err)
	}
	var forged struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &forged); err != nil || forged.ID == "" {
		t.Fatalf("creating the forged customer: %s %v", body, err)
	}
	if err := s.sb.Fake.WaitDelivered(ctx); err != nil {
		t.Fatal(err)
	}
	var got apiUser
	if err := waitFor(ctx, 20*time.Millisecond, func() bool {
		got, _, err = s.client.getUser(ctx, victim.ID)
		return err == nil && got.Sync[provider].Status == "conflict"
	}); err != nil {
		t.Fatalf("the victim's link never showed the conflict: %+v", got.Sync[provider])
	}
	if got.Email != "victim@e2e.example.com" || got.Name != "Victim" || got.Version != victim.Version {
		t.Errorf("the forged customer changed the victim: %+v", got)
	}
	st := got.Sync[provider]
	if st.RemoteID != nil {
		t.Errorf("the victim was linked to %s", *st.RemoteID)
	}
	if st.LastError == nil || !strings.Contains(*st.LastError, forged.ID) {
		t.Errorf("the conflict does not name the customer %s: %v", forged.ID, st.LastError)
	}
}

// createUser POSTs a user and wants 201.
func (s *system) createUser(t *testing.T, ctx context.Context, email, name string) apiUser {
	t.Helper()
	status, b, err := s.client.call(ctx, http.MethodPost, "/v1/users", map[string]any{"email": email, "name": name})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("creating %s: %d %s %v", email, status, b, err)
	}
	var u apiUser
	if err := json.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	return u
}

// awaitSynced waits until the user's Stripe link is synced at version.
func (s *system) awaitSynced(t *testing.T, ctx context.Context, id string, version int64) {
	t.Helper()
	var last apiUser
	if err := waitFor(ctx, 20*time.Millisecond, func() bool {
		u, _, err := s.client.getUser(ctx, id)
		last = u
		return err == nil && u.Sync[provider].Status == "synced" && u.Sync[provider].SyncedVersion >= version
	}); err != nil {
		t.Fatalf("user %s never synced at version %d: %+v", id, version, last.Sync[provider])
	}
}

// customerOf returns the id of the user's Stripe customer.
func (s *system) customerOf(t *testing.T, id string) string {
	t.Helper()
	u, _, err := s.client.getUser(context.Background(), id)
	if err != nil || u.Sync[provider].RemoteID == nil {
		t.Fatalf("user %s has no customer: %+v %v", id, u.Sync[provider], err)
	}
	return *u.Sync[provider].RemoteID
}

// TestWorkersLoseMySQLMidPush (issue 10, finding 5): the workers' MySQL
// connections drop while their pushes are in flight at Stripe (a failover, a
// proxy timeout), and the users change again meanwhile. With a row lock
// held across the call, another worker could push the newer version and the
// older request land last, the link saying synced. With leases nothing
// records "synced" over a doubt: both sides end on the last API change.
func TestWorkersLoseMySQLMidPush(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{workers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 20
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.createUser(t, ctx, fmt.Sprintf("cut%d@e2e.example.com", i), fmt.Sprintf("Cut %d", i)).ID
	}
	if r, _ := s.awaitConverged(60 * time.Second); !r.ok() {
		t.Fatalf("the users did not sync:\n%s", r)
	}

	// Slow pushes, so they are in flight when MySQL goes.
	s.sb.Fake.SetFaults(stripefake.Faults{Latency: 400 * time.Millisecond})
	writes := s.sb.Fake.Stats().Writes
	patchAll := func(name string) {
		var jobs []func() error
		for i, id := range ids {
			jobs = append(jobs, func() error { return s.patchOK(ctx, id, map[string]any{"name": fmt.Sprintf("%s %d", name, i)}) })
		}
		if err := parallel(8, jobs); err != nil {
			t.Fatal(err)
		}
	}
	patchAll("second")
	if err := waitFor(ctx, 5*time.Millisecond, func() bool { return s.sb.Fake.Stats().Writes > writes }); err != nil {
		t.Fatal(err)
	}
	s.mysql.Cut()
	patchAll("third") // the API still reaches MySQL
	cut := time.Now()
	if err := waitFor(ctx, 50*time.Millisecond, func() bool { return time.Since(cut) > 2*time.Second }); err != nil {
		t.Fatal(err)
	}
	s.mysql.Restore()
	s.sb.Fake.SetFaults(stripefake.Faults{})

	settled := s.settle(t, 90*time.Second)
	users, err := s.users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		i := indexOf(ids, u.ID)
		if want := fmt.Sprintf("third %d", i); u.Name != want {
			t.Errorf("user %d ended on %q, want the last API change %q", i, u.Name, want)
		}
	}
	if !(settled.converged && settled.apiOK && settled.quiet) {
		t.Error("did not reach a fixed point (see above)")
	}
}
