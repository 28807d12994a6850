package container

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/sandbox"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// Secrets of the test system; none of them is real.
const (
	apiToken      = "container-token-0123456789"
	stripeKey     = "sk_test_container"
	webhookSecret = "whsec_container_only"
)

// system is Tandem running from the image: the migration, then the api, the
// webhook and one Stripe worker as containers, against a database and vhost
// of the test's own and the sandbox served by the test process.
type system struct {
	d                             *daemon
	image                         string
	envFile                       string
	sb                            *sandbox.Sandbox
	sbURL                         string
	apiAddr, webhookAddr, wrkAddr string
	api, webhook, worker          *container
	ready                         map[string]time.Duration // docker run to /readyz 200, per process
	processReady                  map[string]time.Duration // the process's start (docker's StartedAt) to /readyz 200
	client                        *http.Client
}

// freeAddr is testutil.FreeAddr.
func freeAddr(tb testing.TB) string { return testutil.FreeAddr(tb) }

// startSystem runs the migration as a container to its end (what the
// chart's pre-install/pre-upgrade Job does), then starts the api, the
// webhook and a Stripe worker, all with -migrate=false where the command has
// it, and waits until each is ready. The containers are stopped (and must
// exit 0) when tb ends.
func startSystem(tb testing.TB, d *daemon, image string, extraEnv ...string) *system {
	tb.Helper()
	s := &system{d: d, image: image, ready: map[string]time.Duration{}, processReady: map[string]time.Duration{},
		apiAddr: freeAddr(tb), webhookAddr: freeAddr(tb), wrkAddr: freeAddr(tb),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	dsn := testutil.NewDatabase(tb)
	vhost := testutil.NewVhost(tb)

	s.sb = sandbox.New(sandbox.Config{APIKey: stripeKey, WebhookURL: "http://" + s.webhookAddr + "/webhook/stripe",
		WebhookSecret: webhookSecret, Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sandbox: %v", err)
	}
	srv := &http.Server{Handler: s.sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.sbURL = "http://" + ln.Addr().String()
	tb.Cleanup(func() {
		_ = srv.Close()
		s.sb.Close()
	})

	// The settings a Kubernetes pod gets from the chart's ConfigMap and
	// Secret, as an env file (the values stay off the command line).
	env := []string{
		"TANDEM_MYSQL_DSN=" + dsn,
		"TANDEM_AMQP_URL=" + vhost,
		"TANDEM_API_TOKENS=" + apiToken,
		"TANDEM_PROVIDERS=stripe",
		"TANDEM_API_ADDR=" + s.apiAddr,
		"TANDEM_WEBHOOK_ADDR=" + s.webhookAddr,
		"TANDEM_WORKER_ADDR=" + s.wrkAddr,
		"TANDEM_LOG_LEVEL=info",
		"STRIPE_SECRET_KEY=" + stripeKey,
		"STRIPE_WEBHOOK_SECRET=" + webhookSecret,
		"STRIPE_API_BASE=" + s.sbURL,
	}
	// extraEnv replaces the settings it names.
	for _, kv := range extraEnv {
		name, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		env = append(env, kv)
	}
	// And a configuration file mounted read-only, as the chart's configFile
	// is: the non-root user must be able to read it.
	dir := tb.TempDir()
	s.envFile = filepath.Join(dir, "tandem.env")
	if err := os.WriteFile(s.envFile, []byte(strings.Join(env, "\n")+"\nTANDEM_CONFIG=/etc/tandem/tandem.yaml\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	configFile := filepath.Join(dir, "tandem.yaml")
	if err := os.WriteFile(configFile, []byte("relay_batch_size: 100\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	opts := []string{"--env-file", s.envFile, "--volume", configFile + ":/etc/tandem/tandem.yaml:ro"}

	suffix := testutil.Suffix()
	d.runToEnd(tb, "tandem-migrate-"+suffix, image, opts, "api", "-migrate-only")

	var started []*container
	tb.Cleanup(func() {
		// Workers first: they hand their in-flight messages back.
		for i := len(started) - 1; i >= 0; i-- {
			if err := started[i].stop(); err != nil {
				tb.Errorf("graceful stop: %v", err)
			}
		}
		if tb.Failed() {
			for _, c := range started {
				tb.Logf("==== container %s:\n%s", c.name, c.logs())
			}
		}
	})
	for _, p := range []struct {
		name string
		addr string
		args []string
		into **container
	}{
		{"api", s.apiAddr, []string{"api", "-migrate=false"}, &s.api},
		{"webhook", s.webhookAddr, []string{"webhook"}, &s.webhook},
		{"worker", s.wrkAddr, []string{"worker", "-provider", "stripe", "-migrate=false"}, &s.worker},
	} {
		begin := time.Now()
		c := d.run(tb, "tandem-"+p.name+"-"+suffix, image, opts, p.args...)
		started = append(started, c)
		c.waitReady(tb, p.addr)
		readyAt := time.Now()
		s.ready[p.name] = readyAt.Sub(begin)
		started, err := time.Parse(time.RFC3339Nano, d.must(tb, "inspect", "-f", "{{.State.StartedAt}}", c.id))
		if err != nil {
			tb.Fatalf("container %s: its start time: %v", c.name, err)
		}
		s.processReady[p.name] = readyAt.Sub(started)
		*p.into = c
	}
	return s
}

// user is the part of a Tandem user the test reads.
type user struct {
	ID      string `json:"id"`
	Email   string `json:"email"`
	Name    string `json:"name"`
	Version int    `json:"version"`
	Sync    map[string]struct {
		Status   string `json:"status"`
		RemoteID string `json:"remote_id"`
	} `json:"sync"`
}

// call sends a JSON request and decodes a JSON answer into out (if not nil);
// it returns the status.
func (s *system) call(ctx context.Context, method, url string, body, out any, header ...string) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decoding %q: %w", method, url, b, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	return resp.StatusCode, nil
}

// api calls the REST API with the token.
func (s *system) apiCall(ctx context.Context, method, path string, body, out any) (int, error) {
	return s.call(ctx, method, "http://"+s.apiAddr+path, body, out, "Authorization", "Bearer "+apiToken)
}

// getUser reads one user.
func (s *system) getUser(ctx context.Context, id string) (user, error) {
	var u user
	_, err := s.apiCall(ctx, http.MethodGet, "/v1/users/"+id, nil, &u)
	return u, err
}

// waitFor polls cond every 50 ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// TestImageRunsTheSystem builds the image, runs Tandem from it and follows
// one user through the whole loop: created through the REST API, synced to
// the sandbox, edited in the sandbox's dashboard, and the edit applied to
// the user by the webhook container.
func TestImageRunsTheSystem(t *testing.T) {
	if testing.Short() {
		t.Skip("container: skipped in -short mode")
	}
	t.Parallel()
	begin := time.Now()
	d := startDaemon(t)
	daemonUp := time.Since(begin)
	image := d.buildImage(t)
	t.Logf("dockerd answered after %v; image built in %v", daemonUp.Round(time.Millisecond), (time.Since(begin) - daemonUp).Round(time.Millisecond))

	// The image as the chart expects it: a numeric non-root user, and no
	// shell to run.
	if u := d.must(t, "image", "inspect", "-f", "{{.Config.User}}", image); u != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532 (numeric, non-root: runAsNonRoot can check it)", u)
	}
	if out, err := d.output(context.Background(), "run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", image, "-c", "true"); err == nil {
		t.Errorf("the image runs a shell (%q); it should have none", out)
	} else if !strings.Contains(err.Error(), "no such file or directory") && !strings.Contains(err.Error(), "not found") {
		t.Errorf("running /bin/sh in the image failed otherwise than for want of a shell: %v", err)
	}

	s := startSystem(t, d, image)
	t.Logf("ready after docker run: %v; after the process started: %v", s.ready, s.processReady)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 1. A user created through the REST API of the api container…
	var created user
	if _, err := s.apiCall(ctx, http.MethodPost, "/v1/users",
		map[string]any{"email": "ada@example.com", "name": "Ada Lovelace", "metadata": map[string]string{"plan": "pro"}}, &created); err != nil {
		t.Fatal(err)
	}

	// 2. …is pushed by the worker container to the sandbox, and shows synced.
	var synced user
	if err := waitFor(ctx, func() bool {
		u, err := s.getUser(ctx, created.ID)
		if err != nil {
			t.Logf("reading the user: %v", err)
			return false
		}
		synced = u
		return u.Sync["stripe"].Status == "synced" && u.Sync["stripe"].RemoteID != ""
	}); err != nil {
		t.Fatalf("the user never showed synced to Stripe (last read %+v): %v", synced, err)
	}
	cus := synced.Sync["stripe"].RemoteID
	var customers []struct {
		ID       string            `json:"id"`
		Email    string            `json:"email"`
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	if _, err := s.call(ctx, http.MethodGet, s.sbURL+"/_sandbox/customers", nil, &customers); err != nil {
		t.Fatal(err)
	}
	if len(customers) != 1 || customers[0].ID != cus || customers[0].Email != "ada@example.com" ||
		customers[0].Name != "Ada Lovelace" || customers[0].Metadata["tandem_user_id"] != created.ID {
		t.Fatalf("the sandbox holds %+v, want one customer %s for user %s, ada@example.com, Ada Lovelace", customers, cus, created.ID)
	}

	// 3. An edit in the sandbox's dashboard comes back through the webhook
	// container: the user takes the new name, as version 2.
	if _, err := s.call(ctx, http.MethodPost, s.sbURL+"/_sandbox/customers/"+cus, map[string]string{"name": "Ada King"}, nil); err != nil {
		t.Fatal(err)
	}
	var edited user
	if err := waitFor(ctx, func() bool {
		u, err := s.getUser(ctx, created.ID)
		if err != nil {
			return false
		}
		edited = u
		return u.Name == "Ada King"
	}); err != nil {
		t.Fatalf("the dashboard edit never reached the user (last read %+v): %v", edited, err)
	}
	if edited.Version != 2 {
		t.Errorf("after the dashboard edit the user is version %d, want 2", edited.Version)
	}
	if st := s.sb.Fake.Stats(); st.Requests == 0 {
		t.Errorf("the sandbox counted no API request: %+v", st)
	}
}
