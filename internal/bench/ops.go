package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
)

// OpsOptions configure the operating-surface benchmark (issue 13).
type OpsOptions struct {
	MySQLDSN string        // server; the database name is replaced
	AMQPURL  string        // a scratch vhost
	Rounds   int           // alternating rounds of each comparison (default 3)
	Duration time.Duration // measured time per API run (default 5 s)
	Warmup   time.Duration // before each API run (default 1 s)
	Messages int           // worker syncs per run (default 3000)
	Clients  int           // idle console tabs (default 500)
	Log      io.Writer
}

// Ops measures what the operating surface costs, each comparison in the
// same run with the rounds alternating (the machine is shared and noisy):
// POST /v1/users and the worker's syncs with the users' history recorded
// and with it off (target ≥ 95 %), and the api process's create rate and
// RSS with Clients console pages open (idle event streams) against none
// (target ≥ 95 %).
func Ops(ctx context.Context, o OpsOptions) ([]Row, error) {
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Messages <= 0 {
		o.Messages = 3000
	}
	if o.Clients <= 0 {
		o.Clients = 500
	}
	progress := func(f string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, f+"\n", a...)
		}
	}
	const conc = 32
	modes := []struct {
		name string
		hist store.HistoryOptions
	}{{"off", store.HistoryOptions{Off: true}}, {"on", store.HistoryOptions{}}}

	// 1. The API's creates, history on and off.
	apiRates := map[string][]float64{}
	for r := range o.Rounds {
		for i := range modes {
			m := modes[(i+r)%2] // alternate which goes first
			progress("ops: POST /v1/users with history %s (round %d)", m.name, r+1)
			row, err := withDB(ctx, o.MySQLDSN, "ops_api", func(dsn string) (Row, error) {
				st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: conc, History: m.hist})
				if err != nil {
					return Row{}, err
				}
				defer st.Close()
				app := api.New(st, st, api.Config{Tokens: []string{"bench-token"}, Providers: []string{"stripe"}},
					discard, ops.NewRegistry())
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return Row{}, err
				}
				go func() { _ = app.Listener(ln) }()
				defer app.Shutdown()
				op, closeIdle := httpLoader("http://"+ln.Addr().String(), conc, "ops")
				defer closeIdle()
				return load(ctx, conc, o.Warmup, o.Duration, op)
			})
			if err != nil {
				return nil, fmt.Errorf("api with history %s: %w", m.name, err)
			}
			apiRates[m.name] = append(apiRates[m.name], row.Rate)
		}
	}

	// 2. The worker's syncs (creates, then updates), history on and off.
	conn, err := broker.Dial(ctx, o.AMQPURL, discard, broker.Options{Name: "bench-ops",
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
	createRates, updateRates := map[string][]float64{}, map[string][]float64{}
	for r := range o.Rounds {
		for i := range modes {
			m := modes[(i+r)%2]
			progress("ops: %d worker syncs with history %s (round %d)", o.Messages, m.name, r+1)
			db, err := NewDatabase(ctx, o.MySQLDSN, "tandem_bench_ops_worker")
			if err != nil {
				return nil, err
			}
			rows, err := workerThroughputWith(ctx, db.DSN, conn, pub, o.Messages, 64, 32, m.hist)
			db.Close()
			if err != nil {
				return nil, fmt.Errorf("worker with history %s: %w", m.name, err)
			}
			createRates[m.name] = append(createRates[m.name], rows[0].Rate)
			updateRates[m.name] = append(updateRates[m.name], rows[1].Rate)
		}
	}

	// 3. The api process with console pages open.
	progress("ops: the api process with %d console pages open vs none", o.Clients)
	sse, err := consoleLoad(ctx, o, conc)
	if err != nil {
		return nil, fmt.Errorf("console pages: %w", err)
	}

	out := []Row{}
	pair := func(stage string, rates map[string][]float64, c int) {
		off, on := mean(rates["off"]), mean(rates["on"])
		out = append(out,
			Row{Stage: stage + ", history off", Conc: c, Rate: off, Note: "rounds: " + list(rates["off"])},
			Row{Stage: stage + ", history on", Conc: c, Rate: on, Ratios: map[string]float64{"history off": on / off},
				Note: "rounds: " + list(rates["on"]) + "; target ≥ 95 % of off"})
	}
	pair("Ops: API POST /v1/users", apiRates, conc)
	pair("Ops: worker creates synced/s", createRates, 32)
	pair("Ops: worker updates synced/s", updateRates, 32)
	return append(out, sse...), nil
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func list(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, ", ")
}

// consoleLoad runs the api binary and measures its create rate with no
// console page open and with o.Clients open (signed in, each holding the
// live event stream), alternating, and the process's RSS with them open.
func consoleLoad(ctx context.Context, o OpsOptions, conc int) ([]Row, error) {
	bin, err := BuildCommands(ctx)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)
	db, err := NewDatabase(ctx, o.MySQLDSN, "tandem_bench_ops_console")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	addr, _, _, err := freeAddrs()
	if err != nil {
		return nil, err
	}
	const token = "bench-token-0123456789"
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TANDEM_") && !strings.HasPrefix(kv, "STRIPE_") && !strings.HasPrefix(kv, "SALESFORCE_") {
			env = append(env, kv)
		}
	}
	env = append(env, "TANDEM_CONFIG=", "TANDEM_API_TOKENS="+token, "TANDEM_PROVIDERS=stripe", "TANDEM_LOG_LEVEL=warn",
		"TANDEM_MYSQL_DSN="+db.DSN, "TANDEM_AMQP_URL="+o.AMQPURL, "TANDEM_API_ADDR="+addr,
		// Every page comes from this one address.
		"TANDEM_HTTP_MAX_CONNS=4096", "TANDEM_HTTP_MAX_CONNS_PER_IP=0")
	p := &benchProcess{name: "api", path: filepath.Join(bin, "api"), ready: "http://" + addr + "/readyz"}
	if err := p.start(ctx, env); err != nil {
		return nil, err
	}
	defer p.stop()
	base := "http://" + addr

	// Sign in once; every page shares the session cookie.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(base+"/console/sign-in", url.Values{"token": {token}})
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == "tandem_console" {
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" {
		return nil, fmt.Errorf("console sign-in: %s, no cookie", resp.Status)
	}

	measure := func(tag string) (Row, error) {
		tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		defer tr.CloseIdleConnections()
		return load(ctx, conc, o.Warmup, o.Duration, func(ctx context.Context, w, n int) error {
			body := fmt.Sprintf(`{"email":"%s-%d-%d@example.com","name":"Bench User"}`, tag, w, n)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/users", strings.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				return fmt.Errorf("POST /v1/users: %s", resp.Status)
			}
			return nil
		})
	}

	rates := map[string][]float64{}
	var rssOpen, rssNone uint64
	for r := range 2 {
		for i := range 2 {
			open := (i+r)%2 == 1
			if !open {
				row, err := measure(fmt.Sprintf("none%d", r))
				if err != nil {
					return nil, err
				}
				rates["none"] = append(rates["none"], row.Rate)
				if rss, err := currentRSS(p.cmd.Process.Pid); err == nil && rssOpen == 0 {
					rssNone = rss // before any page was ever open (Go keeps freed memory a while)
				}
				continue
			}
			stop, err := openPages(ctx, base, cookie, o.Clients)
			if err != nil {
				return nil, err
			}
			row, err := measure(fmt.Sprintf("open%d", r))
			if rss, rerr := currentRSS(p.cmd.Process.Pid); rerr == nil {
				rssOpen = max(rssOpen, rss)
			}
			stop()
			if err != nil {
				return nil, err
			}
			rates["open"] = append(rates["open"], row.Rate)
		}
	}
	none, open := mean(rates["none"]), mean(rates["open"])
	return []Row{
		{Stage: "Ops: api process POST /v1/users, no console page open", Conc: conc, Rate: none,
			Note: fmt.Sprintf("rounds: %s; api RSS %d MiB", list(rates["none"]), rssNone>>20)},
		{Stage: fmt.Sprintf("Ops: api process POST /v1/users, %d console pages open", o.Clients), Conc: conc, Rate: open,
			Ratios: map[string]float64{"none open": open / none},
			Note:   fmt.Sprintf("rounds: %s; api RSS %d MiB with them; target ≥ 95 %% of none", list(rates["open"]), rssOpen>>20)},
	}, nil
}

// openPages opens n console event streams (as n idle browser tabs would,
// reconnecting when the server ends one) and returns once each got its
// first snapshot; stop closes them.
func openPages(ctx context.Context, base, cookie string, n int) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	client := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	ready := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/console/events", nil)
				req.Header.Set("Cookie", cookie)
				resp, err := client.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					if first {
						if err == nil {
							err = fmt.Errorf("GET /console/events: %s", resp.Status)
							resp.Body.Close()
						}
						ready <- err
						return
					}
					if resp != nil {
						resp.Body.Close()
					}
					continue
				}
				r := bufio.NewReader(resp.Body)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						break
					}
					if first && strings.HasPrefix(line, "data: ") {
						first = false
						ready <- nil
					}
				}
				resp.Body.Close()
			}
		}()
	}
	stop := func() {
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
	}
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				stop()
				return nil, err
			}
		case <-time.After(60 * time.Second):
			stop()
			return nil, fmt.Errorf("console pages: not every stream got its first snapshot within 60 s")
		}
	}
	return stop, nil
}

// currentRSS reads a process's resident set size (VmRSS) from /proc.
func currentRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
