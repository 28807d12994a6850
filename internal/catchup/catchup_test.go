package catchup_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/catchup"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	tu "github.com/tandem-sync/tandem/internal/testutil"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

const secret = "whsec_catchup_test"

// env is a webhook on loopback over its own database, fed by a Stripe fake,
// and a catch-up runner over the same fake and database.
type env struct {
	t       *testing.T
	clk     *clock
	st      *store.Store
	dsn     string
	fake    *stripefake.Server
	adapter *stripe.Adapter
	logs    *tu.SyncBuffer
	reg     *prometheus.Registry
	runner  *catchup.Runner
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, dsn := tu.NewStore(t)
	clk := &clock{}
	fake := stripefake.New(stripefake.Options{RetryBackoff: time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond, Clock: clk.now})
	apiURL, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	adapter, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: apiURL, RateLimit: 1000,
		WebhookSecret: secret}, stripe.Options{})
	require.NoError(t, err)
	receivers := map[string]integrations.WebhookReceiver{"stripe": adapter}
	app := tandemwebhook.New(receivers, st, slog.New(slog.NewJSONHandler(io.Discard, nil)), ops.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	t.Cleanup(fake.Close) // runs first: no delivery outlives the app
	fake.SetWebhookEndpoint("http://"+ln.Addr().String()+"/webhook/stripe", secret)
	e := &env{t: t, clk: clk, st: st, dsn: dsn, fake: fake, adapter: adapter, logs: &tu.SyncBuffer{}, reg: prometheus.NewRegistry()}
	e.runner = e.newRunner(st, e.reg)
	return e
}

func (e *env) newRunner(st catchup.Store, reg prometheus.Registerer) *catchup.Runner {
	sources, skipped := catchup.Sources(map[string]integrations.WebhookReceiver{"stripe": e.adapter})
	require.Empty(e.t, skipped)
	return catchup.New(st, sources, catchup.Options{Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Registerer: reg})
}

// round runs one round of the env's runner, which must run.
func (e *env) round() catchup.Report {
	e.t.Helper()
	rep, err := e.runner.Round(context.Background())
	require.NoError(e.t, err)
	require.True(e.t, rep.Ran)
	return rep
}

// delivered waits until the fake has no delivery pending.
func (e *env) delivered() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(e.t, e.fake.WaitDelivered(ctx))
}

func (e *env) count(q string, args ...any) int64 {
	e.t.Helper()
	return tu.QueryInt(e.t, e.dsn, q, args...)
}

// userOf is the user linked to customer id ("" if none).
func (e *env) userOf(remoteID string) (id string, version int64, deleted bool) {
	e.t.Helper()
	var rows []struct {
		ID      string
		Version int64
		Deleted bool
	}
	db := e.st.DB()
	r, err := db.Query(`SELECT u.id, u.version, u.deleted_at IS NOT NULL FROM provider_links l JOIN users u ON u.id = l.user_id
		WHERE l.provider = 'stripe' AND l.remote_id = ?`, remoteID)
	require.NoError(e.t, err)
	defer r.Close()
	for r.Next() {
		var row struct {
			ID      string
			Version int64
			Deleted bool
		}
		require.NoError(e.t, r.Scan(&row.ID, &row.Version, &row.Deleted))
		rows = append(rows, row)
	}
	require.NoError(e.t, r.Err())
	if len(rows) == 0 {
		return "", 0, false
	}
	require.Len(e.t, rows, 1)
	return rows[0].ID, rows[0].Version, rows[0].Deleted
}

// clock is the fake's clock: each change is 3 s after the one before (and
// never before now), so that no two changes of a customer tie, nor fall
// within store.InboundPushMargin of the link's last sync (either is settled
// by re-reading the customer, which folds the changes into one). Tests make
// few enough changes that it stays within store.InboundFutureAllowance.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		return time.Now()
	}
	return c.t
}

func (c *clock) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(3 * time.Second) // more than store.InboundPushMargin
	if now := time.Now(); c.t.Before(now) {
		c.t = now
	}
}

func (e *env) create(email string) string {
	e.t.Helper()
	e.clk.tick()
	c, err := e.fake.DashboardCreate(stripefake.Customer{Email: email, Name: "N " + email})
	require.NoError(e.t, err)
	return c.ID
}

func (e *env) rename(id, name string) {
	e.t.Helper()
	e.clk.tick()
	_, err := e.fake.DashboardUpdate(id, func(c *stripefake.Customer) { c.Name = name })
	require.NoError(e.t, err)
}

// TestLostWebhooksAreCaughtUp: with every webhook delivery lost, dashboard
// updates, a create and a delete reach Tandem through one round; each
// user's version rises by exactly one per change; nothing is pushed back
// (no outbox row); each change is logged at warning level naming its event.
func TestLostWebhooksAreCaughtUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.round() // the cursor starts now
	a, b := e.create("a@example.com"), e.create("b@example.com")
	e.delivered()
	ua, va, _ := e.userOf(a)
	ub, vb, _ := e.userOf(b)
	require.NotEmpty(t, ua)
	require.NotEmpty(t, ub)
	rep := e.round()
	require.Equal(t, 2, rep.Outcomes["known"], "the webhook applied them: catch-up skips them")

	e.fake.SetDropDeliveries(1)
	e.rename(a, "A1")
	e.rename(a, "A2")
	c := e.create("c@example.com")
	e.clk.tick()
	require.NoError(t, e.fake.DashboardDelete(b))
	e.delivered()
	require.Equal(t, 4, e.fake.DeliveryStats().Dropped)
	_, v, _ := e.userOf(a)
	require.Equal(t, va, v, "nothing was delivered")

	rep = e.round()
	require.Equal(t, map[string]int{"applied": 2, "created": 1, "deleted": 1}, rep.Outcomes)
	_, v, _ = e.userOf(a)
	require.Equal(t, va+2, v, "two updates: two versions")
	_, v, deleted := e.userOf(b)
	require.True(t, deleted)
	require.Equal(t, vb+1, v)
	uc, v, _ := e.userOf(c)
	require.NotEmpty(t, uc)
	require.EqualValues(t, 1, v)
	require.Zero(t, e.count("SELECT COUNT(*) FROM outbox"), "inbound changes are pushed nowhere")
	got, err := e.st.GetUser(context.Background(), ua)
	require.NoError(t, err)
	require.Equal(t, "A2", got.Name)
	for _, ev := range e.fake.Events()[2:] {
		require.Contains(t, e.logs.String(), ev.ID, "a change found only by catch-up is logged, naming its event")
	}
	require.Contains(t, e.logs.String(), `"level":"WARN","msg":"inbound change applied by catch-up before any webhook`)
	require.Equal(t, 2.0, counter(t, e.reg, "tandem_catchup_events_total", "applied"))

	// Nothing new: nothing applied, nothing changes.
	rep = e.round()
	require.Empty(t, rep.Outcomes)
	_, v, _ = e.userOf(a)
	require.Equal(t, va+2, v)
}

// counter is the value of metric name{outcome}.
func counter(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDeliveredAndCaughtUpApplyOnce: an event applied by the webhook is
// skipped by catch-up, and one caught up first is a duplicate when its
// webhook arrives: one version per change either way.
func TestDeliveredAndCaughtUpApplyOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.round()
	a := e.create("a@example.com")
	e.delivered()
	_, v0, _ := e.userOf(a)

	// Webhook first, then catch-up.
	e.rename(a, "Webhook first")
	e.delivered()
	rep := e.round()
	require.Equal(t, map[string]int{"known": 2}, rep.Outcomes)
	_, v, _ := e.userOf(a)
	require.Equal(t, v0+1, v)

	// Catch-up first, then the webhook.
	e.fake.PauseDelivery()
	e.rename(a, "Caught up first")
	rep = e.round()
	require.Equal(t, map[string]int{"applied": 1}, rep.Outcomes)
	e.fake.ResumeDelivery()
	e.delivered()
	_, v, _ = e.userOf(a)
	require.Equal(t, v0+2, v)
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM inbound_events WHERE event_id = ?", e.fake.Events()[2].ID))
	require.Zero(t, e.fake.DeliveryStats().FailedAttempts, "the late delivery is answered 200 (a duplicate)")
}

// TestTwoRunnersApplyEachEventOnce: two processes' runners rounding at once
// while changes are made apply each change once, and one round at a time.
func TestTwoRunnersApplyEachEventOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other, err := store.Open(context.Background(), e.dsn, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	second := e.newRunner(other, nil)
	e.round()
	e.fake.SetDropDeliveries(1)
	var ids []string
	for i := range 10 {
		ids = append(ids, e.create(fmt.Sprintf("u%d@example.com", i)))
	}

	var mu sync.Mutex
	applied, ran := 0, 0
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, r := range []*catchup.Runner{e.runner, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				rep, err := r.Round(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for o, n := range rep.Outcomes {
					if o != "known" && o != "duplicate" {
						applied += n
					}
				}
				if rep.Ran {
					ran++
				}
				mu.Unlock()
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	const renames = 4
	for i := range renames {
		for _, id := range ids {
			e.rename(id, fmt.Sprintf("R%d", i))
		}
	}
	close(stop)
	wg.Wait()
	rep := e.round() // whatever the last rounds had not read yet
	applied += rep.Outcomes["applied"] + rep.Outcomes["created"]
	require.Equal(t, len(ids)*(1+renames), applied, "every change applied once, by one runner or the other")
	for _, id := range ids {
		_, v, _ := e.userOf(id)
		require.EqualValues(t, 1+renames, v, "one version per change")
	}
	require.Positive(t, ran)
	total := e.count("SELECT COUNT(*) FROM inbound_events WHERE outcome IN ('applied', 'created')")
	require.EqualValues(t, len(ids)*(1+renames), total)
}

// TestRefusedPageKeepsTheCursor: a round whose page Stripe refuses (500)
// fails and leaves the cursor where it was (readiness says so); the next
// round catches up.
func TestRefusedPageKeepsTheCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.round()
	e.fake.SetDropDeliveries(1)
	a := e.create("a@example.com")
	before, err := e.st.Cursor(context.Background(), "stripe")
	require.NoError(t, err)
	require.NoError(t, e.runner.Check(context.Background()))

	e.fake.SetFaults(stripefake.Faults{ServerErrorRatio: 1})
	rep, err := e.runner.Round(context.Background())
	require.Error(t, err)
	require.True(t, rep.Ran)
	after, err := e.st.Cursor(context.Background(), "stripe")
	require.NoError(t, err)
	require.Equal(t, before.Position, after.Position)
	u, _, _ := e.userOf(a)
	require.Empty(t, u)
	require.ErrorContains(t, e.runner.Check(context.Background()), "stripe: the last round failed")

	e.fake.SetFaults(stripefake.Faults{})
	e.round()
	u, _, _ = e.userOf(a)
	require.NotEmpty(t, u)
	require.NoError(t, e.runner.Check(context.Background()))
}

// TestAgedOutCursorIsReported: a cursor older than Stripe keeps events is
// reported (log, metric, readiness), with the advice to reconcile, and the
// log is read from now on.
func TestAgedOutCursorIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	old := time.Now().Add(-40 * 24 * time.Hour).Truncate(time.Second)
	_, err := e.st.SaveCursor(context.Background(), store.Cursor{Provider: "stripe", Position: fmt.Sprintf("%d/evt_old", old.Unix()), ReadThrough: old})
	require.NoError(t, err)
	e.round()
	c, err := e.st.Cursor(context.Background(), "stripe")
	require.NoError(t, err)
	require.Equal(t, old.UTC(), c.GapFrom)
	require.WithinDuration(t, time.Now(), c.GapTo, time.Minute)
	require.Contains(t, e.logs.String(), "tandemctl reconcile -provider stripe")
	require.ErrorContains(t, e.runner.Check(context.Background()), "run tandemctl reconcile -provider stripe")
	require.Equal(t, 1.0, gauge(t, e.reg, "tandem_catchup_gap"))

	// From now on it reads again.
	e.fake.SetDropDeliveries(1)
	a := e.create("a@example.com")
	e.round()
	u, _, _ := e.userOf(a)
	require.NotEmpty(t, u)

	require.NoError(t, e.st.ClearCursorGap(context.Background(), "stripe"))
	e.round()
	require.NoError(t, e.runner.Check(context.Background()))
	require.Equal(t, 0.0, gauge(t, e.reg, "tandem_catchup_gap"))
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// stubLog is a ChangeLog that returns pages from a func.
type stubLog struct {
	integrations.WebhookReceiver
	ReadFunc func(cursor string) (integrations.ChangePage, error)
}

func (s stubLog) ReadChanges(_ context.Context, cursor string) (integrations.ChangePage, error) {
	return s.ReadFunc(cursor)
}

// TestMalformedChangesAreSkippedAndCounted: entries the adapter cannot read
// and events whose ids cannot be keys are counted, logged and skipped; the
// rest of the page applies and the cursor moves on.
func TestMalformedChangesAreSkippedAndCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Now().UTC().Truncate(time.Second)
	good := integrations.InboundEvent{ID: "evt_good", Kind: integrations.InboundCreated, RawType: "customer.created", RemoteID: "cus_good",
		OccurredAt: now, Customer: integrations.Customer{Email: "good@example.com", Name: "Good"}}
	bad := good
	bad.ID, bad.RemoteID = "evt_bad", "cus bad"
	log := stubLog{WebhookReceiver: e.adapter, ReadFunc: func(cursor string) (integrations.ChangePage, error) {
		if cursor == "" {
			return integrations.ChangePage{Next: "start", ReadThrough: now}, nil
		}
		if cursor != "start" {
			return integrations.ChangePage{Next: cursor, ReadThrough: now}, nil
		}
		return integrations.ChangePage{Events: []integrations.InboundEvent{bad, good}, Next: "after", ReadThrough: now.Add(time.Second),
			Skipped: []integrations.SkippedChange{{ID: "evt_unreadable", Reason: "no customer"}}}, nil
	}}
	reg := prometheus.NewRegistry()
	r := catchup.New(e.st, []catchup.Source{{Name: "stripe", Log: log, Recv: e.adapter}},
		catchup.Options{Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Registerer: reg})
	rep, err := r.Round(context.Background())
	require.NoError(t, err)
	require.Equal(t, map[string]int{"malformed": 2, "created": 1}, rep.Outcomes)
	c, err := e.st.Cursor(context.Background(), "stripe")
	require.NoError(t, err)
	require.Equal(t, "after", c.Position)
	require.Contains(t, e.logs.String(), "evt_unreadable")
	require.Contains(t, e.logs.String(), "evt_bad")
	require.Zero(t, e.count("SELECT COUNT(*) FROM inbound_events WHERE event_id = 'evt_bad'"))
}
