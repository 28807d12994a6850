// Package catchupbench measures catch-up (package catchup) against the
// webhook's own apply rate for the same events in the same run (make bench,
// stage "catchup"): a Stripe fake records a backlog of customer events whose
// webhooks were all lost; the webhook route is sent them (the rate a
// working endpoint would apply them at), then a fresh database catches them
// up from the fake's Events API.
package catchupbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/tandem-sync/tandem/internal/bench/webhookbench"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-sync/tandem/internal/bench"
	"github.com/tandem-sync/tandem/internal/catchup"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

// Options tune Run. Zero fields take the defaults shown.
type Options struct {
	Events    int // events in the backlog (10,000)
	Customers int // customers they concern: one customer.created each, the rest customer.updated round robin (1,000)
	// Concurrency is the webhook's concurrent senders and both stages'
	// database connections (64, as the webhook stage).
	Concurrency int
	// CatchupConcurrency is catchup.Options.Concurrency (its default).
	CatchupConcurrency int
}

func (o *Options) setDefaults() {
	if o.Events <= 0 {
		o.Events = 10_000
	}
	if o.Customers <= 0 || o.Customers > o.Events {
		o.Customers = min(1_000, o.Events)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
}

// Stage is one way of applying the backlog.
type Stage struct {
	Events   int           // events applied (users created or changed)
	Elapsed  time.Duration // from the first event sent or read to the last committed
	Rate     float64       // Events per second
	Requests int           // provider requests (catch-up only)
}

// Result is what Run measured.
type Result struct {
	Webhook Stage // POST /webhook/stripe, each event signed, Concurrency senders
	Catchup Stage // one catch-up round over the Events API
}

// benchSecret signs the webhook stage's events.
const benchSecret = "whsec_bench_catchup"

// Run builds the backlog and measures both stages, each on a scratch
// database of the server mysqlDSN names (dropped afterwards).
//
// Both databases first hold the same linked users: the customers' creation
// events applied by a catch-up round whose store clock is the fake's (so
// the links were synced before the backlog, as in life; an event older
// than its link's last sync would be settled by re-reading the customer).
// The backlog is then o.Events customer.updated events, one second apart
// by Stripe's clock and each changing a name, none delivered: every one is
// applied by either stage.
func Run(ctx context.Context, mysqlDSN string, o Options) (Result, error) {
	o.setDefaults()
	var res Result
	clk := &clock{t: time.Now().Add(-time.Duration(o.Events+o.Customers+60)*time.Second - 10*time.Minute).Truncate(time.Second)}
	fake := stripefake.New(stripefake.Options{Clock: clk.now})
	defer fake.Close()
	base, err := fake.Listen("127.0.0.1:0")
	if err != nil {
		return res, err
	}
	adapter, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: base, RateLimit: 100,
		WebhookSecret: benchSecret}, stripe.Options{})
	if err != nil {
		return res, err
	}
	wdb, err := scratch(ctx, mysqlDSN, "webhook")
	if err != nil {
		return res, err
	}
	defer wdb.Close()
	cdb, err := scratch(ctx, mysqlDSN, "catchup")
	if err != nil {
		return res, err
	}
	defer cdb.Close()

	// The users, linked before the backlog.
	start := clk.now()
	for _, dsn := range []string{wdb.DSN, cdb.DSN} {
		if err := startCursor(ctx, dsn, adapter, start); err != nil {
			return res, err
		}
	}
	ids := make([]string, 0, o.Customers)
	for i := range o.Customers {
		clk.tick()
		c, err := fake.DashboardCreate(stripefake.Customer{Email: fmt.Sprintf("c%d@example.com", i), Name: "Customer " + strconv.Itoa(i)})
		if err != nil {
			return res, err
		}
		ids = append(ids, c.ID)
	}
	for _, dsn := range []string{wdb.DSN, cdb.DSN} {
		if err := seed(ctx, dsn, adapter, clk.now(), o.Customers); err != nil {
			return res, fmt.Errorf("linking the users: %w", err)
		}
	}

	// The backlog.
	clk.advance(time.Minute)
	seeded := len(fake.Events())
	for i := range o.Events {
		clk.tick()
		if _, err := fake.DashboardUpdate(ids[i%o.Customers], func(c *stripefake.Customer) { c.Name = "Name " + strconv.Itoa(i) }); err != nil {
			return res, err
		}
	}
	evs := fake.Events()[seeded:]
	if len(evs) != o.Events {
		return res, fmt.Errorf("the fake recorded %d events, want %d", len(evs), o.Events)
	}

	if res.Webhook, err = webhookStage(ctx, wdb.DSN, adapter, evs, o); err != nil {
		return res, fmt.Errorf("webhook stage: %w", err)
	}
	before := fake.Stats().Requests
	if res.Catchup, err = catchupStage(ctx, cdb.DSN, adapter, o); err != nil {
		return res, fmt.Errorf("catch-up stage: %w", err)
	}
	if got := fake.Stats().Requests - before; got != res.Catchup.Requests {
		return res, fmt.Errorf("catch-up counted %d requests, the fake %d", res.Catchup.Requests, got)
	}
	return res, nil
}

// startCursor starts the catch-up cursor of dsn's database at since.
func startCursor(ctx context.Context, dsn string, adapter *stripe.Adapter, since time.Time) error {
	st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 4})
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = st.SaveCursor(ctx, store.Cursor{Provider: "stripe", Position: strconv.FormatInt(since.Unix(), 10), ReadThrough: since})
	return err
}

// seed applies the customers' creation events with a catch-up round whose
// store clock says at, and checks that n users were made.
func seed(ctx context.Context, dsn string, adapter *stripe.Adapter, at time.Time, n int) error {
	st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 16, Now: func() time.Time { return at }})
	if err != nil {
		return err
	}
	defer st.Close()
	sources, _ := catchup.Sources(map[string]integrations.WebhookReceiver{"stripe": adapter})
	rep, err := catchup.New(st, sources, catchup.Options{}).Round(ctx)
	if err != nil {
		return err
	}
	if rep.Outcomes["created"] != n {
		return fmt.Errorf("%d users made, want %d (%v)", rep.Outcomes["created"], n, rep.Outcomes)
	}
	// As if Tandem had pushed each user then (users made through the API):
	// events are compared with the push on Stripe's clock. (A link that was
	// never pushed is compared with its last sync by Tandem's clock: every
	// event of a backlog older than the first one applied would be settled
	// by re-reading the customer.)
	_, err = st.DB().ExecContext(ctx, `UPDATE provider_links SET pushed_remote_at = ?`, at)
	return err
}

// clock is the fake's clock: it moves only when ticked.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) tick() { c.advance(time.Second) }

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// scratch creates a migrated scratch database for stage.
func scratch(ctx context.Context, mysqlDSN, stage string) (*bench.Database, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return bench.NewDatabase(ctx, mysqlDSN, "tandem_bench_catchup_"+stage+"_"+hex.EncodeToString(b))
}

// applied counts the events recorded as applied (a user changed).
func applied(ctx context.Context, st *store.Store) (int, error) {
	var n int
	err := st.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM inbound_events WHERE outcome = 'applied'`).Scan(&n)
	return n, err
}

func webhookStage(ctx context.Context, dsn string, adapter *stripe.Adapter, evs []stripefake.Event, o Options) (Stage, error) {
	st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: o.Concurrency})
	if err != nil {
		return Stage{}, err
	}
	defer st.Close()
	app := tandemwebhook.New(map[string]integrations.WebhookReceiver{"stripe": adapter}, st,
		slog.New(slog.NewJSONHandler(io.Discard, nil)), ops.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Stage{}, err
	}
	go func() { _ = app.Listener(ln) }()
	defer func() { _ = app.Shutdown() }()
	url := "http://" + ln.Addr().String() + "/webhook/stripe"
	payloads := make([][]byte, len(evs))
	for i, ev := range evs {
		if payloads[i], err = json.Marshal(ev); err != nil {
			return Stage{}, err
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: o.Concurrency, MaxConnsPerHost: o.Concurrency}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.Concurrency)
	began := time.Now()
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(payloads) || ctx.Err() != nil {
					return
				}
				if err := webhookbench.PostSigned(ctx, client, url, benchSecret, payloads[i]); err != nil {
					errs <- fmt.Errorf("event %d of the backlog: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(errs)
	if err := <-errs; err != nil {
		var detail string
		_ = st.DB().QueryRowContext(ctx, `SELECT COALESCE(detail, '') FROM inbound_events WHERE outcome NOT IN ('applied', 'created') LIMIT 1`).Scan(&detail)
		return Stage{}, fmt.Errorf("%w (%s)", err, detail)
	}
	n, err := applied(ctx, st)
	if err != nil {
		return Stage{}, err
	}
	if n != len(evs) {
		return Stage{}, fmt.Errorf("%d of %d events applied", n, len(evs))
	}
	return Stage{Events: n, Elapsed: elapsed, Rate: float64(n) / elapsed.Seconds()}, nil
}

func catchupStage(ctx context.Context, dsn string, adapter *stripe.Adapter, o Options) (Stage, error) {
	st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: o.Concurrency})
	if err != nil {
		return Stage{}, err
	}
	defer st.Close()
	sources, _ := catchup.Sources(map[string]integrations.WebhookReceiver{"stripe": adapter})
	r := catchup.New(st, sources, catchup.Options{Concurrency: o.CatchupConcurrency})
	began := time.Now()
	rep, err := r.Round(ctx)
	elapsed := time.Since(began)
	if err != nil {
		return Stage{}, err
	}
	if n := rep.Outcomes["applied"]; n != o.Events {
		return Stage{}, fmt.Errorf("%d of %d events applied (%v)", n, o.Events, rep.Outcomes)
	}
	return Stage{Events: o.Events, Elapsed: elapsed, Rate: float64(o.Events) / elapsed.Seconds(), Requests: rep.Requests}, nil
}
