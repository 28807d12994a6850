// Package webhookbench measures the webhook process's event rate against a
// raw MariaDB ceiling and a bare net/http handler doing the same
// transaction (make bench, stage "webhook").
package webhookbench

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

// Options tune Bench. Zero fields take the defaults shown.
type Options struct {
	Concurrency int           // concurrent senders, and database connections of each stage (64)
	Warmup      time.Duration // unmeasured load before each stage (1s)
	Duration    time.Duration // measured time of each stage (5s)
	// Users is how many linked users the events update, round robin (50,000);
	// enough that one customer's events are seconds apart, as in life (a
	// tie within a second would make the webhook re-read the customer).
	Users int
}

func (o *Options) setDefaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Users <= 0 {
		o.Users = 50_000
	}
}

// Stage is the measurement of one stage.
type Stage struct {
	Name   string
	Events int           // events applied in the measured time
	Rate   float64       // events applied per second
	P50    time.Duration // latency, as the sender sees it
	P99    time.Duration
	Errors int // events not answered 200 "applied" (or not committed)
}

// Result is what Bench measured.
type Result struct {
	Raw    Stage // the webhook's transaction through database/sql: the ceiling (the better of two runs, first and last)
	Bare   Stage // a bare net/http handler: Stripe signature check + the same transaction
	Tandem Stage // POST /webhook/stripe through Tandem's webhook
	// Memory of the bench process (webhook, senders and database pools
	// together) after the Tandem stage: resident set now and at its peak
	// (VmRSS, VmHWM; 0 where /proc is missing), and Go's heap in use.
	RSSBytes, PeakRSSBytes, HeapInuseBytes uint64
}

// Bench measures verified and applied Stripe events per second for one
// webhook process with opts.Concurrency concurrent senders, each event a
// customer.updated that changes a linked user (so every one is applied:
// version + 1, link updated, no outbox row), against two ceilings measured
// in the same run: the same transaction issued directly through
// database/sql, and a bare net/http handler that checks the signature and
// runs that transaction. Each stage gets a fresh scratch database
// (tandem_bench_webhook_<stage>_<random>) on the server mysqlDSN names (its
// database name is replaced), dropped afterwards.
// It writes a markdown table to w.
func Run(ctx context.Context, w io.Writer, mysqlDSN string, opts Options) (Result, error) {
	opts.setDefaults()
	var res Result
	// The ceiling is measured first and again last, and the better run
	// kept, so the order of the stages on a shared machine favours none.
	raw1, err := benchStage(ctx, mysqlDSN, "raw", opts, benchRaw)
	if err != nil {
		return res, fmt.Errorf("raw stage: %w", err)
	}
	raw1.Name = "MySQL: the webhook's tx via database/sql (first)"
	if res.Bare, err = benchStage(ctx, mysqlDSN, "bare", opts, benchBare); err != nil {
		return res, fmt.Errorf("bare stage: %w", err)
	}
	res.Bare.Name = "HTTP: bare net/http, signature check + same tx"
	if res.Tandem, err = benchStage(ctx, mysqlDSN, "tandem", opts, benchTandem); err != nil {
		return res, fmt.Errorf("tandem stage: %w", err)
	}
	res.Tandem.Name = "Tandem: POST /webhook/stripe"
	res.RSSBytes, res.PeakRSSBytes = procRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapInuseBytes = ms.HeapInuse
	raw2, err := benchStage(ctx, mysqlDSN, "raw", opts, benchRaw)
	if err != nil {
		return res, fmt.Errorf("raw stage: %w", err)
	}
	raw2.Name = "MySQL: the webhook's tx via database/sql (last)"
	res.Raw = raw1
	if raw2.Rate > raw1.Rate {
		res.Raw = raw2
	}
	res.Raw.Name = "MySQL: the webhook's tx via database/sql (better of 2 runs)"

	fmt.Fprintf(w, "Webhook: %d concurrent senders, %s measured after %s warm-up, %d users, %d CPUs\n\n",
		opts.Concurrency, opts.Duration, opts.Warmup, opts.Users, runtime.NumCPU())
	fmt.Fprintln(w, "| stage | events | events/s | p50 | p99 | errors | % of raw | % of bare |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range []Stage{raw1, res.Bare, res.Tandem, raw2} {
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %d | %.0f %% | %.0f %% |\n", s.Name, s.Events, s.Rate,
			ms2(s.P50), ms2(s.P99), s.Errors, 100*s.Rate/res.Raw.Rate, 100*s.Rate/res.Bare.Rate)
	}
	fmt.Fprintf(w, "\n%% of raw is against the better raw run. Memory after the Tandem stage (one process: webhook + senders + pools): RSS %.1f MiB, peak RSS %.1f MiB, Go heap in use %.1f MiB\n",
		mib(res.RSSBytes), mib(res.PeakRSSBytes), mib(res.HeapInuseBytes))
	return res, nil
}

func ms2(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
func mib(b uint64) float64       { return float64(b) / (1 << 20) }

// benchEnv is one stage's scratch database with its seeded users.
type benchEnv struct {
	dsn   string
	db    *sql.DB // pool of opts.Concurrency connections
	users []string
	opts  Options
	seq   atomic.Int64
	tag   string
}

// benchSecret signs the bench's events.
const benchSecret = "whsec_bench"

// op sends (or applies) one event; it reports whether it was applied.
type benchOp func(ctx context.Context) error

type stageFunc func(ctx context.Context, e *benchEnv) (op benchOp, stop func(), err error)

func benchStage(ctx context.Context, baseDSN, tag string, opts Options, stage stageFunc) (Stage, error) {
	e, drop, err := newBenchEnv(ctx, baseDSN, tag, opts)
	if err != nil {
		return Stage{}, err
	}
	defer drop()
	op, stop, err := stage(ctx, e)
	if err != nil {
		return Stage{}, err
	}
	defer stop()
	s, failed := benchLoad(ctx, opts, op)
	// Every event answered applied must be committed as applied.
	var applied int
	if err := e.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM inbound_events WHERE outcome = 'applied'").Scan(&applied); err != nil {
		return s, err
	}
	if sent := int(e.seq.Load()); applied < sent-failed {
		return s, fmt.Errorf("%d events sent, %d failed, but only %d applied", sent, failed, applied)
	}
	if s.Events == 0 {
		return s, errors.New("no event was applied")
	}
	return s, nil
}

// benchLoad runs op from opts.Concurrency goroutines: warm-up, then the
// measured window. failed counts the failed ops of both.
func benchLoad(ctx context.Context, opts Options, op benchOp) (s Stage, failed int) {
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   atomic.Int64
		all    atomic.Int64
		wg     sync.WaitGroup
		from   = time.Now().Add(opts.Warmup)
		end    = from.Add(opts.Duration)
		ctxEnd context.CancelFunc
	)
	ctx, ctxEnd = context.WithDeadline(ctx, end.Add(30*time.Second))
	defer ctxEnd()
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				err := op(ctx)
				if err != nil {
					all.Add(1)
				}
				if t0.Before(from) {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	s = Stage{Events: len(lat), Rate: float64(len(lat)) / opts.Duration.Seconds(), Errors: int(errs.Load())}
	if len(lat) > 0 {
		s.P50 = lat[len(lat)/2]
		s.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return s, int(all.Load())
}

func newBenchEnv(ctx context.Context, baseDSN, tag string, opts Options) (*benchEnv, func(), error) {
	cfg, err := store.ParseDSN(baseDSN)
	if err != nil {
		return nil, nil, err
	}
	name := "tandem_bench_webhook_" + tag + "_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	admin := cfg.Clone()
	admin.DBName = ""
	adminDB, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		return nil, nil, err
	}
	drop := func() {
		_, _ = adminDB.ExecContext(context.Background(), "DROP DATABASE IF EXISTS `"+name+"`")
		adminDB.Close()
	}
	if _, err := adminDB.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
		adminDB.Close()
		return nil, nil, err
	}
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	if err := store.Migrate(ctx, dsn); err != nil {
		drop()
		return nil, nil, err
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		drop()
		return nil, nil, err
	}
	db.SetMaxOpenConns(opts.Concurrency)
	db.SetMaxIdleConns(opts.Concurrency)
	e := &benchEnv{dsn: dsn, db: db, opts: opts, tag: tag}
	if err := e.seed(ctx); err != nil {
		db.Close()
		drop()
		return nil, nil, err
	}
	return e, func() { db.Close(); drop() }, nil
}

// seed inserts opts.Users users, each linked to customer cus_bench_<i> as a
// push would leave it (synced an hour ago).
func (e *benchEnv) seed(ctx context.Context) error {
	const batch = 1000
	past := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	e.users = make([]string, e.opts.Users)
	for start := 0; start < e.opts.Users; start += batch {
		n := min(batch, e.opts.Users-start)
		var u, l strings.Builder
		uArgs := make([]any, 0, n*5)
		lArgs := make([]any, 0, n*5)
		u.WriteString("INSERT INTO users (id, email, name, phone, metadata, version, created_at, updated_at) VALUES ")
		l.WriteString("INSERT INTO provider_links (user_id, provider, remote_id, status, synced_version, pushed_hash, metadata_keys, synced_at, updated_at) VALUES ")
		for i := start; i < start+n; i++ {
			id := uuid.Must(uuid.NewV7()).String()
			e.users[i] = id
			if i > start {
				u.WriteString(",")
				l.WriteString(",")
			}
			u.WriteString("(?, ?, 'Bench User', '', '{\"plan\":\"pro\"}', 1, ?, ?)")
			uArgs = append(uArgs, id, fmt.Sprintf("bench%d@example.com", i), past, past)
			l.WriteString("(?, 'stripe', ?, 'synced', 1, 'seed', '[\"plan\"]', ?, ?)")
			lArgs = append(lArgs, id, fmt.Sprintf("cus_bench_%d", i), past, past)
		}
		if _, err := e.db.ExecContext(ctx, u.String(), uArgs...); err != nil {
			return fmt.Errorf("seeding users: %w", err)
		}
		if _, err := e.db.ExecContext(ctx, l.String(), lArgs...); err != nil {
			return fmt.Errorf("seeding links: %w", err)
		}
	}
	return nil
}

// next returns the next event: a customer.updated renaming the next user.
func (e *benchEnv) next() (payload []byte, seq int64) {
	seq = e.seq.Add(1)
	i := int(seq % int64(len(e.users)))
	payload = fmt.Appendf(nil, `{"id":"evt_bench_%s_%d","object":"event","api_version":%q,"created":%d,"type":"customer.updated",`+
		`"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"data":{"object":`+
		`{"id":"cus_bench_%d","object":"customer","email":"bench%d@example.com","name":"Bench User %d","phone":null,`+
		`"metadata":{"tandem_user_id":%q,"plan":"pro"}}}}`,
		e.tag, seq, stripe.APIVersion, time.Now().Unix(), i, i, seq, e.users[i])
	return payload, seq
}

// benchEvent is the part of a Stripe event the bare handler reads.
type benchEvent struct {
	ID      string `json:"id"`
	Created int64  `json:"created"`
	Type    string `json:"type"`
	Data    struct {
		Object struct {
			ID       string            `json:"id"`
			Email    string            `json:"email"`
			Name     string            `json:"name"`
			Phone    string            `json:"phone"`
			Metadata map[string]string `json:"metadata"`
		} `json:"object"`
	} `json:"data"`
}

// rawApply is the transaction store.ApplyInbound commits for an applied
// update of a customer tagged with its user, statement for statement (lock
// link and user, record the event, update the user, update the link),
// through database/sql.
func rawApply(ctx context.Context, db *sql.DB, ev benchEvent) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	occurred := time.Unix(ev.Created, 0).UTC()
	c := integrations.Customer{Email: ev.Data.Object.Email, Name: ev.Data.Object.Name, Phone: ev.Data.Object.Phone}
	for k, v := range ev.Data.Object.Metadata {
		if !strings.HasPrefix(k, stripe.ReservedMetadataPrefix) {
			if c.Metadata == nil {
				c.Metadata = map[string]string{}
			}
			c.Metadata[k] = v
		}
	}
	md, err := json.Marshal(c.Metadata)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var userID string
	var last, synced sql.NullTime
	var pushed sql.NullString
	var version int64
	var email, name, phone, meta string
	var remote sql.NullString
	if err := tx.QueryRowContext(ctx, `SELECT l.user_id, l.remote_id, l.last_inbound_at, l.synced_at, l.pushed_hash,
		u.email, u.name, u.phone, u.metadata, u.version
		FROM provider_links l STRAIGHT_JOIN users u ON u.id = l.user_id
		WHERE l.user_id = ? AND l.provider = 'stripe' FOR UPDATE`, ev.Data.Object.Metadata[stripe.MetadataUserIDKey]).
		Scan(&userID, &remote, &last, &synced, &pushed, &email, &name, &phone, &meta, &version); err != nil {
		return err
	}
	if remote.String != ev.Data.Object.ID {
		return errors.New("not this customer's link")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO inbound_events (provider, event_id, event_type, user_id, outcome, occurred_at, received_at)
		VALUES ('stripe', ?, ?, ?, 'applied', ?, ?)`, ev.ID, ev.Type, userID, occurred, now); err != nil {
		return err
	}
	if last.Valid && occurred.Before(last.Time) {
		return errors.New("stale")
	}
	version++
	if _, err := tx.ExecContext(ctx, `UPDATE users SET email = ?, name = ?, phone = ?, metadata = ?, version = ?, updated_at = ?, deleted_at = NULL
		WHERE id = ?`, c.Email, c.Name, c.Phone, string(md), version, now, userID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE provider_links FORCE INDEX (PRIMARY) SET status = 'synced', synced_version = ?, synced_at = ?, pushed_hash = ?,
		metadata_keys = '["plan"]', last_error = NULL, last_inbound_at = ?, updated_at = ? WHERE user_id = ? AND provider = 'stripe'`,
		version, now, c.Hash(), occurred, now, userID); err != nil {
		return err
	}
	return tx.Commit()
}

// benchRaw applies events with rawApply, without HTTP or signatures.
func benchRaw(_ context.Context, e *benchEnv) (benchOp, func(), error) {
	return func(ctx context.Context) error {
		payload, _ := e.next()
		var ev benchEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return err
		}
		return rawApply(ctx, e.db, ev)
	}, func() {}, nil
}

// benchBare serves a bare net/http handler: signature check, decode,
// rawApply.
func benchBare(ctx context.Context, e *benchEnv) (benchOp, func(), error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, tandemwebhook.BodyLimit))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := webhook.ValidatePayloadWithTolerance(body, r.Header.Get("Stripe-Signature"), benchSecret, stripe.WebhookTolerance); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ev benchEvent
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := rawApply(r.Context(), e.db, ev); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"received":1,"events":[{"outcome":"applied"}]}`)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	op, closeIdle := sender(e, "http://"+ln.Addr().String()+"/webhook/stripe")
	return op, func() { closeIdle(); _ = srv.Close() }, nil
}

// benchTandem serves Tandem's webhook app with the real Stripe receiver
// over store.Store.
func benchTandem(ctx context.Context, e *benchEnv) (benchOp, func(), error) {
	st, err := store.Open(ctx, e.dsn, store.Options{MaxOpenConns: e.opts.Concurrency})
	if err != nil {
		return nil, nil, err
	}
	// No Stripe API: a re-read would fail the event, and the bench with it.
	adapter, err := stripe.New(stripe.Config{SecretKey: "sk_test_bench", APIBase: "http://127.0.0.1:1", RateLimit: 25,
		WebhookSecret: benchSecret}, stripe.Options{})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	app := tandemwebhook.New(map[string]integrations.WebhookReceiver{"stripe": adapter}, st,
		slog.New(slog.NewJSONHandler(io.Discard, nil)), ops.NewRegistry(), ops.Check{Name: "mysql", Fn: st.Ping})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	go func() { _ = app.Listener(ln) }()
	op, closeIdle := sender(e, "http://"+ln.Addr().String()+"/webhook/stripe")
	return op, func() { closeIdle(); _ = app.Shutdown(); st.Close() }, nil
}

// sender posts signed events to url, as Stripe would, and wants each
// applied.
func sender(e *benchEnv, url string) (benchOp, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: e.opts.Concurrency, MaxConnsPerHost: e.opts.Concurrency}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return func(ctx context.Context) error {
		payload, _ := e.next()
		return PostSigned(ctx, client, url, benchSecret, payload)
	}, tr.CloseIdleConnections
}

// PostSigned sends one Stripe event signed with secret, as Stripe would,
// and wants the webhook to answer that it applied it.
func PostSigned(ctx context.Context, client *http.Client, url, secret string, payload []byte) error {
	ts := time.Now()
	sig := webhook.ComputeSignature(ts, payload, secret)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", "t="+strconv.FormatInt(ts.Unix(), 10)+",v1="+hex.EncodeToString(sig))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"outcome":"applied"`)) {
		return fmt.Errorf("webhook answered %s: %s", resp.Status, body)
	}
	return nil
}

// procRSS reads this process's resident set size and its peak from
// /proc/self/status (0, 0 where there is none).
func procRSS() (rss, peak uint64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []struct {
			prefix string
			dst    *uint64
		}{{"VmRSS:", &rss}, {"VmHWM:", &peak}} {
			if v, ok := strings.CutPrefix(line, k.prefix); ok {
				fields := strings.Fields(v)
				if len(fields) > 0 {
					if kb, err := strconv.ParseUint(fields[0], 10, 64); err == nil {
						*k.dst = kb << 10
					}
				}
			}
		}
	}
	return rss, peak
}
