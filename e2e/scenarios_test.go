package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// TestLoadBrokerRestartWorkerKill runs scenarios 1 to 4 in one system with
// two workers for stripe: 1,000 mixed writes at concurrency 32 through the
// REST API; a quarter of the way in, every RabbitMQ connection is cut for
// two seconds (the broker "restarted"); two thirds of the way in, one
// worker is SIGKILLed and started again. The API must answer every write as
// usual throughout, and the system must converge and then stay still.
func TestLoadBrokerRestartWorkerKill(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{workers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const ops, cutAt, killAt, outage = 1000, 250, 650, 2 * time.Second
	var mu sync.Mutex
	done := 0
	milestones := map[int]chan struct{}{cutAt: make(chan struct{}), killAt: make(chan struct{})}
	l := load{ops: ops, concurrency: 32, perSecond: 120, seed: s.seed, tag: "chaos", progress: func(n int) {
		mu.Lock()
		done = n
		mu.Unlock()
		if ch, ok := milestones[n]; ok {
			close(ch)
		}
	}}
	opsDone := func() int {
		mu.Lock()
		defer mu.Unlock()
		return done
	}
	results := make(chan loadResult, 1)
	go func() { results <- l.run(ctx, s.client) }()

	// Scenario 2: the broker "restarts" under load.
	select {
	case <-milestones[cutAt]:
	case <-ctx.Done():
		t.Fatal("the load never reached the cut")
	}
	connsBefore := s.proxy.Accepted()
	s.proxy.Cut()
	cutOps := opsDone()
	time.Sleep(outage) // the outage itself: the load keeps running meanwhile
	restoreOps := opsDone()
	s.proxy.Restore()
	t.Logf("RabbitMQ cut for %v between request %d and %d", outage, cutOps, restoreOps)

	// Scenario 3: a worker dies without a chance to clean up.
	select {
	case <-milestones[killAt]:
	case <-ctx.Done():
		t.Fatal("the load never reached the kill")
	}
	w1 := s.workers[0]
	handledBeforeKill, _ := metric(w1.addr, "tandem_worker_messages_total")
	killErr := w1.kill(t)
	killOps := opsDone()
	w1.start(t)
	t.Logf("worker-1 SIGKILLed (%v) after %.0f messages, at request %d; restarted", killErr, handledBeforeKill, killOps)

	res := <-results
	t.Logf("load: %s", res)
	reconnectCtx, cancelReconnect := context.WithTimeout(ctx, 30*time.Second)
	defer cancelReconnect()
	// The api and both workers dial again (worker-1 once more, restarted).
	reconnected := waitFor(reconnectCtx, 50*time.Millisecond, func() bool { return s.proxy.Accepted() >= connsBefore+3 }) == nil

	st := s.settle(t, 90*time.Second)
	converged := st.converged && st.apiOK && st.quiet

	t.Run("1_mixed_1000_writes_at_concurrency_32", func(t *testing.T) {
		if n := res.creates + res.updates + res.deletes; n != ops {
			t.Errorf("%d requests sent, want %d", n, ops)
		}
		if res.creates == 0 || res.updates == 0 || res.deletes == 0 {
			t.Errorf("not a mix: %s", res)
		}
		if len(res.unexpected) > 0 {
			t.Errorf("%d unexpected answers, e.g.:\n%s", len(res.unexpected), strings.Join(first(res.unexpected, 10), "\n"))
		}
		if !converged {
			t.Error("did not converge and stay still (see above)")
		}
	})
	t.Run("2_broker_restarted_mid_load", func(t *testing.T) {
		if restoreOps <= cutOps {
			t.Errorf("no write was made while RabbitMQ was cut (requests %d to %d)", cutOps, restoreOps)
		}
		if restoreOps >= ops {
			t.Errorf("the cut was not in the middle of the load (it ended at request %d of %d)", restoreOps, ops)
		}
		if len(res.unexpected) > 0 {
			t.Error("the API did not answer every write as usual while RabbitMQ was cut (see scenario 1)")
		}
		if !reconnected {
			t.Errorf("the processes did not reconnect to RabbitMQ: %d connections before the cut, %d now", connsBefore, s.proxy.Accepted())
		}
		if !converged {
			t.Error("did not converge and stay still after the broker came back (see above)")
		}
	})
	t.Run("3_worker_sigkilled_and_restarted", func(t *testing.T) {
		if killErr == nil || !strings.Contains(killErr.Error(), "killed") {
			t.Errorf("worker-1 did not die of SIGKILL: %v", killErr)
		}
		if killOps >= ops {
			t.Errorf("the kill was not in the middle of the load (request %d of %d)", killOps, ops)
		}
		if handledBeforeKill == 0 {
			t.Error("worker-1 had handled no message before it was killed")
		}
		if n, err := metric(w1.addr, "tandem_worker_messages_total"); err != nil || n == 0 {
			t.Errorf("the restarted worker-1 handled no message (%v, %v)", n, err)
		}
		if !converged {
			t.Error("did not converge and stay still after the kill (see above)")
		}
	})
	t.Run("4_two_workers_one_provider", func(t *testing.T) {
		w2, err := metric(s.workers[1].addr, "tandem_worker_messages_total")
		if err != nil || w2 == 0 {
			t.Errorf("worker-2 handled no message (%v, %v)", w2, err)
		}
		t.Logf("messages handled: worker-1 %.0f before its kill, worker-2 %.0f", handledBeforeKill, w2)
		if !converged {
			t.Error("two workers did not converge and stay still (see above)")
		}
	})
}

// TestStripeFaultsAndWebhookChaos runs scenarios 5 and 6 in one system:
// Stripe answers 30 % of requests 429 and 10 % 500 throughout, and delivers
// every webhook twice, in shuffled order. First 400 mixed writes through
// the REST API; once they converged, edits in the dashboard (three
// successive edits of 40 customers, some email changes, 5 customers
// created and 5 deleted there), which reach Tandem only through those
// duplicated, shuffled webhooks.
func TestStripeFaultsAndWebhookChaos(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{workers: 1, fake: stripefake.Options{DuplicateDeliveries: 1, DeliveryOrder: stripefake.OrderShuffled}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s.sb.Fake.SetFaults(stripefake.Faults{RateLimitRatio: 0.3, ServerErrorRatio: 0.1})

	res := load{ops: 400, concurrency: 32, seed: s.seed, tag: "faults"}.run(ctx, s.client)
	t.Logf("load: %s", res)
	first1, took := s.awaitConverged(90 * time.Second)
	if !first1.ok() {
		t.Fatalf("the API load did not converge under faults within 90 s:\n%s", first1)
	}
	t.Logf("the API load converged under faults in %v", took.Round(time.Millisecond))

	// Dashboard edits, delivered twice each and shuffled.
	users, err := s.users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var live []*dbUser
	for _, u := range users {
		if !u.Deleted && u.Link != nil && u.Link.RemoteID != "" {
			live = append(live, u)
		}
	}
	if len(live) < 45 {
		t.Fatalf("only %d live users to edit", len(live))
	}
	edited, deleted := live[:40], live[40:45]
	lastName := map[string]string{}  // user id -> the name of its last dashboard edit
	lastEmail := map[string]string{} // user id -> a new email given in the dashboard
	var jobs []func() error
	for i, u := range edited {
		lastName[u.ID] = fmt.Sprintf("Dash %d.3", i)
		if i%5 == 0 {
			lastEmail[u.ID] = fmt.Sprintf("dash%d@e2e.example.com", i)
		}
		jobs = append(jobs, func() error {
			for k := 1; k <= 3; k++ {
				f := map[string]string{"name": fmt.Sprintf("Dash %d.%d", i, k)}
				if k == 3 {
					f["phone"] = fmt.Sprintf("+44 20 7946 %04d", i)
					if e, ok := lastEmail[u.ID]; ok {
						f["email"] = e
					}
				}
				if err := s.dashboardOK(ctx, "/_sandbox/customers/"+u.Link.RemoteID, f); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for _, u := range deleted {
		jobs = append(jobs, func() error { return s.dashboardOK(ctx, "/_sandbox/customers/"+u.Link.RemoteID+"/delete", nil) })
	}
	var createdEmails []string
	for i := range 5 {
		e := fmt.Sprintf("made-in-dashboard-%d@e2e.example.com", i)
		createdEmails = append(createdEmails, e)
		jobs = append(jobs, func() error {
			return s.dashboardOK(ctx, "/_sandbox/customers", map[string]string{"email": e, "name": fmt.Sprintf("Dashboard %d", i)})
		})
	}
	if err := parallel(8, jobs); err != nil {
		t.Fatalf("dashboard: %v", err)
	}

	st := s.settle(t, 90*time.Second)
	converged := st.converged && st.apiOK && st.quiet
	stats := s.sb.Fake.Stats()
	ds := s.sb.Fake.DeliveryStats()
	events := s.sb.Fake.Events()
	after, _ := s.users(ctx)
	byID := map[string]*dbUser{}
	byEmail := map[string]*dbUser{}
	for _, u := range after {
		byID[u.ID] = u
		if !u.Deleted {
			byEmail[u.Email] = u
		}
	}

	t.Run("5_stripe_429_30pct_and_500_10pct", func(t *testing.T) {
		ratio429 := float64(stats.InjectedRateLimits) / float64(stats.Requests)
		ratio500 := float64(stats.InjectedServerErrors) / float64(stats.Requests)
		t.Logf("%d Stripe requests: %d answered 429 (%.0f %%), %d answered 500 (%.0f %%)", stats.Requests,
			stats.InjectedRateLimits, 100*ratio429, stats.InjectedServerErrors, 100*ratio500)
		if ratio429 < 0.2 || ratio429 > 0.4 || ratio500 < 0.05 || ratio500 > 0.15 {
			t.Errorf("the injected faults are off their 30 %% / 10 %% target")
		}
		retries, err := metric(s.workers[0].addr, "tandem_worker_retries_total")
		if err != nil || retries == 0 {
			t.Errorf("the worker retried nothing (%v, %v)", retries, err)
		}
		if len(res.unexpected) > 0 {
			t.Errorf("%d unexpected API answers, e.g.:\n%s", len(res.unexpected), strings.Join(first(res.unexpected, 10), "\n"))
		}
		if !converged {
			t.Error("did not converge and stay still under faults (see above)")
		}
	})
	t.Run("6_webhooks_duplicated_and_shuffled", func(t *testing.T) {
		if ds.Queued != 2*len(events) {
			t.Errorf("%d deliveries queued for %d events, want each twice", ds.Queued, len(events))
		}
		inversions := outOfOrder(events, s.sb.Fake.Deliveries())
		dups, err := metric(s.webhook.addr, "tandem_webhook_events_total", `outcome="duplicate"`)
		t.Logf("%d events, %d deliveries, %d delivered before an older event of the same customer, %.0f recognised as duplicates",
			len(events), ds.Delivered, inversions, dups)
		if inversions == 0 {
			t.Error("no event was delivered out of order")
		}
		if err != nil || dups == 0 {
			t.Errorf("the webhook recognised no duplicate (%v)", err)
		}
		for id, name := range lastName {
			u := byID[id]
			if u == nil {
				t.Errorf("user %s is gone", id)
				continue
			}
			want := u.Name == name && (lastEmail[id] == "" || u.Email == lastEmail[id]) && !u.Deleted
			if !want {
				t.Errorf("user %s: the last dashboard edit (name %q, email %q) did not win: %+v", id, name, lastEmail[id], *u)
			}
		}
		for _, u := range deleted {
			if !byID[u.ID].Deleted {
				t.Errorf("user %s: deleted in the dashboard, still live", u.ID)
			}
		}
		for _, e := range createdEmails {
			if u := byEmail[e]; u == nil || u.Link == nil || u.Link.RemoteID == "" {
				t.Errorf("the customer made in the dashboard with %s has no linked user", e)
			}
		}
		if !converged {
			t.Error("did not converge and stay still (see above)")
		}
	})
}

// TestDashboardEditsRacePatches runs scenario 7: 40 users, each renamed five
// times through PATCH and five times in the dashboard at about the same
// moments. Afterwards the system must reach a fixed point where each user
// holds one of the two last writes (never an older one) and nothing moves.
// Then one more write per user, from alternating sides, must win
// everywhere; and an older dashboard edit whose webhook arrives late must
// lose to a newer PATCH.
func TestDashboardEditsRacePatches(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{workers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const users, rounds = 40, 5
	ids := make([]string, users)
	var jobs []func() error
	for i := range users {
		jobs = append(jobs, func() error {
			status, b, err := s.client.call(ctx, http.MethodPost, "/v1/users",
				map[string]any{"email": fmt.Sprintf("race%d@e2e.example.com", i), "name": fmt.Sprintf("Race %d", i)})
			if err != nil || status != http.StatusCreated {
				return fmt.Errorf("creating user %d: %d %s %v", i, status, b, err)
			}
			var u apiUser
			if err := json.Unmarshal(b, &u); err != nil {
				return err
			}
			ids[i] = u.ID
			return nil
		})
	}
	if err := parallel(16, jobs); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.awaitConverged(60 * time.Second); !r.ok() {
		t.Fatalf("the users did not sync:\n%s", r)
	}
	remote := map[string]string{}
	all, err := s.users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range all {
		remote[u.ID] = u.Link.RemoteID
	}

	// 7a: both sides rename every user, round after round, at about the
	// same moment.
	jobs = nil
	for i, id := range ids {
		jobs = append(jobs, func() error {
			rng := rand.New(rand.NewPCG(s.seed, uint64(i)))
			for k := 1; k <= rounds; k++ {
				// Jitter: either side may go first.
				apiJitter, dashJitter := time.Duration(rng.IntN(30))*time.Millisecond, time.Duration(rng.IntN(30))*time.Millisecond
				var wg sync.WaitGroup
				var apiErr, dashErr error
				wg.Add(2)
				go func() {
					defer wg.Done()
					time.Sleep(apiJitter)
					apiErr = s.patchOK(ctx, id, map[string]any{"name": fmt.Sprintf("api %d.%d", i, k)})
				}()
				go func() {
					defer wg.Done()
					time.Sleep(dashJitter)
					dashErr = s.dashboardOK(ctx, "/_sandbox/customers/"+remote[id], map[string]string{"name": fmt.Sprintf("dash %d.%d", i, k)})
				}()
				wg.Wait()
				if apiErr != nil || dashErr != nil {
					return fmt.Errorf("round %d of user %d: %v %v", k, i, apiErr, dashErr)
				}
				time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond) // let some rounds settle, others pile up
			}
			return nil
		})
	}
	if err := parallel(users, jobs); err != nil {
		t.Fatal(err)
	}
	race := s.settle(t, 90*time.Second)
	final, _ := s.users(ctx)
	t.Run("7a_dashboard_edits_race_local_patches", func(t *testing.T) {
		wins := map[string]int{}
		for _, u := range final {
			i := indexOf(ids, u.ID)
			apiLast, dashLast := fmt.Sprintf("api %d.%d", i, rounds), fmt.Sprintf("dash %d.%d", i, rounds)
			switch u.Name {
			case apiLast:
				wins["api"]++
			case dashLast:
				wins["dashboard"]++
			default:
				t.Errorf("user %d ended on %q, not one of the last writes %q or %q", i, u.Name, apiLast, dashLast)
			}
		}
		t.Logf("last writes kept: %v", wins)
		if !(race.converged && race.apiOK && race.quiet) {
			t.Error("did not reach a fixed point (see above)")
		}
	})

	// 7b: one more write per user, alone: it must win.
	jobs = nil
	want := map[string]string{}
	for i, id := range ids {
		name := fmt.Sprintf("final %d", i)
		want[id] = name
		jobs = append(jobs, func() error {
			if i%2 == 0 {
				return s.dashboardOK(ctx, "/_sandbox/customers/"+remote[id], map[string]string{"name": name})
			}
			return s.patchOK(ctx, id, map[string]any{"name": name})
		})
	}
	if err := parallel(users, jobs); err != nil {
		t.Fatal(err)
	}
	last := s.settle(t, 60*time.Second)
	final, _ = s.users(ctx)
	t.Run("7b_the_last_writer_wins", func(t *testing.T) {
		for _, u := range final {
			if u.Name != want[u.ID] {
				t.Errorf("user %s: ended on %q after its last write %q", u.ID, u.Name, want[u.ID])
			}
		}
		if !(last.converged && last.apiOK && last.quiet) {
			t.Error("did not reach a fixed point (see above)")
		}
	})

	t.Run("7c_a_late_webhook_of_an_older_dashboard_edit_loses_to_a_newer_patch", func(t *testing.T) {
		s.lateOlderDashboardEdit(t, ctx, ids[0], remote[ids[0]])
	})
}

// lateOlderDashboardEdit edits customer in the dashboard, then (3 s
// later) PATCHes the user while Stripe refuses the worker's push with 500s
// and holds the dashboard edit's webhook back. When the webhook arrives, the PATCH is the newer write: the
// user must end on it, in MySQL and in Stripe.
func (s *system) lateOlderDashboardEdit(t *testing.T, ctx context.Context, id, customer string) {
	// Past InboundPushMargin (2 s) after the last sync, so the event is
	// taken at its word rather than re-read.
	u, _, err := s.client.getUser(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	st := u.Sync[provider]
	if st.Status != "synced" || st.SyncedAt == nil {
		t.Fatalf("user %s is not synced: %+v", id, st)
	}
	if err := waitFor(ctx, 50*time.Millisecond, func() bool { return time.Since(*st.SyncedAt) > 3*time.Second }); err != nil {
		t.Fatal(err)
	}

	s.sb.Fake.PauseDelivery()
	if err := s.dashboardOK(ctx, "/_sandbox/customers/"+customer, map[string]string{"name": "older dashboard edit"}); err != nil {
		t.Fatal(err)
	}
	edited := time.Now()
	// Newer by any measure: Stripe dates events to the second, and Tandem
	// allows InboundPushMargin (2 s) of clock difference with the provider.
	if err := waitFor(ctx, 10*time.Millisecond, func() bool { return time.Since(edited) > 3*time.Second }); err != nil {
		t.Fatal(err)
	}
	s.sb.Fake.SetFaults(stripefake.Faults{ServerErrorRatio: 1})
	errorsBefore := s.sb.Fake.Stats().InjectedServerErrors
	if err := s.patchOK(ctx, id, map[string]any{"name": "newer patch"}); err != nil {
		t.Fatal(err)
	}
	// The worker tried to push the PATCH and was refused.
	if err := waitFor(ctx, 10*time.Millisecond, func() bool { return s.sb.Fake.Stats().InjectedServerErrors > errorsBefore }); err != nil {
		t.Fatal(err)
	}
	s.sb.Fake.ResumeDelivery()
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	if err := s.sb.Fake.WaitDelivered(dctx); err != nil {
		t.Fatal(err)
	}
	s.sb.Fake.SetFaults(stripefake.Faults{})
	settled := s.settle(t, 60*time.Second)
	users, err := s.users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.ID != id {
			continue
		}
		c, _ := s.sb.Fake.Customer(customer)
		if u.Name != "newer patch" || c.Name != "newer patch" {
			t.Errorf("the newer PATCH (name %q, made after the dashboard edit) lost to the older dashboard edit whose webhook arrived late: MySQL holds %q at version %d, Stripe %q",
				"newer patch", u.Name, u.Version, c.Name)
		}
	}
	if !(settled.converged && settled.apiOK && settled.quiet) {
		t.Error("did not reach a fixed point (see above)")
	}
}

// patchOK PATCHes a user and wants 200.
func (s *system) patchOK(ctx context.Context, id string, body map[string]any) error {
	status, b, err := s.client.call(ctx, http.MethodPatch, "/v1/users/"+id, body)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("PATCH /v1/users/%s: %d %s", id, status, b)
	}
	return nil
}

// dashboardOK POSTs to the sandbox's dashboard API and wants 200.
func (s *system) dashboardOK(ctx context.Context, path string, fields any) error {
	status, b, err := s.dashboard(ctx, http.MethodPost, path, fields)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("dashboard POST %s: %d %s", path, status, b)
	}
	return nil
}

// parallel runs jobs on n goroutines and returns the first error.
func parallel(n int, jobs []func() error) error {
	ch := make(chan func() error)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if err := j(); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	return first
}

// outOfOrder counts the first successful deliveries that came before the
// first delivery of an older event of the same customer.
func outOfOrder(events []stripefake.Event, deliveries []stripefake.DeliveryAttempt) int {
	order := map[string]int{}
	for i, e := range events {
		order[e.ID] = i
	}
	seen := map[string]bool{}
	newest := map[string]int{} // customer -> the newest event index delivered so far
	n := 0
	for _, d := range deliveries {
		if !d.OK || seen[d.EventID] {
			continue
		}
		seen[d.EventID] = true
		i := order[d.EventID]
		if prev, ok := newest[d.CustomerID]; ok && prev > i {
			n++
		}
		if prev, ok := newest[d.CustomerID]; !ok || i > prev {
			newest[d.CustomerID] = i
		}
	}
	return n
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
