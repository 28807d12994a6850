package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/sandbox"
)

// ProcessesOptions configure the processes benchmark.
type ProcessesOptions struct {
	MySQLDSN string        // MySQL server (the database name is replaced)
	AMQPURL  string        // a scratch vhost
	Rate     int           // offered creates per second (default 200)
	Duration time.Duration // how long creates are offered (default 5 s)
	Edits    int           // dashboard edits afterwards (default 500)
	Log      io.Writer
}

// Processes runs Tandem as a user does: the api, webhook and worker
// binaries (built now) as separate processes against the local Stripe
// sandbox. It offers creates through the REST API at a fixed rate and
// measures API 201 → the sandbox receiving the customer create; then it
// edits customers in the sandbox's dashboard and measures how fast the
// webhook process applies them; and it reports each process's peak RSS.
func Processes(ctx context.Context, o ProcessesOptions) ([]Row, error) {
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Edits <= 0 {
		o.Edits = 500
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	bin, db, done, err := commandsAndDatabase(ctx, o.MySQLDSN, "tandem_bench_processes")
	if err != nil {
		return nil, err
	}
	defer done()

	apiAddr, webhookAddr, workerAddr, err := freeAddrs()
	if err != nil {
		return nil, err
	}
	const token, key, secret = "bench-token-0123456789", "sk_test_bench", "whsec_bench_only"
	sb := sandbox.New(sandbox.Config{APIKey: key, WebhookURL: "http://" + webhookAddr + "/webhook/stripe",
		WebhookSecret: secret, Logger: discard})
	defer sb.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	env := append(cleanEnv(), "TANDEM_CONFIG=", "TANDEM_API_TOKENS="+token, "TANDEM_PROVIDERS=stripe", "TANDEM_LOG_LEVEL=warn",
		"TANDEM_MYSQL_DSN="+db.DSN, "TANDEM_AMQP_URL="+o.AMQPURL, "TANDEM_API_ADDR="+apiAddr,
		"TANDEM_WEBHOOK_ADDR="+webhookAddr, "TANDEM_WORKER_ADDR="+workerAddr,
		"STRIPE_SECRET_KEY="+key, "STRIPE_WEBHOOK_SECRET="+secret, "STRIPE_API_BASE=http://"+ln.Addr().String(),
		"STRIPE_RATE_LIMIT=100000")
	var procs []*benchProcess
	defer func() {
		for _, p := range slices.Backward(procs) {
			p.stop()
		}
	}()
	for _, p := range []*benchProcess{
		{name: "api", path: filepath.Join(bin, "api"), ready: "http://" + apiAddr + "/readyz"},
		{name: "webhook", path: filepath.Join(bin, "webhook"), ready: "http://" + webhookAddr + "/readyz"},
		{name: "worker", path: filepath.Join(bin, "worker"), args: []string{"-provider", "stripe"}, ready: "http://" + workerAddr + "/readyz"},
	} {
		if err := p.start(ctx, env); err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}

	fmt.Fprintf(o.Log, "processes: %d creates/s for %s through the api process\n", o.Rate, o.Duration)
	created, err := offerCreates(ctx, "http://"+apiAddr, token, o.Rate, o.Duration)
	if err != nil {
		return nil, err
	}
	lat, missing := awaitCreates(ctx, sb.Fake, created, time.Minute)
	e2e := Row{Stage: "Processes: API 201 → sandbox receives the create", Conc: o.Rate, Ops: len(lat),
		Rate: float64(len(created)) / o.Duration.Seconds(),
		Note: "api, worker, webhook as separate processes; concurrency column = offered writes/s"}
	e2e.P50, e2e.P99 = percentiles(lat)
	if missing > 0 {
		e2e.Note += fmt.Sprintf("; %d of %d never arrived", missing, len(created))
	}

	fmt.Fprintf(o.Log, "processes: %d dashboard edits through the webhook process\n", o.Edits)
	edits, err := dashboardEdits(ctx, sb.Fake, o.Edits)
	if err != nil {
		return nil, err
	}

	var peaks []string
	for _, p := range procs {
		peak, err := peakRSS(p.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		peaks = append(peaks, fmt.Sprintf("%s %.0f MiB", p.name, float64(peak)/(1<<20)))
	}
	rss := Row{Stage: "Processes: peak RSS (VmHWM) after both loads", Note: strings.Join(peaks, ", ")}
	return []Row{e2e, edits, rss}, nil
}

// commandsAndDatabase builds the commands (BuildCommands) and makes a
// scratch database; done removes both.
func commandsAndDatabase(ctx context.Context, serverDSN, name string) (bin string, db *Database, done func(), err error) {
	bin, err = BuildCommands(ctx)
	if err != nil {
		return "", nil, nil, err
	}
	db, err = NewDatabase(ctx, serverDSN, name)
	if err != nil {
		os.RemoveAll(bin)
		return "", nil, nil, err
	}
	return bin, db, func() { db.Close(); os.RemoveAll(bin) }, nil
}

// BuildCommands builds cmd/api, cmd/webhook, cmd/worker and cmd/tandemctl of the module
// the current directory is in, into a new temporary directory (the caller
// removes it). The e2e tests use it too.
func BuildCommands(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", fmt.Errorf("run the benchmark inside the Tandem module (go env GOMOD: %q %v)", out, err)
	}
	dir, err := os.MkdirTemp("", "tandem-bench-bin-")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/webhook", "./cmd/worker", "./cmd/tandemctl")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building the commands: %v\n%s", err, b)
	}
	return dir, nil
}

func freeAddrs() (api, webhook, worker string, err error) {
	var addrs []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", "", err
		}
		addrs = append(addrs, ln.Addr().String())
		defer ln.Close()
	}
	return addrs[0], addrs[1], addrs[2], nil
}

// benchProcess is one Tandem binary run by the benchmark.
type benchProcess struct {
	name, path string
	args       []string
	ready      string // URL answering 200 once the process is ready
	cmd        *exec.Cmd
	stderr     bytes.Buffer
	done       chan error
}

func (p *benchProcess) start(ctx context.Context, env []string) error {
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Env = env
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(p.ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited during start-up: %v\n%s", p.name, err, p.stderr.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within 60 s", p.name, p.ready)
		}
	}
}

// stop sends SIGTERM and waits for the process to exit (SIGKILL after 20 s).
func (p *benchProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// offerCreates POSTs users at rate per second for dur and returns when each
// got its 201, by user id.
func offerCreates(ctx context.Context, base, token string, rate int, dur time.Duration) (map[string]time.Time, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	var (
		mu       sync.Mutex
		created  = map[string]time.Time{}
		firstErr error
		wg       sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"email":"proc-%d@example.com","name":"Process %d"}`, i, i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/users", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			var u struct{ ID string }
			if err == nil {
				if resp.StatusCode != http.StatusCreated {
					err = fmt.Errorf("POST /v1/users: %s", resp.Status)
				} else {
					err = json.NewDecoder(resp.Body).Decode(&u)
				}
				resp.Body.Close()
			}
			at := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil {
				created[u.ID] = at
			}
		}()
	}
	wg.Wait()
	return created, firstErr
}

// awaitCreates waits (up to limit) until the fake has received the create
// of every user in created, and returns the latencies 201 → create and how
// many never arrived.
func awaitCreates(ctx context.Context, fake *stripefake.Server, created map[string]time.Time, limit time.Duration) ([]time.Duration, int) {
	deadline := time.Now().Add(limit)
	for {
		var lat []time.Duration
		for _, rq := range fake.Requests() {
			if rq.Method != http.MethodPost || rq.Path != "/v1/customers" || rq.Replayed {
				continue
			}
			if at, ok := created[rq.Params.Get("metadata[tandem_user_id]")]; ok {
				lat = append(lat, max(0, rq.Time.Sub(at)))
			}
		}
		if len(lat) >= len(created) || time.Now().After(deadline) || ctx.Err() != nil {
			return lat, len(created) - len(lat)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dashboardEdits renames n customers in the dashboard at once and measures
// until the sandbox has delivered every resulting webhook (each answered 200
// only once applied).
func dashboardEdits(ctx context.Context, fake *stripefake.Server, n int) (Row, error) {
	var ids []string
	for _, c := range fake.Customers() {
		if !c.Deleted {
			ids = append(ids, c.ID)
		}
	}
	if len(ids) == 0 {
		return Row{}, errors.New("no customer to edit")
	}
	start := time.Now()
	for i := range n {
		id := ids[i%len(ids)]
		if _, err := fake.DashboardUpdate(id, func(c *stripefake.Customer) { c.Name = fmt.Sprintf("Edited %d", i) }); err != nil {
			return Row{}, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := fake.WaitDelivered(wctx); err != nil {
		return Row{}, err
	}
	el := time.Since(start)
	st := fake.DeliveryStats()
	return Row{Stage: "Processes: dashboard edits → webhook process applies them", Conc: 1, Ops: n,
		Rate: float64(n) / el.Seconds(),
		Note: fmt.Sprintf("the sandbox delivers one event per customer at a time; %d failed attempts", st.FailedAttempts)}, nil
}

// peakRSS reads a process's peak resident set size (VmHWM) from /proc.
func peakRSS(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// percentiles returns the p50 and p99 of lat (sorted in place).
func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
}
