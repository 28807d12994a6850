// Package relaybench measures the outbox relay against the broker it feeds:
//
//  1. the outbox lag, commit (store.CreateUser returned) to broker confirm,
//     while users are written at a steady rate through store.CreateUser;
//  2. the raw confirmed-publish rate of amqp091-go to Tandem's topology
//     (batches of BatchSize persistent, mandatory messages of the relay's
//     size, each batch confirmed before the next, as the relay does), on one
//     channel and on as many channels as the relay has workers;
//  3. the relay's rate draining a pre-filled outbox of the same number of
//     rows (claim FOR UPDATE SKIP LOCKED, publish, confirm, mark, commit).
//
// Run it from a command (cmd/bench) or through BenchmarkRelay. It works in a
// scratch database it creates next to the one mysqlDSN names and drops
// afterwards, and in the vhost amqpURL names, which must not hold Tandem's
// exchange yet (it refuses a vhost in use: the relay's messages would fan out
// to real workers); it deletes the exchange and queues it declared when done.
package relaybench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
)

// Options tune Run. Zero fields take the defaults shown.
type Options struct {
	Messages    int           // messages in the raw and drain phases (50,000)
	BatchSize   int           // messages per confirmed batch, raw and relay (200)
	Workers     int           // relay workers, and channels of the second raw run (2)
	Providers   []string      // providers whose queues the exchange fans out to ([bench])
	LagRate     int           // users written per second in the lag phase (1,000)
	LagDuration time.Duration // length of the lag phase (10s)
	Writers     int           // concurrent CreateUser callers in the lag phase (64)
	Logger      *slog.Logger  // relay and connection logs (discarded)
}

func (o *Options) setDefaults() {
	if o.Messages <= 0 {
		o.Messages = 50_000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 200
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if len(o.Providers) == 0 {
		o.Providers = []string{"bench"}
	}
	if o.LagRate <= 0 {
		o.LagRate = 1000
	}
	if o.LagDuration <= 0 {
		o.LagDuration = 10 * time.Second
	}
	if o.Writers <= 0 {
		o.Writers = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Result holds the measurements of one Run.
type Result struct {
	Messages      int
	Workers       int           // relay workers = raw channels in the second raw run
	RawDuration   time.Duration // phase 1, one channel
	RawRate       float64       // confirmed messages per second, one channel
	RawNDuration  time.Duration // phase 1, Workers channels at once
	RawNRate      float64       // confirmed messages per second, Workers channels
	RelayDuration time.Duration // phase 2
	RelayRate     float64       // outbox rows published and marked per second
	Ratio         float64       // RelayRate / max(RawRate, RawNRate)

	LagUsers     int           // users written in phase 3
	LagWriteRate float64       // users committed per second
	LagP50       time.Duration // commit → confirm
	LagP99       time.Duration
	LagMax       time.Duration
	WriteP50     time.Duration // store.CreateUser latency in phase 1
	WriteP99     time.Duration

	// CPU time used per phase by this process, MySQL and RabbitMQ (the
	// last two when they run on this machine; zero otherwise).
	RawCPU, RelayCPU CPU
}

// Run runs the three phases, prints a table to w and returns the numbers.
// Errors name the phase that failed.
func Run(ctx context.Context, w io.Writer, mysqlDSN, amqpURL string, opts Options) (Result, error) {
	opts.setDefaults()
	res := Result{Messages: opts.Messages}

	dsn, drop, err := scratchDatabase(ctx, mysqlDSN)
	if err != nil {
		return res, err
	}
	defer drop()
	if err := store.Migrate(ctx, dsn); err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: opts.Writers + 8})
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer st.Close()

	cleanup, err := claimVhost(amqpURL, opts.Providers)
	if err != nil {
		return res, err
	}
	defer cleanup()

	// The lag phase first, on a quiet system: it is the steady state that
	// matters, and the throughput phases leave RabbitMQ and InnoDB work
	// (segment compaction, purge) behind that would distort it.
	if err := lag(ctx, st, amqpURL, opts, &res); err != nil {
		return res, err
	}
	if err := purge(amqpURL, opts.Providers); err != nil {
		return res, err
	}
	settle(ctx, st.DB())

	// Warm the queues up, then the raw runs: one channel, and as many
	// channels as the relay has workers (it publishes that many batches at
	// once).
	if _, err = rawPublish(ctx, amqpURL, Options{Messages: 2000, BatchSize: opts.BatchSize}, 1); err != nil {
		return res, err
	}
	if err := purge(amqpURL, opts.Providers); err != nil {
		return res, err
	}
	before := cpuNow()
	if res.RawDuration, err = rawPublish(ctx, amqpURL, opts, 1); err != nil {
		return res, err
	}
	res.RawCPU = cpuNow().sub(before)
	res.RawRate = float64(opts.Messages) / res.RawDuration.Seconds()
	if err := purge(amqpURL, opts.Providers); err != nil {
		return res, err
	}
	res.Workers = opts.Workers
	if res.RawNDuration, err = rawPublish(ctx, amqpURL, opts, opts.Workers); err != nil {
		return res, err
	}
	res.RawNRate = float64(opts.Messages) / res.RawNDuration.Seconds()
	if err := purge(amqpURL, opts.Providers); err != nil {
		return res, err
	}

	if res.RelayDuration, err = relayDrain(ctx, st, amqpURL, opts, &res.RelayCPU); err != nil {
		return res, err
	}
	res.RelayRate = float64(opts.Messages) / res.RelayDuration.Seconds()
	res.Ratio = res.RelayRate / max(res.RawRate, res.RawNRate)

	report(w, opts, res)
	return res, nil
}

func report(w io.Writer, opts Options, r Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "phase\tmessages\tseconds\tmsg/s\t\n")
	fmt.Fprintf(tw, "raw amqp091-go confirmed publish, batch %d, 1 channel\t%d\t%.2f\t%.0f\t\n", opts.BatchSize, r.Messages, r.RawDuration.Seconds(), r.RawRate)
	fmt.Fprintf(tw, "raw amqp091-go confirmed publish, batch %d, %d channels\t%d\t%.2f\t%.0f\t\n", opts.BatchSize, r.Workers, r.Messages, r.RawNDuration.Seconds(), r.RawNRate)
	fmt.Fprintf(tw, "relay drain of a full outbox, batch %d, %d workers\t%d\t%.2f\t%.0f\t\n", opts.BatchSize, r.Workers, r.Messages, r.RelayDuration.Seconds(), r.RelayRate)
	fmt.Fprintf(tw, "relay / best raw\t\t\t%.0f%%\t\n", r.Ratio*100)
	tw.Flush()
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.0fµs", float64(d.Microseconds())/float64(r.Messages))
	}
	fmt.Fprintf(w, "\nCPU per message (this machine: %d CPUs): raw 1 channel: bench %s, RabbitMQ %s, MySQL %s;"+
		" relay: bench %s, RabbitMQ %s, MySQL %s\n", runtime.NumCPU(),
		per(r.RawCPU.Bench), per(r.RawCPU.RabbitMQ), per(r.RawCPU.MySQL),
		per(r.RelayCPU.Bench), per(r.RelayCPU.RabbitMQ), per(r.RelayCPU.MySQL))
	fmt.Fprintf(w, "\noutbox lag, commit → broker confirm, %d users via store.CreateUser at %d/s target (%.0f/s achieved):\n",
		r.LagUsers, opts.LagRate, r.LagWriteRate)
	fmt.Fprintf(w, "  p50 %s   p99 %s   max %s   (CreateUser itself: p50 %s, p99 %s)\n",
		ms(r.LagP50), ms(r.LagP99), ms(r.LagMax), ms(r.WriteP50), ms(r.WriteP99))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// settle waits (at most 60s) until InnoDB's purge backlog is small.
func settle(ctx context.Context, db *sql.DB) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var name string
		var n int64
		if err := db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'").Scan(&name, &n); err != nil || n < 2000 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scratchDatabase creates a fresh database on the server mysqlDSN names and
// returns its DSN and a func dropping it.
func scratchDatabase(ctx context.Context, mysqlDSN string) (string, func(), error) {
	cfg, err := mysql.ParseDSN(mysqlDSN)
	if err != nil {
		return "", nil, fmt.Errorf("bench: MySQL DSN: %w", err)
	}
	base := cfg.DBName
	if base == "" {
		base = "tandem"
	}
	name := fmt.Sprintf("%.40s_bench_%s", base, uuid.NewString()[:8])
	server := cfg.Clone()
	server.DBName = ""
	admin, err := sql.Open("mysql", server.FormatDSN())
	if err != nil {
		return "", nil, fmt.Errorf("bench: %w", err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("bench: creating scratch database %s: %w", name, err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`")
		admin.Close()
	}
	cfg.DBName = name
	return cfg.FormatDSN(), drop, nil
}

// claimVhost checks that the vhost has no Tandem exchange, declares the
// topology, and returns a func deleting it again.
func claimVhost(amqpURL string, providers []string) (func(), error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return nil, fmt.Errorf("bench: connecting to RabbitMQ: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := ch.ExchangeDeclarePassive(broker.Exchange, amqp.ExchangeFanout, true, false, false, false, nil); err == nil {
		return nil, fmt.Errorf("bench: exchange %s exists in this vhost: point the bench at an unused vhost (its messages would reach real workers)", broker.Exchange)
	}
	// The failed passive declare closed the channel.
	if ch, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := broker.DeclareTopology(ch, providers); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return func() {
		conn, err := amqp.Dial(amqpURL)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, p := range providers {
			queues := []string{broker.WorkQueue(p), broker.DeadQueue(p)}
			for _, tier := range broker.RetryTiers {
				queues = append(queues, broker.RetryQueue(p, tier))
			}
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
		}
		_ = ch.ExchangeDelete(broker.Exchange, false, false)
	}, nil
}

func purge(amqpURL string, providers []string) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return fmt.Errorf("bench: purging: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("bench: purging: %w", err)
	}
	for _, p := range providers {
		if _, err := ch.QueuePurge(broker.WorkQueue(p), false); err != nil {
			return fmt.Errorf("bench: purging %s: %w", broker.WorkQueue(p), err)
		}
	}
	return nil
}

// sample is a message of the size the relay sends.
func sample() broker.Message {
	return broker.Message{EventID: uuid.Must(uuid.NewV7()).String(), Type: store.EventUserCreated,
		UserID: uuid.Must(uuid.NewV7()).String(), Version: 1, OccurredAt: time.Now().UTC(), Origin: store.OriginAPI}
}

// rawPublish publishes opts.Messages messages with plain amqp091-go on
// channels channels at once (one connection), each sending its share in
// batches of BatchSize, mandatory and persistent, every batch confirmed
// before that channel's next.
func rawPublish(ctx context.Context, amqpURL string, opts Options, channels int) (time.Duration, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return 0, fmt.Errorf("bench: raw publish: %w", err)
	}
	defer conn.Close()
	shares := make([][]amqp.Publishing, channels)
	chans := make([]*amqp.Channel, channels)
	returns := make([]chan amqp.Return, channels)
	for c := range channels {
		if chans[c], err = conn.Channel(); err != nil {
			return 0, fmt.Errorf("bench: raw publish: %w", err)
		}
		if err := chans[c].Confirm(false); err != nil {
			return 0, fmt.Errorf("bench: raw publish: %w", err)
		}
		returns[c] = chans[c].NotifyReturn(make(chan amqp.Return, opts.BatchSize))
	}
	for i := range opts.Messages {
		p, err := sample().Publishing()
		if err != nil {
			return 0, err
		}
		shares[i%channels] = append(shares[i%channels], p)
	}
	began := time.Now()
	errs := make(chan error, channels)
	var wg sync.WaitGroup
	for c := range channels {
		wg.Go(func() { errs <- rawBatches(ctx, chans[c], returns[c], shares[c], opts.BatchSize) })
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return elapsed, nil
}

func rawBatches(ctx context.Context, ch *amqp.Channel, returns chan amqp.Return, pubs []amqp.Publishing, size int) error {
	dcs := make([]*amqp.DeferredConfirmation, 0, size)
	for start := 0; start < len(pubs); start += size {
		dcs = dcs[:0]
		for _, p := range pubs[start:min(start+size, len(pubs))] {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, broker.Exchange, "", true, false, p)
			if err != nil {
				return fmt.Errorf("bench: raw publish: %w", err)
			}
			dcs = append(dcs, dc)
		}
		for _, dc := range dcs {
			ok, err := dc.WaitContext(ctx)
			if err != nil {
				return fmt.Errorf("bench: raw publish: %w", err)
			}
			if !ok {
				return errors.New("bench: raw publish: nacked")
			}
		}
		select {
		case r := <-returns:
			return fmt.Errorf("bench: raw publish: returned: %s", r.ReplyText)
		default:
		}
	}
	return nil
}

// countingStore counts the rows the relay marks and closes done at target.
type countingStore struct {
	relay.Store
	marked atomic.Int64
	target int64
	done   chan struct{}
	once   sync.Once
}

func (c *countingStore) RelayBatch(ctx context.Context, limit int, publish store.PublishFunc) (int, int, error) {
	claimed, published, err := c.Store.RelayBatch(ctx, limit, publish)
	if c.marked.Add(int64(published)) >= c.target {
		c.once.Do(func() { close(c.done) })
	}
	return claimed, published, err
}

// recordingPublisher notes when each user's first message was confirmed.
type recordingPublisher struct {
	*broker.Publisher
	mu        sync.Mutex
	confirmed map[string]time.Time // user id → confirm time
}

func (p *recordingPublisher) Publish(ctx context.Context, msgs []broker.Message) ([]error, error) {
	failed, err := p.Publisher.Publish(ctx, msgs)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range msgs {
		if failed[i] == nil {
			if _, dup := p.confirmed[m.UserID]; !dup {
				p.confirmed[m.UserID] = now
			}
		}
	}
	return failed, err
}

func (p *recordingPublisher) confirmedAt(userID string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.confirmed[userID]
	return t, ok
}

// startRelay runs a relay over st until the returned stop is called.
func startRelay(ctx context.Context, st relay.Store, amqpURL string, opts Options) (r *relay.Relay, pub *recordingPublisher, stop func(), err error) {
	conn, err := broker.Dial(ctx, amqpURL, opts.Logger, broker.Options{Name: "tandem-bench"})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bench: %w", err)
	}
	if err := conn.WaitReady(ctx); err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("bench: %w", err)
	}
	bp := broker.NewPublisher(conn, broker.PublisherOptions{})
	pub = &recordingPublisher{Publisher: bp, confirmed: map[string]time.Time{}}
	r, err = relay.New(st, pub, relay.Config{BatchSize: opts.BatchSize, Workers: opts.Workers}, opts.Logger, nil)
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("bench: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(rctx)
	}()
	return r, pub, func() {
		cancel()
		<-done
		bp.Close()
		conn.Close()
	}, nil
}

// relayDrain fills the outbox with opts.Messages rows in multi-row INSERTs,
// then times a relay draining it.
func relayDrain(ctx context.Context, st *store.Store, amqpURL string, opts Options, cpu *CPU) (time.Duration, error) {
	const chunk = 5000
	for start := 0; start < opts.Messages; start += chunk {
		events := make([]store.OutboxEvent, min(chunk, opts.Messages-start))
		for i := range events {
			m := sample()
			events[i] = store.OutboxEvent{EventID: m.EventID, UserID: m.UserID, Version: 1, Type: m.Type, Origin: m.Origin, CreatedAt: m.OccurredAt}
		}
		if err := st.AppendOutbox(ctx, events); err != nil {
			return 0, fmt.Errorf("bench: filling the outbox: %w", err)
		}
	}
	settle(ctx, st.DB())
	cs := &countingStore{Store: st, target: int64(opts.Messages), done: make(chan struct{})}
	began, before := time.Now(), cpuNow()
	_, _, stop, err := startRelay(ctx, cs, amqpURL, opts)
	if err != nil {
		return 0, err
	}
	defer stop()
	select {
	case <-cs.done:
		*cpu = cpuNow().sub(before)
		return time.Since(began), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("bench: draining: %w", ctx.Err())
	}
}

// lag writes users at opts.LagRate for opts.LagDuration through CreateUser
// with a relay running (woken by OnCommit), and measures commit → confirm
// per user.
func lag(ctx context.Context, st *store.Store, amqpURL string, opts Options, res *Result) error {
	r, pub, stop, err := startRelay(ctx, st, amqpURL, opts)
	if err != nil {
		return err
	}
	defer stop()
	st.OnCommit(r.Notify)
	defer st.OnCommit(nil)

	total := int(float64(opts.LagRate) * opts.LagDuration.Seconds())
	var (
		mu        sync.Mutex
		committed = make(map[string]time.Time, total)
		writes    = make([]time.Duration, 0, total)
		writeErr  error
		wg        sync.WaitGroup
	)
	jobs := make(chan int, opts.Writers)
	for range opts.Writers {
		wg.Go(func() {
			for i := range jobs {
				t0 := time.Now()
				u, err := st.CreateUser(ctx, store.NewUser{Email: fmt.Sprintf("bench-%d@example.com", i), Name: "Bench User"}, nil)
				at := time.Now()
				mu.Lock()
				writes = append(writes, at.Sub(t0))
				switch {
				case err != nil && writeErr == nil:
					writeErr = err
				case err == nil:
					committed[u.ID] = at
				}
				mu.Unlock()
			}
		})
	}
	began := time.Now()
	interval := time.Second / time.Duration(opts.LagRate)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		if d := time.Until(began.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(began)
	if writeErr != nil {
		return fmt.Errorf("bench: writing users: %w", writeErr)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("bench: writing users: %w", ctx.Err())
	}

	deadline := time.Now().Add(30 * time.Second)
	lags := make([]time.Duration, 0, len(committed))
	for id, at := range committed {
		for {
			c, ok := pub.confirmedAt(id)
			if ok {
				// The relay can confirm before the writer goroutine reads
				// the clock: count that as no lag.
				lags = append(lags, max(c.Sub(at), 0))
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("bench: the change to user %s was never confirmed", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	slices.Sort(lags)
	slices.Sort(writes)
	res.WriteP50 = writes[len(writes)*50/100]
	res.WriteP99 = writes[min(len(writes)*99/100, len(writes)-1)]
	res.LagUsers = len(lags)
	res.LagWriteRate = float64(len(lags)) / elapsed.Seconds()
	if len(lags) > 0 {
		res.LagP50 = lags[len(lags)*50/100]
		res.LagP99 = lags[min(len(lags)*99/100, len(lags)-1)]
		res.LagMax = lags[len(lags)-1]
	}
	return nil
}
