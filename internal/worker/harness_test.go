package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
	"github.com/tandem-sync/tandem/internal/worker"
)

var quiet = slog.New(slog.NewJSONHandler(io.Discard, nil))

// pipeline is the outbound path on real MariaDB and RabbitMQ: store →
// outbox relay → queue → workers → the Stripe fake.
type pipeline struct {
	t       *testing.T
	ctx     context.Context
	store   *store.Store
	dsn     string
	amqpURL string
	fake    *stripefake.Server
	proxy   *tcpproxy.Proxy // between the workers and RabbitMQ
	pubConn *broker.Conn
	cfg     worker.Config
	tiers   []time.Duration
	wstore  worker.Store // what the workers use: store, or wrapStore(store)
	wrapPub func(worker.Republisher) worker.Republisher
}

type pipelineOpts struct {
	// tiers are the retry delays (default: short ones, for tests).
	tiers   []time.Duration
	workers int
	cfg     worker.Config
	// wrap decorates the provider of each worker.
	wrap func(integrations.Provider) integrations.Provider
	// wrapStore decorates the store of each worker.
	wrapStore func(worker.Store) worker.Store
	// wrapPub decorates the retry publisher of each worker.
	wrapPub func(worker.Republisher) worker.Republisher
}

func newPipeline(t *testing.T, o pipelineOpts) *pipeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeline{t: t, ctx: ctx, cfg: o.cfg, tiers: o.tiers, wrapPub: o.wrapPub}
	if p.tiers == nil {
		p.tiers = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second}
	}
	t.Cleanup(cancel)
	p.store, p.dsn = testutil.NewStore(t)
	p.wstore = p.store
	if o.wrapStore != nil {
		p.wstore = o.wrapStore(p.store)
	}
	p.amqpURL = testutil.NewVhost(t)
	p.fake = stripefake.New(stripefake.Options{Logger: quiet})
	t.Cleanup(p.fake.Close)
	_, err := p.fake.Listen("127.0.0.1:0")
	require.NoError(t, err)

	// The relay publishes through its own connection.
	p.pubConn = p.dial(p.amqpURL, "relay")
	pub := broker.NewPublisher(p.pubConn, broker.PublisherOptions{})
	t.Cleanup(func() { pub.Close() })
	r, err := relay.New(p.store, pub, relay.Config{PollInterval: 50 * time.Millisecond}, quiet, prometheus.NewRegistry())
	require.NoError(t, err)
	p.store.OnCommit(r.Notify)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = r.Run(relayCtx) }()
	t.Cleanup(func() { stopRelay(); <-relayDone }) // runs before the connection closes

	// Workers reach RabbitMQ through a proxy the test can cut.
	p.proxy = tcpproxy.New(t, amqpHost(t, p.amqpURL))
	for i := range max(o.workers, 1) {
		p.startWorker(fmt.Sprintf("w%d", i), o.wrap)
	}
	return p
}

func (p *pipeline) dial(url, name string) *broker.Conn {
	p.t.Helper()
	conn, err := broker.Dial(p.ctx, url, quiet, broker.Options{
		Name:       name,
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{"stripe"}, p.tiers...) },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	require.NoError(p.t, err)
	p.t.Cleanup(func() { conn.Close() })
	require.NoError(p.t, conn.WaitReady(p.ctx))
	return conn
}

func (p *pipeline) adapter() integrations.Provider {
	p.t.Helper()
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: p.fake.URL(), RateLimit: 10000},
		stripe.Options{Logger: quiet})
	require.NoError(p.t, err)
	return a
}

// startWorker runs one more worker; it stops when the returned func is
// called or the test ends.
func (p *pipeline) startWorker(name string, wrap func(integrations.Provider) integrations.Provider) (stop func()) {
	p.t.Helper()
	var prov integrations.Provider = p.adapter()
	cfg := p.cfg
	cfg.Finder, _ = prov.(integrations.Finder)
	cfg.Matcher, _ = prov.(integrations.Matcher)
	if wrap != nil {
		prov = wrap(prov)
	}
	conn := p.dial(proxiedURL(p.t, p.amqpURL, p.proxy.Addr()), name)
	var pub worker.Republisher = broker.NewPublisher(conn, broker.PublisherOptions{RetryTiers: p.tiers})
	if p.wrapPub != nil {
		pub = p.wrapPub(pub)
	}
	w, err := worker.New(prov, p.wstore, conn, pub, cfg, quiet, prometheus.NewRegistry())
	require.NoError(p.t, err)
	ctx, cancel := context.WithCancel(p.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			p.t.Errorf("worker %s: %v", name, err)
		}
	}()
	stop = func() { cancel(); <-done }
	p.t.Cleanup(stop) // runs before the connection closes
	return stop
}

// link returns the user's stripe link (zero if none).
func (p *pipeline) link(userID string) store.Link {
	links, err := p.store.Links(context.Background(), userID)
	require.NoError(p.t, err)
	for _, l := range links[userID] {
		if l.Provider == "stripe" {
			return l
		}
	}
	return store.Link{}
}

// waitSynced waits until every user's link records its current version
// with the given status.
func (p *pipeline) waitSynced(timeout time.Duration, status string, users ...store.User) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, u := range users {
		for {
			l := p.link(u.ID)
			if l.SyncedVersion >= u.Version && l.Status == status {
				break
			}
			if time.Now().After(deadline) {
				p.t.Fatalf("user %s never reached %s at version %d: link %+v (last error %v)", u.ID, status, u.Version, l, deref(l.LastError))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (p *pipeline) waitStatus(timeout time.Duration, userID, status string) store.Link {
	p.t.Helper()
	var l store.Link
	require.Eventually(p.t, func() bool {
		l = p.link(userID)
		return l.Status == status
	}, timeout, 10*time.Millisecond, "link of %s never became %s", userID, status)
	return l
}

// queueDepth counts ready messages in a queue of the test's vhost.
func (p *pipeline) queueDepth(queue string) int {
	p.t.Helper()
	ch, err := p.pubConn.Channel()
	require.NoError(p.t, err)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(p.t, err)
	return q.Messages
}

func (p *pipeline) create(email string) store.User {
	p.t.Helper()
	u, err := p.store.CreateUser(context.Background(), store.NewUser{Email: email, Name: "User " + email}, nil)
	require.NoError(p.t, err)
	return u
}

// takeDeadLetter takes the message at the head of the stripe dead queue.
func (p *pipeline) takeDeadLetter() amqp.Delivery {
	p.t.Helper()
	ch, err := p.pubConn.Channel()
	require.NoError(p.t, err)
	defer ch.Close()
	d, ok, err := ch.Get(broker.DeadQueue("stripe"), true)
	require.NoError(p.t, err)
	require.True(p.t, ok, "a dead letter")
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
