package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/sandbox"
)

// PipelineOptions configure the pipeline benchmark.
type PipelineOptions struct {
	MySQLDSN string        // MySQL server, as root (the database name is replaced)
	AMQPURL  string        // a scratch vhost
	Rates    []int         // offered creates per second, rising (default 100, 200, 400, 600, 800)
	MixRate  int           // offered changes per second of the mixed step, half creates and half PATCHes (default 400; 0: none)
	Step     time.Duration // how long each rate is offered (default 8 s)
	// LinkByEmail is the worker's TANDEM_LINK_BY_EMAIL (the default, true,
	// makes a create list customers by email first).
	LinkByEmail bool
	// WorkerConcurrency, if set, is the worker's TANDEM_WORKER_CONCURRENCY
	// (and twice it its TANDEM_WORKER_PREFETCH); default Tandem's own.
	WorkerConcurrency int
	// KeepClimbing runs every rate even after one is not sustained
	// (default: stop at the first, whose backlog would slow the next).
	KeepClimbing bool
	// SandboxCommand runs the Stripe sandbox as its own process, so its CPU
	// time is its own: the command and arguments of a program that calls
	// ServeSandboxChild (cmd/bench passes itself with -sandbox-child).
	SandboxCommand []string
	// ProfileDir, if set, turns TANDEM_PPROF on and saves a CPU profile of
	// the api, worker and webhook over each step's offer window there
	// (<step>-<process>.pprof); profiling costs a little CPU.
	ProfileDir string
	Log        io.Writer
}

// PipelineStep is one offered rate's outcome.
type PipelineStep struct {
	Name              string
	Offered           float64 // changes offered per second
	Accepted          float64 // API 2xx per second over the offer window
	Synced            float64 // changes the sandbox received per second, first offer → last arrival
	Changes, Arrived  int
	LagP50, LagP99    time.Duration // API answer → the sandbox receiving the change
	Sustained         bool
	Why               string                   // why not sustained
	Requests          float64                  // per change: provider requests the sandbox received
	Deliveries        float64                  // per change: webhook delivery attempts
	Commits           float64                  // per change: MariaDB commits of Tandem's connections (read-only statements included)
	WriteStatements   float64                  // per change: INSERT/UPDATE/DELETE statements
	RowsWritten       float64                  // per change: rows inserted, updated or deleted
	InboundRows       float64                  // per change: inbound_events rows written
	CPU               map[string]time.Duration // per change, by process
	CPUShare          map[string]float64       // of one core, over the step
	APIErrors, Errors int
}

// pipelineProcs are the names of the processes whose CPU is reported, in
// table order: Tandem's three, MariaDB's work for Tandem's connections
// (USER_STATISTICS.CPU_TIME), the sandbox and the load generator.
var pipelineProcs = []string{"api", "worker", "webhook", "mysqld", "sandbox", "loadgen"}

// Pipeline runs the whole pipeline as a user deploys it on one box: the
// api (with its relay), one worker and the webhook as processes, and the
// Stripe sandbox as a process of its own; it offers creates through the
// REST API at rising rates (open loop), then a mix of creates and PATCHes,
// and for each rate reports whether it was sustained (every change reached
// the sandbox, with the p99 of API answer → sandbox ≤ 1 s and the API
// accepting what was offered), and what one change cost: provider
// requests, webhook deliveries, MariaDB commits, statements and rows
// written (MariaDB's USER_STATISTICS for a user only Tandem's processes
// use, so other clients of the server do not count), inbound_events rows,
// and CPU time per process (/proc/<pid>/stat; MariaDB: CPU_TIME of
// Tandem's connections).
func Pipeline(ctx context.Context, o PipelineOptions) ([]PipelineStep, error) {
	if len(o.Rates) == 0 {
		o.Rates = []int{100, 200, 400, 600, 800}
	}
	if o.Step <= 0 {
		o.Step = 8 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.SandboxCommand) == 0 {
		return nil, errors.New("pipeline: SandboxCommand is required")
	}
	bin, db, done, err := commandsAndDatabase(ctx, o.MySQLDSN, "tandem_bench_pipeline")
	if err != nil {
		return nil, err
	}
	defer done()
	stats, tandemDSN, cleanup, err := newStatsUser(ctx, db)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	apiAddr, webhookAddr, workerAddr, err := freeAddrs()
	if err != nil {
		return nil, err
	}
	sbAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	const token, key, secret = "bench-token-0123456789", "sk_test_bench", "whsec_bench_only"
	sb := &benchProcess{name: "sandbox", path: o.SandboxCommand[0],
		args:  append(slices.Clone(o.SandboxCommand[1:]), sbAddr, "http://"+webhookAddr+"/webhook/stripe", secret, key),
		ready: "http://" + sbAddr + "/_sandbox/stats"}
	if err := sb.start(ctx, os.Environ()); err != nil {
		return nil, err
	}
	defer sb.stop()

	env := append(cleanEnv(), "TANDEM_CONFIG=", "TANDEM_API_TOKENS="+token, "TANDEM_PROVIDERS=stripe", "TANDEM_LOG_LEVEL=warn",
		"TANDEM_MYSQL_DSN="+tandemDSN, "TANDEM_AMQP_URL="+o.AMQPURL, "TANDEM_API_ADDR="+apiAddr,
		"TANDEM_WEBHOOK_ADDR="+webhookAddr, "TANDEM_WORKER_ADDR="+workerAddr,
		"TANDEM_LINK_BY_EMAIL="+strconv.FormatBool(o.LinkByEmail), "TANDEM_PPROF="+strconv.FormatBool(o.ProfileDir != ""),
		"STRIPE_SECRET_KEY="+key, "STRIPE_WEBHOOK_SECRET="+secret, "STRIPE_API_BASE=http://"+sbAddr,
		"STRIPE_RATE_LIMIT=100000")
	if o.WorkerConcurrency > 0 {
		env = append(env, fmt.Sprintf("TANDEM_WORKER_CONCURRENCY=%d", o.WorkerConcurrency),
			fmt.Sprintf("TANDEM_WORKER_PREFETCH=%d", 2*o.WorkerConcurrency))
	}
	procs := map[string]*benchProcess{}
	var stopOnce sync.Once
	stopAll := func() {
		stopOnce.Do(func() {
			for _, name := range []string{"worker", "webhook", "api"} {
				if p := procs[name]; p != nil {
					p.stop()
				}
			}
		})
	}
	defer stopAll()
	// failed stops Tandem's processes and logs the end of what each wrote
	// (warnings and errors: they say why a step failed), then returns err.
	failed := func(err error) error {
		for name, addr := range map[string]string{"api": apiAddr, "worker": workerAddr} {
			fmt.Fprintf(o.Log, "pipeline: %s's counters:\n%s", name, metricLines(ctx, "http://"+addr+"/metrics",
				"tandem_worker_messages_total", "tandem_outbox"))
		}
		stopAll()
		for _, name := range []string{"api", "worker", "webhook"} {
			if p := procs[name]; p != nil && p.stderr.Len() > 0 {
				out := p.stderr.Bytes()
				fmt.Fprintf(o.Log, "pipeline: the end of %s's log:\n%s\n", name, out[max(0, len(out)-4096):])
			}
		}
		return err
	}
	for _, p := range []*benchProcess{
		{name: "api", path: filepath.Join(bin, "api"), ready: "http://" + apiAddr + "/readyz"},
		{name: "webhook", path: filepath.Join(bin, "webhook"), ready: "http://" + webhookAddr + "/readyz"},
		{name: "worker", path: filepath.Join(bin, "worker"), args: []string{"-provider", "stripe"}, ready: "http://" + workerAddr + "/readyz"},
	} {
		if err := p.start(ctx, env); err != nil {
			return nil, err
		}
		procs[p.name] = p
	}
	procs["sandbox"] = sb

	r := &pipelineRun{o: o, base: "http://" + apiAddr, token: token, sandbox: "http://" + sbAddr, stats: stats,
		procs: procs, addrs: map[string]string{"api": apiAddr, "webhook": webhookAddr, "worker": workerAddr}, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100, MaxConnsPerHost: 100}, Timeout: 30 * time.Second}}
	var steps []PipelineStep
	for _, rate := range o.Rates {
		fmt.Fprintf(o.Log, "pipeline: %d creates/s for %s\n", rate, o.Step)
		s, err := r.step(ctx, fmt.Sprintf("creates %d/s", rate), rate, 0)
		if err != nil {
			return steps, failed(err)
		}
		steps = append(steps, s)
		fmt.Fprintf(o.Log, "pipeline: %s: synced %.0f/s, lag p99 %s, sustained %v %s\n", s.Name, s.Synced, s.LagP99, s.Sustained, s.Why)
		if !s.Sustained && !o.KeepClimbing {
			break
		}
	}
	if o.MixRate > 0 {
		fmt.Fprintf(o.Log, "pipeline: %d changes/s, half PATCHes, for %s\n", o.MixRate, o.Step)
		s, err := r.step(ctx, fmt.Sprintf("mix %d/s (½ PATCH)", o.MixRate), o.MixRate-o.MixRate/2, o.MixRate/2)
		if err != nil {
			return steps, failed(err)
		}
		steps = append(steps, s)
		fmt.Fprintf(o.Log, "pipeline: %s: synced %.0f/s, lag p99 %s, sustained %v %s\n", s.Name, s.Synced, s.LagP99, s.Sustained, s.Why)
	}
	return steps, nil
}

// PipelineTable writes the steps as a markdown table and returns the
// highest sustained create rate.
func PipelineTable(w io.Writer, steps []PipelineStep) int {
	fmt.Fprint(w, "| step | offered/s | API 2xx/s | synced/s | lag p50 | lag p99 | sustained | provider req | webhook deliveries | commits | write stmts | rows written | inbound_events rows |")
	for _, p := range pipelineProcs {
		fmt.Fprintf(w, " CPU %s |", p)
	}
	fmt.Fprint(w, "\n|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
	fmt.Fprint(w, strings.Repeat("---:|", len(pipelineProcs)), "\n")
	best := 0
	for _, s := range steps {
		sus := "yes"
		if !s.Sustained {
			sus = "**no**: " + s.Why
		} else if strings.HasPrefix(s.Name, "creates ") {
			best = max(best, int(s.Offered+0.5))
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |",
			s.Name, s.Offered, s.Accepted, s.Synced, fmtDur(s.LagP50), fmtDur(s.LagP99), sus,
			s.Requests, s.Deliveries, s.Commits, s.WriteStatements, s.RowsWritten, s.InboundRows)
		for _, p := range pipelineProcs {
			fmt.Fprintf(w, " %d µs (%.0f %%) |", s.CPU[p].Microseconds(), s.CPUShare[p]*100)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nPer change (a create or a PATCH): the counts and CPU columns are per change; CPU as µs per change (share of one core over the step, drain included). Highest sustained create rate: **%d/s**.\n", best)
	return best
}

type pipelineRun struct {
	o              PipelineOptions
	base, token    string
	sandbox        string
	stats          *sql.DB // root: reads USER_STATISTICS and the bench database (not counted)
	procs          map[string]*benchProcess
	addrs          map[string]string // ops addresses of the Tandem processes
	patched        int               // users PATCHed so far (each PATCH takes the next user)
	client         *http.Client
	seq            int
	users          []string // created so far, for PATCHes
	sandboxWritten int      // requests the sandbox recorded before this step
}

type counters struct {
	cpu                   map[string]time.Duration
	requests, deliveries  int
	commits, writes, rows int64
	inbound               int64
	mysqldCPU             float64
	at                    time.Time
}

func (r *pipelineRun) snapshot(ctx context.Context) (counters, error) {
	c := counters{cpu: map[string]time.Duration{}, at: time.Now()}
	for name, p := range r.procs {
		d, err := procCPU(p.cmd.Process.Pid)
		if err != nil {
			return c, err
		}
		c.cpu[name] = d
	}
	self, err := procCPU(os.Getpid())
	if err != nil {
		return c, err
	}
	c.cpu["loadgen"] = self
	var st sandboxStats
	if err := getJSON(ctx, r.client, r.sandbox+"/_sandbox/stats", &st); err != nil {
		return c, err
	}
	c.requests, c.deliveries = st.Requests.Total, st.Deliveries.Attempts
	var ins, upd, del int64
	if err := r.stats.QueryRowContext(ctx, `SELECT COMMIT_TRANSACTIONS, UPDATE_COMMANDS, ROWS_INSERTED, ROWS_UPDATED, ROWS_DELETED, CPU_TIME
		FROM information_schema.USER_STATISTICS WHERE USER = ?`, statsUser).Scan(&c.commits, &c.writes, &ins, &upd, &del, &c.mysqldCPU); err != nil {
		return c, fmt.Errorf("reading USER_STATISTICS: %w", err)
	}
	c.rows = ins + upd + del
	if err := r.stats.QueryRowContext(ctx, "SELECT COUNT(*) FROM inbound_events").Scan(&c.inbound); err != nil {
		return c, err
	}
	c.cpu["mysqld"] = time.Duration(c.mysqldCPU * float64(time.Second))
	return c, nil
}

type sandboxStats struct {
	Requests struct {
		Total            int `json:"total"`
		Writes           int `json:"writes"`
		CustomersCreated int `json:"customers_created"`
	} `json:"requests"`
	Deliveries stripefake.DeliveryStats `json:"deliveries"`
}

// step offers creates and patches per second for o.Step, waits until the
// pipeline is quiet again, and measures.
func (r *pipelineRun) step(ctx context.Context, name string, creates, patches int) (PipelineStep, error) {
	s := PipelineStep{Name: name, Offered: float64(creates + patches), CPU: map[string]time.Duration{}, CPUShare: map[string]float64{}}
	if patches > len(r.users) {
		patches = len(r.users)
	}
	before, err := r.snapshot(ctx)
	if err != nil {
		return s, err
	}
	type sent struct {
		at   time.Time
		user string // creates: the user id; patches: the name sent
	}
	var (
		mu        sync.Mutex
		answered  []sent
		createdID []string
		wg        sync.WaitGroup
		apiErr    error
	)
	total := creates + patches
	profiled := r.profile(ctx, name)
	interval := time.Second / time.Duration(total)
	start := time.Now()
	end := start.Add(r.o.Step)
	n := 0
	for next := start; next.Before(end); next = next.Add(interval) {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		r.seq++
		seq := r.seq
		isPatch := patches > 0 && n%total >= creates
		target := ""
		if isPatch {
			// Each PATCH its own user, so none is coalesced with another.
			target = r.users[r.patched%len(r.users)]
			r.patched++
		}
		n++
		wg.Add(1)
		go func() {
			defer wg.Done()
			var req *http.Request
			var sentName string
			if isPatch {
				sentName = fmt.Sprintf("Patched %d", seq)
				req, _ = http.NewRequestWithContext(ctx, http.MethodPatch, r.base+"/v1/users/"+target, strings.NewReader(`{"name":"`+sentName+`"}`))
			} else {
				req, _ = http.NewRequestWithContext(ctx, http.MethodPost, r.base+"/v1/users",
					strings.NewReader(fmt.Sprintf(`{"email":"pipe-%d@example.com","name":"Pipeline %d"}`, seq, seq)))
			}
			req.Header.Set("Authorization", "Bearer "+r.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := r.client.Do(req)
			var u struct{ ID string }
			if err == nil {
				if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
				} else {
					err = json.NewDecoder(resp.Body).Decode(&u)
				}
				resp.Body.Close()
			}
			at := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.APIErrors++
				if apiErr == nil {
					apiErr = err
				}
				return
			}
			if isPatch {
				answered = append(answered, sent{at, sentName})
			} else {
				answered = append(answered, sent{at, u.ID})
				createdID = append(createdID, u.ID)
			}
		}()
	}
	wg.Wait()
	offerEnd := time.Now()
	if err := profiled(); err != nil {
		return s, err
	}
	s.Changes = len(answered)
	s.Accepted = float64(len(answered)) / r.o.Step.Seconds()
	r.users = append(r.users, createdID...)

	// Quiet: every user synced at its version, every webhook delivered.
	if err := r.awaitQuiet(ctx, 3*time.Minute); err != nil {
		return s, err
	}
	after, err := r.snapshot(ctx)
	if err != nil {
		return s, err
	}
	// Arrivals: the sandbox's first successful write carrying the change.
	var writes []sandboxWrite
	if err := getJSON(ctx, r.client, fmt.Sprintf("%s/_bench/writes?from=%d", r.sandbox, r.sandboxWritten), &writes); err != nil {
		return s, err
	}
	r.sandboxWritten += len(writes)
	arrivedAt := map[string]time.Time{}
	for _, w := range writes {
		if w.Status/100 != 2 || w.Replayed || w.Method != http.MethodPost {
			continue
		}
		k := w.Name
		if w.Path == "/v1/customers" {
			k = w.UserID
		}
		if _, ok := arrivedAt[k]; !ok && k != "" {
			arrivedAt[k] = time.Unix(0, w.At)
		}
	}
	var lat []time.Duration
	last := offerEnd
	for _, a := range answered {
		if t, ok := arrivedAt[a.user]; ok {
			lat = append(lat, max(0, t.Sub(a.at)))
			if t.After(last) {
				last = t
			}
		}
	}
	s.Arrived = len(lat)
	s.LagP50, s.LagP99 = percentiles(lat)
	s.Synced = float64(s.Arrived) / last.Sub(start).Seconds()
	s.Sustained = true
	switch {
	case s.APIErrors > 0:
		s.Sustained, s.Why = false, fmt.Sprintf("%d API errors (%v)", s.APIErrors, apiErr)
	case s.Arrived < s.Changes:
		s.Sustained, s.Why = false, fmt.Sprintf("%d of %d changes never reached the sandbox", s.Changes-s.Arrived, s.Changes)
	case s.LagP99 > time.Second:
		s.Sustained, s.Why = false, "lag p99 > 1 s"
	case s.Accepted < 0.95*s.Offered:
		s.Sustained, s.Why = false, fmt.Sprintf("the API accepted %.0f/s of %.0f/s offered", s.Accepted, s.Offered)
	}
	per := float64(max(1, s.Changes))
	s.Requests = float64(after.requests-before.requests) / per
	s.Deliveries = float64(after.deliveries-before.deliveries) / per
	s.Commits = float64(after.commits-before.commits) / per
	s.WriteStatements = float64(after.writes-before.writes) / per
	s.RowsWritten = float64(after.rows-before.rows) / per
	s.InboundRows = float64(after.inbound-before.inbound) / per
	wall := after.at.Sub(before.at)
	for _, p := range pipelineProcs {
		d := after.cpu[p] - before.cpu[p]
		s.CPU[p] = time.Duration(float64(d) / per)
		s.CPUShare[p] = float64(d) / float64(wall)
	}
	return s, nil
}

// profile starts CPU profiles of the Tandem processes over the offer
// window (when ProfileDir is set); the function returned waits for them.
func (r *pipelineRun) profile(ctx context.Context, step string) func() error {
	if r.o.ProfileDir == "" {
		return func() error { return nil }
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(r.addrs))
	file := strings.NewReplacer(" ", "-", "/", "", "(", "", ")", "", "½", "half").Replace(step)
	for name, addr := range r.addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(1, int(r.o.Step.Seconds())))
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(r.o.ProfileDir, file+"-"+name+".pprof"), b, 0o644)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	return func() error {
		wg.Wait()
		// And each process's metrics as they stand after the step.
		for name, addr := range r.addrs {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				return err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(r.o.ProfileDir, file+"-"+name+".metrics"), b, 0o644); err != nil {
				return err
			}
		}
		close(errs)
		return <-errs
	}
}

// awaitQuiet waits until every user's stripe link is synced at the user's
// version, nothing is left in the outbox, and the sandbox has no webhook
// delivery pending.
func (r *pipelineRun) awaitQuiet(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var behind, unpublished int
		err := r.stats.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM users u LEFT JOIN provider_links l ON l.user_id = u.id AND l.provider = 'stripe'
			  WHERE u.deleted_at IS NULL AND (l.synced_version IS NULL OR l.synced_version < u.version)),
			(SELECT COUNT(*) FROM outbox WHERE published_at IS NULL)`).Scan(&behind, &unpublished)
		if err != nil {
			return err
		}
		var st sandboxStats
		if err := getJSON(ctx, r.client, r.sandbox+"/_sandbox/stats", &st); err != nil {
			return err
		}
		if behind == 0 && unpublished == 0 && st.Deliveries.Pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pipeline not quiet after %s: %d users behind%s, %d outbox rows unpublished, %d deliveries pending",
				limit, behind, r.behindDetail(ctx), unpublished, st.Deliveries.Pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// behindDetail describes up to five users whose link is behind: the link's
// state says why (failed after its attempts, a conflict, a lease held).
func (r *pipelineRun) behindDetail(ctx context.Context) string {
	rows, err := r.stats.QueryContext(ctx, `SELECT u.id, u.version, COALESCE(l.status, '(no link)'), COALESCE(l.synced_version, 0),
			COALESCE(l.last_error, ''), l.attempt_version IS NOT NULL, COALESCE(l.lease_until > NOW(6), FALSE)
		FROM users u LEFT JOIN provider_links l ON l.user_id = u.id AND l.provider = 'stripe'
		WHERE u.deleted_at IS NULL AND (l.synced_version IS NULL OR l.synced_version < u.version) LIMIT 5`)
	if err != nil {
		return " (" + err.Error() + ")"
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, status, lastErr string
		var version, synced int64
		var unsure, leased bool
		if err := rows.Scan(&id, &version, &status, &synced, &lastErr, &unsure, &leased); err != nil {
			return " (" + err.Error() + ")"
		}
		out = append(out, fmt.Sprintf("%s at version %d: link %s at %d, attempt unknown %v, leased %v, last error %q",
			id, version, status, synced, unsure, leased, lastErr))
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + strings.Join(out, "; ") + ")"
}

// statsUser is the MariaDB account the pipeline's processes use, so that
// USER_STATISTICS counts their work and no other client's.
const statsUser = "tandem_bench_pipeline"

// newStatsUser creates statsUser with every privilege on db, turns
// MariaDB's userstat on (restored by cleanup), and returns a root
// connection to db and the DSN the processes use.
func newStatsUser(ctx context.Context, db *Database) (*sql.DB, string, func(), error) {
	root, err := sql.Open("mysql", db.DSN)
	if err != nil {
		return nil, "", nil, err
	}
	var was int
	if err := root.QueryRowContext(ctx, "SELECT @@GLOBAL.userstat").Scan(&was); err != nil {
		root.Close()
		return nil, "", nil, fmt.Errorf("MariaDB's userstat (USER_STATISTICS) is needed: %w", err)
	}
	for _, q := range []string{
		"DROP USER IF EXISTS '" + statsUser + "'@'%'",
		"CREATE USER '" + statsUser + "'@'%'",
		"GRANT ALL ON `" + db.name + "`.* TO '" + statsUser + "'@'%'",
		"SET GLOBAL userstat = 1",
		"FLUSH USER_STATISTICS",
	} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			root.Close()
			return nil, "", nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	cfg, err := mysql.ParseDSN(db.DSN)
	if err != nil {
		root.Close()
		return nil, "", nil, err
	}
	cfg.User, cfg.Passwd = statsUser, ""
	return root, cfg.FormatDSN(), func() {
		_, _ = root.Exec("DROP USER IF EXISTS '" + statsUser + "'@'%'")
		_, _ = root.Exec("SET GLOBAL userstat = " + strconv.Itoa(was))
		root.Close()
	}, nil
}

// procCPU is a process's user + system CPU time so far (/proc/<pid>/stat).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields follow the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks, nil
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// sandboxWrite is one API request the sandbox child recorded.
type sandboxWrite struct {
	At       int64  `json:"t"` // Unix nanoseconds
	Method   string `json:"m"`
	Path     string `json:"p"`
	Status   int    `json:"s"`
	Replayed bool   `json:"r,omitempty"`
	UserID   string `json:"u,omitempty"` // metadata[tandem_user_id]
	Name     string `json:"n,omitempty"`
}

// ServeSandboxChild serves the Stripe sandbox as the pipeline benchmark's
// child process, with args addr, webhook URL, webhook secret and API key,
// until ctx ends or stdin closes. Besides the sandbox it serves GET
// /_bench/writes?from=N: the API requests it received from the N-th on.
func ServeSandboxChild(ctx context.Context, args []string) error {
	if len(args) != 4 {
		return errors.New("sandbox child: want addr webhook-url webhook-secret api-key")
	}
	sb := sandbox.New(sandbox.Config{APIKey: args[3], WebhookURL: args[1], WebhookSecret: args[2], Logger: discard,
		Fake: stripefake.Options{MaxRequests: 1 << 22}})
	defer sb.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_bench/writes", func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.Atoi(r.URL.Query().Get("from"))
		reqs := sb.Fake.Requests()
		out := make([]sandboxWrite, 0, max(0, len(reqs)-from))
		for _, rq := range reqs[min(from, len(reqs)):] {
			out = append(out, sandboxWrite{At: rq.Time.UnixNano(), Method: rq.Method, Path: rq.Path, Status: rq.Status,
				Replayed: rq.Replayed, UserID: rq.Params.Get("metadata[tandem_user_id]"), Name: rq.Params.Get("name")})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.Handle("/", sb.Handler())
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	// The parent stops the child with SIGTERM (ctx).
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// PipelineSummary writes, for runs of the same steps (-repeat), each step's
// outcome across the runs: in how many it was sustained, and the median
// (and range) of its synced rate, its lag p99 and its CPU per change over
// all processes. It returns the highest create rate sustained in more than
// half of the runs (0 if none): on a shared machine one run's verdict
// moves with the neighbours.
func PipelineSummary(w io.Writer, runs [][]PipelineStep) int {
	var names []string
	byName := map[string][]PipelineStep{}
	for _, run := range runs {
		for _, s := range run {
			if _, ok := byName[s.Name]; !ok {
				names = append(names, s.Name)
			}
			byName[s.Name] = append(byName[s.Name], s)
		}
	}
	fmt.Fprint(w, "| step | runs | sustained | synced/s, median (range) | lag p99, median (range) | CPU per change, all processes, median |\n|---|---:|---:|---|---|---:|\n")
	best := 0
	for _, name := range names {
		steps := byName[name]
		sustained := 0
		var synced, lag, cpu []float64
		for _, s := range steps {
			if s.Sustained {
				sustained++
			}
			synced = append(synced, s.Synced)
			lag = append(lag, float64(s.LagP99))
			var total time.Duration
			for _, p := range pipelineProcs {
				total += s.CPU[p]
			}
			cpu = append(cpu, float64(total))
		}
		if 2*sustained > len(runs) && strings.HasPrefix(name, "creates ") {
			best = max(best, int(steps[0].Offered+0.5))
		}
		lo, mid, hi := spread(synced)
		llo, lmid, lhi := spread(lag)
		_, cmid, _ := spread(cpu)
		fmt.Fprintf(w, "| %s | %d | %d of %d | %.0f (%.0f–%.0f) | %s (%s–%s) | %d µs |\n", name, len(steps), sustained, len(runs),
			mid, lo, hi, fmtDur(time.Duration(lmid)), fmtDur(time.Duration(llo)), fmtDur(time.Duration(lhi)),
			time.Duration(cmid).Microseconds())
	}
	fmt.Fprintf(w, "\nA step a run did not reach (it stopped climbing) counts as not sustained. Highest create rate sustained in more than half of %d runs: **%d/s**.\n", len(runs), best)
	return best
}

// spread returns the smallest, median and largest of xs (not empty).
func spread(xs []float64) (lo, mid, hi float64) {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	mid = s[n/2]
	if n%2 == 0 {
		mid = (s[n/2-1] + s[n/2]) / 2
	}
	return s[0], mid, s[n-1]
}

// metricLines returns the lines of the Prometheus text at url whose metric
// name starts with one of prefixes.
func metricLines(ctx context.Context, url string, prefixes ...string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error() + "\n"
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error() + "\n"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error() + "\n"
	}
	var b strings.Builder
	for line := range strings.Lines(string(body)) {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				b.WriteString(line)
				break
			}
		}
	}
	return b.String()
}
