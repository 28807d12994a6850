package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/worker"
)

func amqpHost(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Host
}

func proxiedURL(t *testing.T, raw, addr string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.Host = addr
	return u.String()
}

// customerOf finds the fake's customer for a user (by metadata).
func customersOf(fake *stripefake.Server, userID string) []stripefake.Customer {
	return fake.CustomersWithMetadata("tandem_user_id", userID)
}

func TestCreateUpdateDeleteReachStripe(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{})
	ctx := context.Background()
	u, err := p.store.CreateUser(ctx, store.NewUser{Email: "ada@example.com", Name: "Ada", Phone: "+44 1",
		Metadata: map[string]string{"plan": "pro"}}, nil)
	require.NoError(t, err)
	p.waitSynced(20*time.Second, store.LinkSynced, u)

	l := p.link(u.ID)
	require.NotNil(t, l.RemoteID)
	c, ok := p.fake.Customer(*l.RemoteID)
	require.True(t, ok)
	require.Equal(t, "ada@example.com", c.Email)
	require.Equal(t, "Ada", c.Name)
	require.Equal(t, "+44 1", c.Phone)
	require.Equal(t, map[string]string{"plan": "pro", "tandem_user_id": u.ID}, c.Metadata)
	require.NotNil(t, l.PushedHash)
	require.NotNil(t, l.SyncedAt)
	require.Nil(t, l.LastError)

	name := "Ada King"
	u, err = p.store.UpdateUser(ctx, u.ID, store.Patch{Name: &name, Metadata: map[string]*string{"plan": nil}}, 0)
	require.NoError(t, err)
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	c, _ = p.fake.Customer(*l.RemoteID)
	require.Equal(t, "Ada King", c.Name)
	require.Equal(t, map[string]string{"tandem_user_id": u.ID}, c.Metadata, "a removed key is removed in Stripe")

	u, err = p.store.DeleteUser(ctx, u.ID, 0)
	require.NoError(t, err)
	p.waitSynced(20*time.Second, store.LinkDeleted, u)
	c, _ = p.fake.Customer(*l.RemoteID)
	require.True(t, c.Deleted)
	require.Equal(t, 1, p.fake.CountCreates())
}

// TestDuplicateMessagesMakeOneCustomer publishes every event a second time
// (as a relay may after a lost confirm): one customer per user.
func TestDuplicateMessagesMakeOneCustomer(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{workers: 2, cfg: worker.Config{Concurrency: 4}})
	ctx := context.Background()
	var users []store.User
	for i := range 20 {
		users = append(users, p.create(fmt.Sprintf("dup%d@example.com", i)))
	}
	// Replay the same events straight from the outbox.
	pub := broker.NewPublisher(p.pubConn, broker.PublisherOptions{})
	defer pub.Close()
	var msgs []broker.Message
	for _, u := range users {
		msgs = append(msgs, broker.Message{EventID: "dup-" + u.ID, Type: store.EventUserCreated, UserID: u.ID,
			Version: 1, OccurredAt: u.CreatedAt, Origin: store.OriginAPI})
	}
	for range 2 {
		_, err := pub.Publish(ctx, msgs)
		require.NoError(t, err)
	}
	p.waitSynced(30*time.Second, store.LinkSynced, users...)
	require.Eventually(t, func() bool { return p.queueDepth(broker.WorkQueue("stripe")) == 0 }, 20*time.Second, 20*time.Millisecond)
	for _, u := range users {
		require.Len(t, customersOf(p.fake, u.ID), 1, "user %s", u.ID)
	}
	require.Equal(t, len(users), p.fake.CountCreates())
}

// TestRapidPatchesEndOnTheLastVersion: 50 quick PATCHes of one user with
// several workers running concurrently; Stripe must end on the last one.
func TestRapidPatchesEndOnTheLastVersion(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{workers: 2, cfg: worker.Config{Concurrency: 2}})
	ctx := context.Background()
	u := p.create("rapid@example.com")
	for i := range 50 {
		name := fmt.Sprintf("Name %02d", i)
		var err error
		u, err = p.store.UpdateUser(ctx, u.ID, store.Patch{Name: &name, Metadata: map[string]*string{"n": &name}}, 0)
		require.NoError(t, err)
	}
	require.EqualValues(t, 51, u.Version)
	p.waitSynced(30*time.Second, store.LinkSynced, u)
	require.Eventually(t, func() bool { return p.queueDepth(broker.WorkQueue("stripe")) == 0 }, 20*time.Second, 20*time.Millisecond)
	cs := customersOf(p.fake, u.ID)
	require.Len(t, cs, 1)
	require.Equal(t, "Name 49", cs[0].Name)
	require.Equal(t, "Name 49", cs[0].Metadata["n"])
	require.EqualValues(t, 51, p.link(u.ID).SyncedVersion)
}

// TestPermanentFailureDeadLetters: 50 metadata keys plus Tandem's own
// tandem_user_id cannot fit Stripe's 50: dead-lettered at once, link failed.
func TestPermanentFailureDeadLetters(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{})
	md := map[string]string{}
	for i := range 50 {
		md[fmt.Sprintf("k%02d", i)] = "v"
	}
	u, err := p.store.CreateUser(context.Background(), store.NewUser{Email: "full@example.com", Name: "Full", Metadata: md}, nil)
	require.NoError(t, err)
	l := p.waitStatus(20*time.Second, u.ID, store.LinkFailed)
	require.Contains(t, deref(l.LastError), "metadata")
	require.Eventually(t, func() bool { return p.queueDepth(broker.DeadQueue("stripe")) == 1 }, 10*time.Second, 20*time.Millisecond)

	d := p.takeDeadLetter()
	require.Contains(t, fmt.Sprint(d.Headers[broker.HeaderError]), "metadata")
	msg, err := broker.Decode(d.Body)
	require.NoError(t, err)
	require.Equal(t, u.ID, msg.UserID)
	require.Empty(t, customersOf(p.fake, u.ID), "nothing half-created")
}

// TestWorkerSurvivesBrokerOutage cuts the workers' connection to RabbitMQ,
// writes while it is down, restores it: everything is synced.
func TestWorkerSurvivesBrokerOutage(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{})
	first := p.create("before@example.com")
	p.waitSynced(20*time.Second, store.LinkSynced, first)

	p.proxy.Cut()
	var during []store.User
	for i := range 20 {
		during = append(during, p.create(fmt.Sprintf("during%d@example.com", i)))
	}
	// The relay (not behind the proxy) queues them; no worker can take them.
	require.Eventually(t, func() bool { return p.queueDepth(broker.WorkQueue("stripe")) >= 20 }, 30*time.Second, 20*time.Millisecond)
	p.proxy.Restore()
	p.waitSynced(60*time.Second, store.LinkSynced, during...)
	require.Equal(t, 21, p.fake.CountCreates())
}

// crashAfterPush pushes to Stripe, then fails as a process killed before it
// could record the outcome and ack would: nothing is recorded and the
// message goes back to the queue.
type crashAfterPush struct {
	integrations.Provider
	crashes atomic.Int32
}

func (c *crashAfterPush) Upsert(ctx context.Context, cu integrations.Customer, l integrations.Link) (integrations.Result, error) {
	res, err := c.Provider.Upsert(ctx, cu, l)
	if err == nil && c.crashes.Add(1) == 1 {
		_ = res // lost with the process
		return integrations.Result{}, fmt.Errorf("simulated crash after the Stripe call: %w", context.Canceled)
	}
	return res, err
}

// TestRedeliveryAfterCrashMakesNoSecondCustomer: the first push reaches
// Stripe but its outcome is lost; the retried message finds no remote id and
// creates again, with the same idempotency key: still one customer.
func TestRedeliveryAfterCrashMakesNoSecondCustomer(t *testing.T) {
	t.Parallel()
	crash := &crashAfterPush{}
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{}, wrap: func(pr integrations.Provider) integrations.Provider {
		crash.Provider = pr
		return crash
	}})
	u := p.create("crash@example.com")
	p.waitSynced(30*time.Second, store.LinkSynced, u)
	require.GreaterOrEqual(t, crash.crashes.Load(), int32(2))
	require.Len(t, customersOf(p.fake, u.ID), 1)
	require.Equal(t, 1, p.fake.CountCreates())
}

// TestProviderFaultsConverge: with 30 % of Stripe calls answering 429 and
// 10 % 500, 300 users all end synced, each with exactly one customer.
func TestProviderFaultsConverge(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{workers: 2, cfg: worker.Config{Concurrency: 8, MaxAttempts: 40}})
	p.fake.SetFaults(stripefake.Faults{RateLimitRatio: 0.3, ServerErrorRatio: 0.1})
	var users []store.User
	for i := range 300 {
		users = append(users, p.create(fmt.Sprintf("faulty%d@example.com", i)))
	}
	p.waitSynced(120*time.Second, store.LinkSynced, users...)
	stats := p.fake.Stats()
	require.Greater(t, stats.InjectedRateLimits, 50, "faults were injected")
	require.Greater(t, stats.InjectedServerErrors, 10)
	for _, u := range users {
		require.Len(t, customersOf(p.fake, u.ID), 1, "user %s", u.ID)
	}
	require.Equal(t, 300, p.fake.CountCreates())
	require.Zero(t, p.queueDepth(broker.DeadQueue("stripe")))
}

// TestTopologyMismatchKeepsTheWorkerUp: a work queue declared elsewhere
// with other arguments makes the worker unready and loud, not crash.
func TestTopologyMismatchKeepsTheWorkerUp(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	url := testutil.NewVhost(t)
	raw, err := amqp.Dial(url)
	require.NoError(t, err)
	ch, err := raw.Channel()
	require.NoError(t, err)
	_, err = ch.QueueDeclare(broker.WorkQueue("stripe"), true, false, false, false, nil) // classic, not quorum
	require.NoError(t, err)
	raw.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := broker.Dial(ctx, url, quiet, broker.Options{
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{"stripe"}) },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	defer conn.Close()
	fake := stripefake.New(stripefake.Options{Logger: quiet})
	defer fake.Close()
	_, err = fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: fake.URL(), RateLimit: 25}, stripe.Options{Logger: quiet})
	require.NoError(t, err)
	w, err := worker.New(a, st, conn, broker.NewPublisher(conn, broker.PublisherOptions{}), worker.Config{}, quiet, prometheus.NewRegistry())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	require.Eventually(t, func() bool {
		err := conn.Healthy(ctx)
		return err != nil && errors.Is(err, broker.ErrTopologyMismatch)
	}, 20*time.Second, 20*time.Millisecond, "readiness should name the mismatch")
	select {
	case err := <-done:
		t.Fatalf("the worker exited on a topology mismatch: %v", err)
	default:
	}
	cancel()
	require.NoError(t, <-done)
}

// lossyProvider fails pushes on demand, like a network that drops the
// answer: after the provider applied the write, or before it reached it.
type lossyProvider struct {
	integrations.Provider
	mode atomic.Int32 // lossNone, lossAfterApply or lossBefore
}

const (
	lossNone int32 = iota
	lossAfterApply
	lossBefore
)

// wrap makes l decorate inner (pipelineOpts.wrap).
func (l *lossyProvider) wrap(inner integrations.Provider) integrations.Provider {
	l.Provider = inner
	return l
}

func (l *lossyProvider) Upsert(ctx context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error) {
	switch l.mode.Load() {
	case lossAfterApply:
		if _, err := l.Provider.Upsert(ctx, c, link); err != nil {
			return integrations.Result{}, err
		}
		return integrations.Result{}, errors.New("connection reset after the write (injected)")
	case lossBefore:
		return integrations.Result{}, errors.New("connection refused (injected)")
	}
	return l.Provider.Upsert(ctx, c, link)
}

// TestPushWhoseAnswerWasLostIsNotTakenForTheOldState: a push that failed
// after the provider applied it leaves the provider's state unknown. When
// the user then changes back to the state pushed before, the worker must
// push it, not skip it as "already there" (Stripe would keep the lost
// push's state for good).
func TestPushWhoseAnswerWasLostIsNotTakenForTheOldState(t *testing.T) {
	t.Parallel()
	lossy := &lossyProvider{}
	p := newPipeline(t, pipelineOpts{wrap: lossy.wrap})
	ctx := context.Background()
	u := p.create("lost@example.com")
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	remote := *p.link(u.ID).RemoteID

	lossy.mode.Store(lossAfterApply)
	b := "Changed"
	_, err := p.store.UpdateUser(ctx, u.ID, store.Patch{Name: &b}, 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c, _ := p.fake.Customer(remote)
		return c.Name == "Changed" && p.link(u.ID).LastError != nil
	}, 20*time.Second, 10*time.Millisecond, "the lost push reached Stripe and failed in Tandem")

	lossy.mode.Store(lossBefore)
	back := u.Name
	u, err = p.store.UpdateUser(ctx, u.ID, store.Patch{Name: &back}, 0)
	require.NoError(t, err)
	require.EqualValues(t, 3, u.Version)
	lossy.mode.Store(lossNone)
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	c, _ := p.fake.Customer(remote)
	require.Equal(t, back, c.Name, "Stripe must end on the user's state")
}

// TestDeleteAfterALostCreateDeletesTheCustomer: the create reached Stripe
// but its answer was lost (or the worker died before recording it), so
// Tandem has no customer id; the user is then deleted. The worker must not
// leave that customer live.
func TestDeleteAfterALostCreateDeletesTheCustomer(t *testing.T) {
	t.Parallel()
	lossy := &lossyProvider{}
	lossy.mode.Store(lossAfterApply)
	p := newPipeline(t, pipelineOpts{wrap: lossy.wrap})
	ctx := context.Background()
	u := p.create("orphan@example.com")
	require.Eventually(t, func() bool {
		return len(customersOf(p.fake, u.ID)) == 1 && p.link(u.ID).LastError != nil
	}, 20*time.Second, 10*time.Millisecond, "the create reached Stripe and failed in Tandem")
	require.Nil(t, p.link(u.ID).RemoteID)

	lossy.mode.Store(lossBefore)
	u, err := p.store.DeleteUser(ctx, u.ID, 0)
	require.NoError(t, err)
	lossy.mode.Store(lossNone)
	p.waitSynced(20*time.Second, store.LinkDeleted, u)
	cs := customersOf(p.fake, u.ID)
	require.Len(t, cs, 1, "no second customer")
	require.True(t, cs[0].Deleted, "the customer of a deleted user is deleted")
	require.Equal(t, cs[0].ID, deref(p.link(u.ID).RemoteID), "the link records which customer was deleted")
}

// downStore fails Sync like an unreachable MySQL while down is set.
type downStore struct {
	worker.Store
	down  atomic.Bool
	calls atomic.Int32
}

func (d *downStore) wrap(inner worker.Store) worker.Store {
	d.Store = inner
	return d
}

func (d *downStore) Sync(ctx context.Context, userID, provider string, ttl time.Duration, plan store.PlanFunc, push store.PushFunc) error {
	d.calls.Add(1)
	if d.down.Load() {
		return errors.New("reading user and link: dial tcp 127.0.0.1:3306: connect: connection refused (injected)")
	}
	return d.Store.Sync(ctx, userID, provider, ttl, plan, push)
}

// TestDatabaseOutageDoesNotUseUpTheRetryBudget: while MySQL is down, a
// message is retried past MaxAttempts instead of being dead-lettered, and
// syncs once MySQL is back.
func TestDatabaseOutageDoesNotUseUpTheRetryBudget(t *testing.T) {
	t.Parallel()
	ds := &downStore{}
	ds.down.Store(true)
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{MaxAttempts: 2}, wrapStore: ds.wrap})
	u := p.create("outage@example.com")
	require.Eventually(t, func() bool { return ds.calls.Load() >= 5 }, 20*time.Second, 10*time.Millisecond,
		"the message is tried again and again past MaxAttempts (2)")
	require.Zero(t, p.queueDepth(broker.DeadQueue("stripe")), "nothing dead-lettered while MySQL was down")
	ds.down.Store(false)
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	require.Zero(t, p.queueDepth(broker.DeadQueue("stripe")))
	require.Len(t, customersOf(p.fake, u.ID), 1)
}

// TestTransientProviderFailuresDeadLetterAfterMaxAttempts: the provider's
// transient failures do use up the budget.
func TestTransientProviderFailuresDeadLetterAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	lossy := &lossyProvider{}
	lossy.mode.Store(lossBefore)
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{MaxAttempts: 2}, wrap: lossy.wrap})
	u := p.create("budget@example.com")
	l := p.waitStatus(20*time.Second, u.ID, store.LinkFailed)
	require.Contains(t, deref(l.LastError), "gave up after 2 attempts")
	require.Eventually(t, func() bool { return p.queueDepth(broker.DeadQueue("stripe")) == 1 }, 20*time.Second, 10*time.Millisecond)
}

// failingRepublisher refuses retries while failing is set, like a retry
// queue that is gone.
type failingRepublisher struct {
	worker.Republisher
	failing atomic.Bool
}

func (f *failingRepublisher) wrap(inner worker.Republisher) worker.Republisher {
	f.Republisher = inner
	return f
}

func (f *failingRepublisher) PublishRetry(ctx context.Context, provider string, d amqp.Delivery, attempt int, cause string) (time.Duration, error) {
	if f.failing.Load() {
		return 0, errors.New("publishing the retry: NO_ROUTE (injected)")
	}
	return f.Republisher.PublishRetry(ctx, provider, d, attempt, cause)
}

// TestUnreschedulableMessageIsHandedBackAfterAPause: when neither a retry
// nor a dead letter can be published, the message goes back to RabbitMQ
// (nothing is lost), but only after a pause: its redelivery calls the
// provider again, so handing it back at once would be a hot loop.
func TestUnreschedulableMessageIsHandedBackAfterAPause(t *testing.T) {
	t.Parallel()
	lossy := &lossyProvider{}
	lossy.mode.Store(lossBefore)
	fr := &failingRepublisher{}
	fr.failing.Store(true)
	var pauses atomic.Int32
	var wrongDelay atomic.Bool
	cfg := worker.WithPause(worker.Config{RequeueDelay: 7 * time.Millisecond}, func(ctx context.Context, d time.Duration) {
		if d != 7*time.Millisecond {
			wrongDelay.Store(true)
		}
		pauses.Add(1)
	})
	p := newPipeline(t, pipelineOpts{cfg: cfg, wrap: lossy.wrap, wrapPub: fr.wrap})
	u := p.create("requeue@example.com")
	require.Eventually(t, func() bool { return pauses.Load() >= 3 }, 20*time.Second, 5*time.Millisecond,
		"each hand-back is preceded by a pause")
	require.False(t, wrongDelay.Load(), "the pause is RequeueDelay")

	fr.failing.Store(false)
	lossy.mode.Store(lossNone)
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	require.Len(t, customersOf(p.fake, u.ID), 1)
}

// unseenStore answers Sync with store.ErrNotFound for each user's first
// push: the worker read the message before it could see the user's
// transaction (the pipeline bench caught this once in ~40,000 creates).
type unseenStore struct {
	worker.Store
	mu   sync.Mutex
	seen map[string]bool
}

func (u *unseenStore) wrap(inner worker.Store) worker.Store {
	u.Store, u.seen = inner, map[string]bool{}
	return u
}

func (u *unseenStore) Sync(ctx context.Context, userID, provider string, ttl time.Duration, plan store.PlanFunc, push store.PushFunc) error {
	u.mu.Lock()
	first := !u.seen[userID]
	u.seen[userID] = true
	u.mu.Unlock()
	if first {
		return fmt.Errorf("syncing user %s to %s: %w", userID, provider, store.ErrNotFound)
	}
	return u.Store.Sync(ctx, userID, provider, ttl, plan, push)
}

// TestMessageReadBeforeItsUserIsVisibleIsNotLost: a message whose user the
// worker cannot read yet is retried, not acked as done; the user syncs.
func TestMessageReadBeforeItsUserIsVisibleIsNotLost(t *testing.T) {
	t.Parallel()
	us := &unseenStore{}
	p := newPipeline(t, pipelineOpts{wrapStore: us.wrap})
	u := p.create("unseen@example.com")
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	require.Len(t, customersOf(p.fake, u.ID), 1)
	require.Zero(t, p.queueDepth(broker.DeadQueue("stripe")))
}

// TestMessageForNoUserDeadLetters: a message naming a user that never
// appears uses up its attempts and is dead-lettered, saying so.
func TestMessageForNoUserDeadLetters(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{MaxAttempts: 2}})
	ghost := "01900000-0000-7000-8000-000000000000"
	require.NoError(t, p.store.AppendOutbox(context.Background(), []store.OutboxEvent{{EventID: "01900000-0000-7000-8000-0000000000e1",
		UserID: ghost, Version: 1, Type: store.EventUserCreated, Origin: store.OriginAPI, CreatedAt: time.Now()}}))
	require.Eventually(t, func() bool { return p.queueDepth(broker.DeadQueue("stripe")) == 1 }, 20*time.Second, 10*time.Millisecond)
	d := p.takeDeadLetter()
	require.Contains(t, fmt.Sprint(d.Headers[broker.HeaderError]), "no user "+ghost)
}
