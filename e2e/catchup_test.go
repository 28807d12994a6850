package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/testutil"
)

// catchupInterval is TANDEM_CATCHUP_INTERVAL in these tests.
const catchupInterval = time.Second

// userRow reads a user's version and whether it is deleted, from MySQL
// (the API does not show deleted users).
func (s *system) userRow(ctx context.Context, id string) (version int64, deleted bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT version, deleted_at IS NOT NULL FROM users WHERE id = ?`, id).Scan(&version, &deleted)
	return version, deleted, err
}

// userOfCustomer is the user linked to a Stripe customer, "" if none.
func (s *system) userOfCustomer(ctx context.Context, remoteID string) string {
	var id string
	_ = s.db.QueryRowContext(ctx, `SELECT user_id FROM provider_links WHERE provider = 'stripe' AND remote_id = ?`, remoteID).Scan(&id)
	return id
}

// TestCatchupAppliesWhatWebhooksLost: with every webhook delivery lost, a
// dashboard update, a create and a delete reach Tandem through catch-up
// within a few intervals (two webhook processes running it at once); each
// user's version rises by exactly one per change, each event is applied
// once, and nothing is pushed back to Stripe. The webhook logs each one at
// warning level, naming its event.
func TestCatchupAppliesWhatWebhooksLost(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: builds and runs the binaries")
	}
	t.Parallel()
	s := newSystem(t, options{env: []string{"TANDEM_CATCHUP_INTERVAL=" + catchupInterval.String()}})
	addr := freeAddr(t)
	second := &process{name: "webhook-2", path: s.webhook.path, env: append(slices.Clone(s.webhook.env), "TANDEM_WEBHOOK_ADDR="+addr),
		dir: s.webhook.dir, addr: addr, out: &testutil.SyncBuffer{}}
	second.start(t)
	t.Cleanup(func() {
		if err := second.stop(15 * time.Second); err != nil {
			t.Errorf("graceful stop: %v", err)
		}
		if t.Failed() {
			t.Log(second.report(t.Name()))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	a := s.createUser(t, ctx, "ada@example.com", "Ada")
	b := s.createUser(t, ctx, "bob@example.com", "Bob")
	s.awaitSynced(t, ctx, a.ID, 1)
	s.awaitSynced(t, ctx, b.ID, 1)
	custA, custB := s.customerOf(t, a.ID), s.customerOf(t, b.ID)
	// Wait for the echoes of the creates: they are delivered, not lost.
	if err := s.sb.Fake.WaitDelivered(ctx); err != nil {
		t.Fatal(err)
	}
	writes, outbox := s.stripeWrites(), s.outboxRows(t)

	if status, body, err := s.dashboard(ctx, http.MethodPost, "/_sandbox/delivery", map[string]any{"drop": 1}); err != nil || status != http.StatusOK {
		t.Fatalf("dropping deliveries: %d %s %v", status, body, err)
	}
	events := len(s.sb.Fake.Events())
	start := time.Now()
	if err := s.dashboardOK(ctx, "/_sandbox/customers/"+custA, map[string]any{"name": "Ada King"}); err != nil {
		t.Fatal(err)
	}
	if err := s.dashboardOK(ctx, "/_sandbox/customers/"+custB+"/delete", nil); err != nil {
		t.Fatal(err)
	}
	status, body, err := s.dashboard(ctx, http.MethodPost, "/_sandbox/customers", map[string]any{"email": "cleo@example.com", "name": "Cleo"})
	if err != nil || status != http.StatusOK {
		t.Fatalf("dashboard create: %d %s %v", status, body, err)
	}
	var custC struct{ ID string }
	if err := json.Unmarshal(body, &custC); err != nil {
		t.Fatal(err)
	}
	if got := s.sb.Fake.DeliveryStats().Dropped; got != 3 {
		t.Fatalf("%d deliveries dropped, want 3", got)
	}

	var userC string
	if err := waitFor(ctx, 50*time.Millisecond, func() bool {
		u, _, err := s.client.getUser(ctx, a.ID)
		_, deleted, derr := s.userRow(ctx, b.ID)
		userC = s.userOfCustomer(ctx, custC.ID)
		return err == nil && u.Name == "Ada King" && derr == nil && deleted && userC != ""
	}); err != nil {
		t.Fatalf("the lost changes were never caught up: %v", err)
	}
	t.Logf("caught up %.1f intervals after the first change", time.Since(start).Seconds()/catchupInterval.Seconds())

	for _, c := range []struct {
		id   string
		want int64
	}{{a.ID, 2}, {b.ID, 2}, {userC, 1}} {
		v, _, err := s.userRow(ctx, c.id)
		if err != nil || v != c.want {
			t.Errorf("user %s: version %d (%v), want %d: one version per change", c.id, v, err, c.want)
		}
	}
	for _, ev := range s.sb.Fake.Events()[events:] {
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM inbound_events WHERE event_id = ? AND outcome IN ('applied', 'created', 'deleted')`, ev.ID).Scan(&n); err != nil || n != 1 {
			t.Errorf("event %s (%s) recorded applied %d times (%v), want once", ev.ID, ev.Type, n, err)
		}
		logs := s.webhook.out.String() + second.out.String()
		if !strings.Contains(logs, ev.ID) || !strings.Contains(logs, "inbound change applied by catch-up before any webhook") {
			t.Errorf("no warning names event %s", ev.ID)
		}
	}
	// Both processes apply through catch-up, one round at a time: the sum
	// of their counters is the number of changes.
	var applied float64
	for _, p := range []*process{s.webhook, second} {
		for _, o := range []string{"applied", "created", "deleted"} {
			v, err := metric(p.addr, "tandem_catchup_events_total", `outcome="`+o+`"`)
			if err != nil {
				t.Fatal(err)
			}
			applied += v
		}
	}
	if applied != 3 {
		t.Errorf("the two webhook processes applied %v changes through catch-up, want 3", applied)
	}
	if got := s.outboxRows(t); got != outbox {
		t.Errorf("outbox rows %d → %d: an inbound change was announced", outbox, got)
	}
	if got := s.stripeWrites(); got != writes {
		t.Errorf("Stripe writes %d → %d: something was pushed back", writes, got)
	}
}

// TestCatchupResumesAfterAFailedRound: while Stripe answers 500, rounds fail
// and the cursor stays (readiness says why); once it answers again the next
// round applies the lost change.
func TestCatchupResumesAfterAFailedRound(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: builds and runs the binaries")
	}
	t.Parallel()
	s := newSystem(t, options{env: []string{"TANDEM_CATCHUP_INTERVAL=" + catchupInterval.String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := s.createUser(t, ctx, "ada@example.com", "Ada")
	s.awaitSynced(t, ctx, a.ID, 1)
	cust := s.customerOf(t, a.ID)
	if err := s.sb.Fake.WaitDelivered(ctx); err != nil {
		t.Fatal(err)
	}
	if status, body, err := s.dashboard(ctx, http.MethodPost, "/_sandbox/delivery", map[string]any{"drop": 1}); err != nil || status != http.StatusOK {
		t.Fatalf("dropping deliveries: %d %s %v", status, body, err)
	}
	if err := s.dashboardOK(ctx, "/_sandbox/faults", map[string]any{"server_error_ratio": 1}); err != nil {
		t.Fatal(err)
	}
	failed := func() float64 {
		v, _ := metric(s.webhook.addr, "tandem_catchup_rounds_total", `result="failed"`)
		return v
	}
	if err := s.dashboardOK(ctx, "/_sandbox/customers/"+cust, map[string]any{"name": "Ada King"}); err != nil {
		t.Fatal(err)
	}
	position := func() string {
		var p string
		_ = s.db.QueryRowContext(ctx, `SELECT position FROM provider_cursors WHERE provider = 'stripe'`).Scan(&p)
		return p
	}
	if err := waitFor(ctx, 50*time.Millisecond, func() bool { return failed() >= 1 }); err != nil {
		t.Fatalf("no failed rounds: %v", err)
	}
	cursor, base := position(), failed()
	if err := waitFor(ctx, 50*time.Millisecond, func() bool { return failed() >= base+2 }); err != nil {
		t.Fatalf("no more failed rounds: %v", err)
	}
	if now := position(); now != cursor || strings.Contains(now, s.sb.Fake.Events()[len(s.sb.Fake.Events())-1].ID) {
		t.Fatalf("the cursor moved from %q to %q while Stripe refused every page", cursor, now)
	}
	if u, _, err := s.client.getUser(ctx, a.ID); err != nil || u.Version != 1 {
		t.Fatalf("user changed while nothing could be read: %+v %v", u, err)
	}
	resp, err := http.Get("http://" + s.webhook.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(ready["catchup"], "stripe: the last round failed") {
		t.Fatalf("/readyz %d %v: want 200 with the catch-up failure as detail", resp.StatusCode, ready)
	}

	if err := s.dashboardOK(ctx, "/_sandbox/faults", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 50*time.Millisecond, func() bool {
		u, _, err := s.client.getUser(ctx, a.ID)
		return err == nil && u.Name == "Ada King"
	}); err != nil {
		t.Fatalf("the change was never caught up after the failures: %v", err)
	}
	if u, _, _ := s.client.getUser(ctx, a.ID); u.Version != 2 {
		t.Errorf("version %d, want 2", u.Version)
	}
	if err := waitFor(ctx, 50*time.Millisecond, func() bool {
		resp, err := http.Get("http://" + s.webhook.addr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var ready map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&ready)
		return ready["catchup"] == "ok"
	}); err != nil {
		t.Errorf("/readyz still reports catch-up failing: %v", err)
	}
}
