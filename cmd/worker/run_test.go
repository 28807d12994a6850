package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// TestMain lets the test binary act as the worker process: the tests below
// start it again with TANDEM_TEST_AS_WORKER=1 and signal it for real.
func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_TEST_AS_WORKER") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), nil, []string{"TANDEM_CONFIG="}, io.Discard)
	require.ErrorContains(t, err, "config: TANDEM_PROVIDER (or -provider) is required: one of ")
	require.ErrorContains(t, err, "stripe")
	err = run(context.Background(), []string{"-provider", "hubspot"}, []string{"TANDEM_CONFIG="}, io.Discard)
	require.ErrorContains(t, err, `TANDEM_PROVIDER "hubspot": unknown provider (known: `)
	err = run(context.Background(), []string{"-provider", "stripe"}, []string{"TANDEM_CONFIG="}, io.Discard)
	require.ErrorContains(t, err, "STRIPE_SECRET_KEY is required")
}

// system is a database, a vhost, an in-process relay and the Stripe fake;
// workers run as real processes.
type system struct {
	t    *testing.T
	st   *store.Store
	dsn  string
	amqp string
	fake *stripefake.Server
}

func newSystem(t *testing.T) *system {
	s := &system{t: t}
	s.st, s.dsn = testutil.NewStore(t)
	s.amqp = testutil.NewVhost(t)
	s.fake = stripefake.New(stripefake.Options{})
	t.Cleanup(s.fake.Close)
	_, err := s.fake.Listen("127.0.0.1:0")
	require.NoError(t, err)

	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := broker.Dial(ctx, s.amqp, quiet, broker.Options{
		Setup: func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{"stripe"}) },
	})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	pub := broker.NewPublisher(conn, broker.PublisherOptions{})
	r, err := relay.New(s.st, pub, relay.Config{PollInterval: 50 * time.Millisecond}, quiet, prometheus.NewRegistry())
	require.NoError(t, err)
	s.st.OnCommit(r.Notify)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// worker starts the worker as a separate process.
func (s *system) worker() (*exec.Cmd, *testutil.SyncBuffer, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(s.t, err)
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "-provider", "stripe")
	cmd.Env = append(os.Environ(), "TANDEM_TEST_AS_WORKER=1", "TANDEM_CONFIG=",
		"TANDEM_MYSQL_DSN="+s.dsn, "TANDEM_AMQP_URL="+s.amqp, "TANDEM_WORKER_ADDR="+addr,
		"STRIPE_SECRET_KEY="+stripefake.DefaultAPIKey, "STRIPE_API_BASE="+s.fake.URL(), "STRIPE_RATE_LIMIT=1000",
		"TANDEM_SHUTDOWN_TIMEOUT=10s", "TANDEM_WORKER_LEASE=2s")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(s.t, cmd.Start())
	s.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	require.Eventually(s.t, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 30*time.Second, 20*time.Millisecond, "worker never ready:\n%s", out)
	return cmd, out, addr
}

func (s *system) link(id string) store.Link {
	links, err := s.st.Links(context.Background(), id)
	require.NoError(s.t, err)
	if len(links[id]) == 0 {
		return store.Link{}
	}
	return links[id][0]
}

// TestWorkerKilledAfterStripeCallMakesNoDuplicate SIGKILLs the worker
// process while its create call is inside Stripe (the fake holds the
// response): Stripe commits, the worker never records or acks. The restarted
// worker gets the message again and must find the same customer.
func TestWorkerKilledAfterStripeCallMakesNoDuplicate(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	s.fake.SetFaults(stripefake.Faults{Latency: 2 * time.Second})
	cmd, out, _ := s.worker()
	u, err := s.st.CreateUser(context.Background(), store.NewUser{Email: "killed@example.com", Name: "Killed"}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.fake.InFlight() > 0 }, 20*time.Second, 5*time.Millisecond,
		"the worker never called Stripe:\n%s", out)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Zero(t, s.link(u.ID).SyncedVersion, "nothing recorded by the killed worker")

	s.fake.SetFaults(stripefake.Faults{})
	_, out2, _ := s.worker()
	require.Eventually(t, func() bool {
		l := s.link(u.ID)
		return l.Status == store.LinkSynced && l.SyncedVersion == 1
	}, 60*time.Second, 20*time.Millisecond, "never synced after restart:\n%s", out2)
	cs := s.fake.CustomersWithMetadata("tandem_user_id", u.ID)
	require.Len(t, cs, 1, "a second customer was created")
	require.Equal(t, "killed@example.com", cs[0].Email)
	require.Equal(t, *s.link(u.ID).RemoteID, cs[0].ID)
}

// TestSIGTERMStopsCleanly: the worker process exits 0 on SIGTERM, after
// syncing what it had.
func TestSIGTERMStopsCleanly(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	cmd, out, addr := s.worker()
	u, err := s.st.CreateUser(context.Background(), store.NewUser{Email: "term@example.com", Name: "Term"}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.link(u.ID).Status == store.LinkSynced }, 30*time.Second, 20*time.Millisecond, "%s", out)

	// The message is counted once it is acked, just after the link is
	// recorded.
	var body []byte
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `tandem_worker_messages_total{outcome="synced",provider="stripe"} 1`)
	}, 10*time.Second, 20*time.Millisecond, "the synced message was never counted")
	require.Contains(t, string(body), `tandem_provider_calls_total{op="upsert",outcome="ok",provider="stripe"} 1`)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status after SIGTERM; output:\n%s", out)
	require.Contains(t, out.String(), `"msg":"stopped"`)
	require.NotContains(t, out.String(), stripefake.DefaultAPIKey, "the secret key leaked into the logs")
}

// TestWorkerExitsWhenItsAddressIsTaken: a worker that cannot bind
// TANDEM_WORKER_ADDR serves no health, readiness or metrics, so it must not
// consume either: run returns the bind error (as the api and webhook do).
func TestWorkerExitsWhenItsAddressIsTaken(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer held.Close()
	logs := &testutil.SyncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- run(context.Background(), []string{"-provider", "stripe"}, []string{"TANDEM_CONFIG=",
			"TANDEM_MYSQL_DSN=" + s.dsn, "TANDEM_AMQP_URL=" + s.amqp, "TANDEM_WORKER_ADDR=" + held.Addr().String(),
			"STRIPE_SECRET_KEY=" + stripefake.DefaultAPIKey, "STRIPE_API_BASE=" + s.fake.URL()}, logs)
	}()
	select {
	case err := <-errc:
		require.ErrorContains(t, err, "listening on "+held.Addr().String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker kept running without its address; logs:\n%s", logs)
	}
	require.NotContains(t, logs.String(), `"msg":"started"`)
	require.NotContains(t, logs.String(), `"msg":"consuming"`)
}
