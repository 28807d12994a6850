package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/worker"
)

// WorkerOptions configure the worker benchmark.
type WorkerOptions struct {
	MySQLDSN  string // server; the database name is replaced
	AMQPURL   string // a scratch vhost
	Messages  int    // messages in the raw and throughput phases (default 3000)
	E2ERate   int    // API writes per second in the latency phase (default 200)
	E2ETime   time.Duration
	LimitTime time.Duration // length of the rate-limited phase (default 10s)
	Log       io.Writer
}

var discard = slog.New(slog.NewJSONHandler(io.Discard, nil))

// Worker measures, in one run: the raw consume-and-ack rate of amqp091-go
// (the ceiling), the worker's syncs per second against the Stripe fake with
// no latency and no rate limit, end-to-end latency from the API's 201 to the
// fake's receipt of the create at E2ERate writes/s, and the sustained
// request rate with STRIPE_RATE_LIMIT=25 against a fake that refuses more.
func Worker(ctx context.Context, o WorkerOptions) ([]Row, error) {
	if o.Messages <= 0 {
		o.Messages = 3000
	}
	if o.E2ERate <= 0 {
		o.E2ERate = 200
	}
	if o.E2ETime <= 0 {
		o.E2ETime = 10 * time.Second
	}
	if o.LimitTime <= 0 {
		o.LimitTime = 10 * time.Second
	}
	progress := func(f string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, f+"\n", a...)
		}
	}
	conn, err := broker.Dial(ctx, o.AMQPURL, discard, broker.Options{Name: "bench",
		Setup: func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{"stripe"}) }})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.WaitReady(ctx); err != nil {
		return nil, err
	}
	pub := broker.NewPublisher(conn, broker.PublisherOptions{})
	defer pub.Close()
	const prefetch, concurrency = 64, 32

	progress("worker: raw consume+ack of %d messages", o.Messages)
	raw, err := rawConsume(ctx, conn, pub, o.Messages, prefetch)
	if err != nil {
		return nil, fmt.Errorf("raw consume: %w", err)
	}

	progress("worker: %d syncs against the fake", o.Messages)
	db, err := NewDatabase(ctx, o.MySQLDSN, "tandem_bench_worker")
	if err != nil {
		return nil, err
	}
	syncs, err := workerThroughput(ctx, db.DSN, conn, pub, o.Messages, prefetch, concurrency)
	db.Close()
	if err != nil {
		return nil, fmt.Errorf("worker throughput: %w", err)
	}
	for i := range syncs {
		syncs[i].Ratios = map[string]float64{"raw consume": syncs[i].Rate / raw.Rate}
	}

	progress("worker: end-to-end latency at %d writes/s", o.E2ERate)
	e2e, err := withDB(ctx, o.MySQLDSN, "e2e", func(dsn string) (Row, error) {
		return endToEnd(ctx, dsn, conn, pub, o.E2ERate, o.E2ETime)
	})
	if err != nil {
		return nil, fmt.Errorf("end to end: %w", err)
	}

	progress("worker: sustained rate with STRIPE_RATE_LIMIT=25")
	limited, err := withDB(ctx, o.MySQLDSN, "limited", func(dsn string) (Row, error) {
		return rateLimited(ctx, dsn, conn, pub, o.LimitTime)
	})
	if err != nil {
		return nil, fmt.Errorf("rate limited: %w", err)
	}
	return append(append([]Row{raw}, syncs...), e2e, limited), nil
}

// rawConsume publishes n messages to a scratch queue and times consuming
// and acking them all at the worker's prefetch.
func rawConsume(ctx context.Context, conn *broker.Conn, pub *broker.Publisher, n, prefetch int) (Row, error) {
	ch, err := conn.Channel()
	if err != nil {
		return Row{}, err
	}
	defer ch.Close()
	q := "tandem.bench.raw"
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return Row{}, err
	}
	defer ch.QueueDelete(q, false, false, false)
	body, _ := json.Marshal(broker.Message{EventID: uuid.NewString(), Type: store.EventUserCreated, UserID: uuid.NewString(), Version: 1, OccurredAt: time.Now(), Origin: "api"})
	pubs := make([]amqp.Publishing, n)
	for i := range pubs {
		pubs[i] = amqp.Publishing{ContentType: broker.ContentType, DeliveryMode: amqp.Persistent, Body: body}
	}
	if _, err := pub.PublishTo(ctx, "", q, pubs); err != nil {
		return Row{}, err
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return Row{}, err
	}
	start := time.Now()
	ds, err := ch.Consume(q, "bench", false, false, false, false, nil)
	if err != nil {
		return Row{}, err
	}
	for i := 0; i < n; i++ {
		d := <-ds
		if err := d.Ack(false); err != nil {
			return Row{}, err
		}
	}
	el := time.Since(start)
	return Row{Stage: "RabbitMQ: raw consume + ack (amqp091-go)", Conc: prefetch, Ops: n, Rate: float64(n) / el.Seconds()}, nil
}

// startFake starts a Stripe fake on loopback.
func startFake() (*stripefake.Server, error) {
	fake := stripefake.New(stripefake.Options{Logger: discard})
	if _, err := fake.Listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return fake, nil
}

// startWorker runs a worker on conn against fake until the returned stop.
func startWorker(ctx context.Context, st *store.Store, conn *broker.Conn, pub *broker.Publisher, fake *stripefake.Server, rateLimit float64, prefetch, concurrency int) (func(), error) {
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: fake.URL(), RateLimit: rateLimit}, stripe.Options{Logger: discard})
	if err != nil {
		return nil, err
	}
	w, err := worker.New(a, st, conn, pub, worker.Config{Prefetch: prefetch, Concurrency: concurrency}, discard, prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	return func() { cancel(); <-done }, nil
}

// seedUsers inserts n users directly and returns their ids.
func seedUsers(ctx context.Context, db *sql.DB, n int) ([]string, error) {
	ids := make([]string, 0, n)
	now := time.Now().UTC()
	for start := 0; start < n; start += 500 {
		var sb strings.Builder
		var args []any
		sb.WriteString("INSERT INTO users (id, email, name, phone, metadata, version, created_at, updated_at) VALUES ")
		for i := start; i < min(n, start+500); i++ {
			if i > start {
				sb.WriteString(",")
			}
			sb.WriteString("(?, ?, 'Bench User', '', '{}', 1, ?, ?)")
			id := uuid.Must(uuid.NewV7()).String()
			ids = append(ids, id)
			args = append(args, id, fmt.Sprintf("seed-%d-%s@example.com", i, id[len(id)-8:]), now, now)
		}
		if _, err := db.ExecContext(ctx, sb.String(), args...); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

func publishCreated(ctx context.Context, pub *broker.Publisher, ids []string) error {
	msgs := make([]broker.Message, len(ids))
	for i, id := range ids {
		msgs[i] = broker.Message{EventID: uuid.NewString(), Type: store.EventUserCreated, UserID: id, Version: 1, OccurredAt: time.Now(), Origin: "api"}
	}
	_, err := pub.Publish(ctx, msgs)
	return err
}

func countSynced(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM provider_links WHERE status = 'synced'").Scan(&n)
	return n, err
}

func workerThroughput(ctx context.Context, dsn string, conn *broker.Conn, pub *broker.Publisher, n, prefetch, concurrency int) ([]Row, error) {
	return workerThroughputWith(ctx, dsn, conn, pub, n, prefetch, concurrency, store.HistoryOptions{})
}

// workerThroughputWith is workerThroughput with the store recording history
// as hist says.
func workerThroughputWith(ctx context.Context, dsn string, conn *broker.Conn, pub *broker.Publisher, n, prefetch, concurrency int, hist store.HistoryOptions) ([]Row, error) {
	st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: concurrency + 8, History: hist})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	fake, err := startFake()
	if err != nil {
		return nil, err
	}
	defer fake.Close()
	ids, err := seedUsers(ctx, st.DB(), n)
	if err != nil {
		return nil, err
	}
	if err := publishCreated(ctx, pub, ids); err != nil {
		return nil, err
	}
	start := time.Now()
	stop, err := startWorker(ctx, st, conn, pub, fake, 1e6, prefetch, concurrency)
	if err != nil {
		return nil, err
	}
	defer stop()
	for {
		done, err := countSynced(ctx, st.DB())
		if err != nil {
			return nil, err
		}
		if done >= n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return nil, fmt.Errorf("only %d of %d synced after 5 min", done, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(start)
	calls := len(fake.Requests())
	creates := Row{Stage: "Worker: creates synced/s (fake, no latency, no limit)", Conc: concurrency, Ops: n, Rate: float64(n) / el.Seconds(),
		Note: fmt.Sprintf("%d Stripe calls (a create is 1)", calls)}

	// Then every user changes once: one update call per sync.
	if _, err := st.DB().ExecContext(ctx, "UPDATE users SET name = 'Bench User 2', version = 2"); err != nil {
		return nil, err
	}
	msgs := make([]broker.Message, len(ids))
	for i, id := range ids {
		msgs[i] = broker.Message{EventID: uuid.NewString(), Type: store.EventUserUpdated, UserID: id, Version: 2, OccurredAt: time.Now(), Origin: "api"}
	}
	start = time.Now()
	if _, err := pub.Publish(ctx, msgs); err != nil {
		return nil, err
	}
	for {
		var done int
		if err := st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM provider_links WHERE synced_version = 2").Scan(&done); err != nil {
			return nil, err
		}
		if done >= n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return nil, fmt.Errorf("only %d of %d updates synced after 5 min", done, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	el = time.Since(start)
	updates := Row{Stage: "Worker: updates synced/s (fake, no latency, no limit)", Conc: concurrency, Ops: n, Rate: float64(n) / el.Seconds(),
		Note: fmt.Sprintf("%d Stripe calls; target ≥ 1,500 syncs/s", len(fake.Requests())-calls)}
	return []Row{creates, updates}, nil
}

// endToEnd runs the API (with its relay) and a worker, sends POST /v1/users
// at rate per second, and measures from each 201 to the fake's receipt of
// that user's create call.
func endToEnd(ctx context.Context, dsn string, conn *broker.Conn, pub *broker.Publisher, rate int, dur time.Duration) (Row, error) {
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		return Row{}, err
	}
	defer st.Close()
	fake, err := startFake()
	if err != nil {
		return Row{}, err
	}
	defer fake.Close()
	rctx, stopRelay := context.WithCancel(ctx)
	r, err := relay.New(st, pub, relay.Config{}, discard, prometheus.NewRegistry())
	if err != nil {
		stopRelay()
		return Row{}, err
	}
	st.OnCommit(r.Notify)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = r.Run(rctx) }()
	defer func() { stopRelay(); <-relayDone }()
	stop, err := startWorker(ctx, st, conn, pub, fake, 1e6, 64, 32)
	if err != nil {
		return Row{}, err
	}
	defer stop()

	app := api.New(st, st, api.Config{Tokens: []string{"bench-token"}, Providers: []string{"stripe"}}, discard, ops.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Row{}, err
	}
	go func() { _ = app.Listener(ln) }()
	defer app.Shutdown()
	created, err := offerCreates(ctx, "http://"+ln.Addr().String(), "bench-token", rate, dur)
	if err != nil {
		return Row{}, err
	}
	// Wait for the tail to reach the fake.
	lat, _ := awaitCreates(ctx, fake, created, 60*time.Second)
	row := Row{Stage: "End to end: API 201 → fake receives the create", Conc: rate, Ops: len(lat),
		Rate: float64(len(created)) / dur.Seconds(), Note: "target p50 ≤ 20 ms, p99 ≤ 100 ms; concurrency column = offered writes/s"}
	row.P50, row.P99 = percentiles(lat)
	if len(lat) < len(created) {
		row.Note += fmt.Sprintf("; %d of %d never arrived", len(created)-len(lat), len(created))
	}
	return row, nil
}

// rateLimited runs the worker with STRIPE_RATE_LIMIT=25 against a fake that
// answers 429 above 25 requests/s, over a backlog larger than it can clear.
func rateLimited(ctx context.Context, dsn string, conn *broker.Conn, pub *broker.Publisher, dur time.Duration) (Row, error) {
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		return Row{}, err
	}
	defer st.Close()
	fake, err := startFake()
	if err != nil {
		return Row{}, err
	}
	defer fake.Close()
	fake.SetRateLimit(25)
	ids, err := seedUsers(ctx, st.DB(), int(dur.Seconds()*25)+100)
	if err != nil {
		return Row{}, err
	}
	if err := publishCreated(ctx, pub, ids); err != nil {
		return Row{}, err
	}
	stop, err := startWorker(ctx, st, conn, pub, fake, 25, 64, 32)
	if err != nil {
		return Row{}, err
	}
	// Skip the first second (the bucket starts full), then count requests
	// the fake accepted over dur.
	time.Sleep(time.Second)
	before := accepted(fake)
	syncedBefore, _ := countSynced(ctx, st.DB())
	time.Sleep(dur)
	after := accepted(fake)
	syncedAfter, _ := countSynced(ctx, st.DB())
	stop()
	rejected := fake.RateLimitRejections()
	return Row{Stage: "Worker with STRIPE_RATE_LIMIT=25: Stripe requests/s", Conc: 32, Ops: after - before,
		Rate:   float64(after-before) / dur.Seconds(),
		Ratios: map[string]float64{"limit": float64(after-before) / dur.Seconds() / 25},
		Note: fmt.Sprintf("target ≥ 24/s with 0 429s: %d 429s; %.1f syncs/s (a create is 1 call)",
			rejected, float64(syncedAfter-syncedBefore)/dur.Seconds())}, nil
}

// accepted counts the requests the fake served (not refused with a 429).
func accepted(fake *stripefake.Server) int {
	n := 0
	for _, r := range fake.Requests() {
		if r.Status != http.StatusTooManyRequests {
			n++
		}
	}
	return n
}
