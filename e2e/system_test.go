package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	_ "github.com/go-sql-driver/mysql"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/sandbox"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
)

// Secrets of a test system; none of them is real.
const (
	apiToken      = "e2e-token-0123456789"
	stripeKey     = "sk_test_e2e"
	webhookSecret = "whsec_e2e_only"
	// sfWebhookToken is the ?token= of the Salesforce Outbound Message
	// endpoint URL.
	sfWebhookToken = "sf-e2e-token-0123456789"
	provider       = "stripe"
)

// retryTiers are the workers' delay queues: short, so a run with faults
// converges within seconds.
const retryTiers = "50ms,200ms,1s"

// retryTierDurations are retryTiers parsed, for the queue names.
var retryTierDurations = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second}

// options shape a test system.
type options struct {
	workers     int                // worker processes for stripe (default 1)
	maxAttempts int                // TANDEM_MAX_ATTEMPTS (default 1000: retry until it works)
	fake        stripefake.Options // the sandbox's delivery options (retry backoff defaults to 20 ms)
	// salesforce also enables the salesforce provider: a Salesforce fake
	// in this process, delivering Outbound Messages to the webhook, and one
	// worker -provider salesforce.
	salesforce bool
	// env is added to every process's environment, after the defaults
	// (e.g. TANDEM_CATCHUP_INTERVAL=1s: catch-up is off by default).
	env []string
}

// system is one Tandem deployment for one test: its own database, vhost
// (reached through a cuttable proxy), ports, the sandbox in this process,
// and the api, webhook and worker processes.
type system struct {
	t       *testing.T
	seed    uint64
	dsn     string
	db      *sql.DB // inspection of the test database
	vhost   string  // AMQP URL of the vhost, direct (for inspection)
	proxy   *tcpproxy.Proxy
	mysql   *tcpproxy.Proxy // between the workers and MariaDB
	sb      *sandbox.Sandbox
	sbURL   string
	sf      *salesforcefake.Server // nil unless options.salesforce
	api     *process
	webhook *process
	workers []*process
	client  *apiClient
	inspect *amqp.Connection
	env     []string // the processes' common environment (tandemctl runs with it)
}

// newSystem starts a whole system for t and stops it when t ends. On
// failure it prints every process's warnings and last lines.
func newSystem(t *testing.T, opts options) *system {
	t.Helper()
	if opts.workers == 0 {
		opts.workers = 1
	}
	if opts.maxAttempts == 0 {
		opts.maxAttempts = 1000
	}
	s := &system{t: t, seed: seed(t)}

	s.dsn = testutil.NewDatabase(t)
	db, err := sql.Open("mysql", s.dsn)
	if err != nil {
		t.Fatalf("opening the test database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	s.db = db

	s.vhost = testutil.NewVhost(t)
	u, err := url.Parse(s.vhost)
	if err != nil {
		t.Fatalf("vhost URL: %v", err)
	}
	s.proxy = tcpproxy.New(t, u.Host)
	proxied := *u
	proxied.Host = s.proxy.Addr()
	conn, err := amqp.Dial(s.vhost)
	if err != nil {
		t.Fatalf("connecting to RabbitMQ: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	s.inspect = conn

	// Runs after every process has stopped (cleanups run last-in first-out).
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range s.processes() {
				t.Log(p.report(t.Name()))
			}
		}
	})

	apiAddr, webhookAddr := freeAddr(t), freeAddr(t)
	fo := opts.fake
	if fo.RetryBackoff == 0 {
		fo.RetryBackoff = 20 * time.Millisecond
	}
	if fo.MaxRetryBackoff == 0 {
		fo.MaxRetryBackoff = 500 * time.Millisecond
	}
	if fo.DeliveryAttempts == 0 {
		fo.DeliveryAttempts = 100 // Stripe retries for days; a lost event would be a false failure
	}
	fo.Seed = s.seed
	s.sb = sandbox.New(sandbox.Config{APIKey: stripeKey, WebhookURL: "http://" + webhookAddr + "/webhook/stripe",
		WebhookSecret: webhookSecret, Logger: slog.New(slog.DiscardHandler), Fake: fo})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	srv := &http.Server{Handler: s.sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.sbURL = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		_ = srv.Close()
		s.sb.Close()
	})

	env := baseEnv(
		"TANDEM_MYSQL_DSN="+s.dsn,
		"TANDEM_AMQP_URL="+proxied.String(),
		"TANDEM_API_ADDR="+apiAddr,
		"TANDEM_WEBHOOK_ADDR="+webhookAddr,
		"TANDEM_MAX_ATTEMPTS="+strconv.Itoa(opts.maxAttempts),
		"TANDEM_WORKER_LEASE=3s", // a SIGKILLed worker holds its users this long
		"STRIPE_API_BASE="+s.sbURL,
	)
	if opts.salesforce {
		env = append(env, s.startSalesforce(t, webhookAddr)...)
	}
	env = append(env, opts.env...)
	s.env = env
	dir := t.TempDir()
	s.api = &process{name: "api", path: bin("api"), env: env, dir: dir, addr: apiAddr, out: &testutil.SyncBuffer{}}
	s.webhook = &process{name: "webhook", path: bin("webhook"), env: env, dir: dir, addr: webhookAddr, out: &testutil.SyncBuffer{}}
	// Stripe workers reach MariaDB through a proxy the test can cut.
	dsnCfg, err := mysqldriver.ParseDSN(s.dsn)
	if err != nil {
		t.Fatalf("test DSN: %v", err)
	}
	s.mysql = tcpproxy.New(t, dsnCfg.Addr)
	dsnCfg.Addr = s.mysql.Addr()
	for i := range opts.workers {
		addr := freeAddr(t)
		s.workers = append(s.workers, &process{name: fmt.Sprintf("worker-%d", i+1), path: bin("worker"),
			args: []string{"-provider", provider}, env: slices.Concat(env, []string{"TANDEM_WORKER_ADDR=" + addr, "TANDEM_MYSQL_DSN=" + dsnCfg.FormatDSN()}),
			dir: dir, addr: addr, out: &testutil.SyncBuffer{}})
	}
	if opts.salesforce {
		addr := freeAddr(t)
		s.workers = append(s.workers, &process{name: "worker-salesforce", path: bin("worker"),
			args: []string{"-provider", "salesforce"}, env: slices.Concat(env, []string{"TANDEM_WORKER_ADDR=" + addr}),
			dir: dir, addr: addr, out: &testutil.SyncBuffer{}})
	}
	t.Cleanup(func() {
		for _, p := range s.processes() {
			if err := p.stop(15 * time.Second); err != nil {
				t.Errorf("graceful stop: %v", err)
			}
		}
	})
	s.api.start(t) // migrates the schema first
	s.webhook.start(t)
	for _, w := range s.workers {
		w.start(t)
	}
	s.client = newAPIClient("http://"+apiAddr, apiToken)
	t.Logf("system up: api %s, webhook %s, sandbox %s, %d worker(s), RabbitMQ via %s, seed %d",
		apiAddr, webhookAddr, s.sbURL, len(s.workers), s.proxy.Addr(), s.seed)
	return s
}

// startSalesforce serves a Salesforce fake that delivers Outbound Messages
// to the webhook at webhookAddr, and returns the settings that enable the
// salesforce provider against it.
func (s *system) startSalesforce(t *testing.T, webhookAddr string) []string {
	t.Helper()
	s.sf = salesforcefake.New(salesforcefake.Options{Logger: slog.New(slog.DiscardHandler),
		RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 500 * time.Millisecond})
	t.Cleanup(s.sf.Close)
	base, err := s.sf.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("salesforce fake: %v", err)
	}
	s.sf.SetOutboundEndpoint("http://"+webhookAddr+"/webhook/salesforce", sfWebhookToken)
	return []string{
		"TANDEM_PROVIDERS=" + provider + ",salesforce",
		"SALESFORCE_INSTANCE_URL=" + base,
		"SALESFORCE_TOKEN_URL=" + s.sf.TokenURL(),
		"SALESFORCE_CLIENT_ID=" + salesforcefake.DefaultClientID,
		"SALESFORCE_CLIENT_SECRET=" + salesforcefake.DefaultClientSecret,
		"SALESFORCE_WEBHOOK_SECRET=" + sfWebhookToken,
		"SALESFORCE_ORG_ID=" + s.sf.OrgID(),
		"SALESFORCE_INTEGRATION_USER_ID=" + s.sf.IntegrationUserID(),
		"SALESFORCE_METADATA_FIELD=" + salesforcefake.DefaultCustomField,
	}
}

// processes lists the system's processes, workers first (they stop first,
// handing their in-flight messages back).
func (s *system) processes() []*process {
	var ps []*process
	ps = append(ps, s.workers...)
	for _, p := range []*process{s.webhook, s.api} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// baseEnv is this process's environment without any Tandem, Stripe or
// Salesforce setting (a developer's shell may hold some), plus the settings
// every test process shares, plus extra.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TANDEM_") || strings.HasPrefix(kv, "STRIPE_") || strings.HasPrefix(kv, "SALESFORCE_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"TANDEM_CONFIG=", // built-in defaults, not configs/tandem.yaml
		"TANDEM_API_TOKENS="+apiToken,
		"TANDEM_PROVIDERS="+provider,
		"TANDEM_RETRY_TIERS="+retryTiers,
		"TANDEM_RELAY_POLL_INTERVAL=100ms",
		"TANDEM_SHUTDOWN_TIMEOUT=5s",
		"TANDEM_LOG_LEVEL="+logLevel(),
		// Catch-up's rounds would show as activity in watchQuiet: on only
		// where a test turns it on (options.env).
		"TANDEM_CATCHUP_INTERVAL=0",
		"STRIPE_SECRET_KEY="+stripeKey,
		"STRIPE_WEBHOOK_SECRET="+webhookSecret,
		"STRIPE_RATE_LIMIT=1000",
	)
	return append(env, extra...)
}

// seed returns TANDEM_E2E_SEED, or a fresh seed, and logs it.
func seed(t *testing.T) uint64 {
	if v := os.Getenv("TANDEM_E2E_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TANDEM_E2E_SEED %q: %v", v, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// queueDepth returns how many messages are ready in queue (0 if the queue
// does not exist yet).
func (s *system) queueDepth(queue string) (int, error) {
	ch, err := s.inspect.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// deadLetters returns the x-tandem-error of up to n dead-lettered messages,
// leaving them in the queue.
func (s *system) deadLetters(queue string, n int) []string {
	ch, err := s.inspect.Channel()
	if err != nil {
		return []string{err.Error()}
	}
	defer ch.Close()
	var out []string
	for range n {
		d, ok, err := ch.Get(queue, false)
		if err != nil || !ok {
			break
		}
		out = append(out, fmt.Sprintf("%s: %v", d.Body, d.Headers["x-tandem-error"]))
	}
	return out // unacked: back in the queue when the channel closes
}

// metric sums the samples of a Prometheus counter named name on a process's
// /metrics whose labels contain every one of match (e.g. `outcome="synced"`).
func metric(addr, name string, match ...string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum, nil
}

// apiClient calls the REST API over HTTP.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAPIClient(base, token string) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &apiClient{base: base, token: token, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// call sends one request (body, if not nil, as JSON) and returns the status
// and the body.
func (c *apiClient) call(ctx context.Context, method, path string, body any, header ...string) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// apiUser is a user as the REST API renders it.
type apiUser struct {
	ID       string             `json:"id"`
	Email    string             `json:"email"`
	Name     string             `json:"name"`
	Phone    string             `json:"phone"`
	Metadata map[string]string  `json:"metadata"`
	Version  int64              `json:"version"`
	Sync     map[string]apiSync `json:"sync"`
}

// apiSync is one provider's entry of a user's sync block.
type apiSync struct {
	Status        string     `json:"status"`
	RemoteID      *string    `json:"remote_id"`
	SyncedVersion int64      `json:"synced_version"`
	SyncedAt      *time.Time `json:"synced_at"`
	LastError     *string    `json:"last_error"`
}

// getUser reads one user through the API.
func (c *apiClient) getUser(ctx context.Context, id string) (apiUser, int, error) {
	status, body, err := c.call(ctx, http.MethodGet, "/v1/users/"+id, nil)
	if err != nil || status != http.StatusOK {
		return apiUser{}, status, err
	}
	var u apiUser
	err = json.Unmarshal(body, &u)
	return u, status, err
}

// dashboard edits a customer through the sandbox's dashboard JSON API, as a
// person would: fields maps email, name, phone or description to their new
// value (and metadata to a map of keys to set, "" removing one).
func (s *system) dashboard(ctx context.Context, method, path string, fields any) (int, []byte, error) {
	b, err := json.Marshal(fields)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, s.sbURL+path, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// logLevel is the processes' TANDEM_LOG_LEVEL: info, or TANDEM_E2E_LOG_LEVEL
// (debug shows every message and inbound event, for a failure to read).
func logLevel() string {
	if l := os.Getenv("TANDEM_E2E_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}
