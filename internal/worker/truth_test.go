package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/worker"
)

// TestServerErrorAfterTheWriteMakesNoSecondCustomer (issue 10, finding 2):
// Stripe made the customer, answered 500 and saved that 500 under the create
// key. The retry neither replays the key for a day nor creates a second
// customer: it finds the first by the email the create carried. The same
// holds a day later, when Stripe has forgotten the key. An update that
// answered 500 after the write is retried with a key of its own.
func TestServerErrorAfterTheWriteMakesNoSecondCustomer(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{MaxAttempts: 3}})
	ctx := context.Background()

	p.fake.FailAfterWrite(1)
	u := p.create("saved500@example.com")
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	require.Len(t, customersOf(p.fake, u.ID), 1, "no second customer")

	p.fake.ExpireIdempotencyKeys() // a day later
	name := "After a day"
	u, err := p.store.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	p.fake.FailAfterWrite(1)
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	cs := customersOf(p.fake, u.ID)
	require.Len(t, cs, 1, "no second customer")
	require.Equal(t, "After a day", cs[0].Name, "the update that answered 500 was retried with a new key, not stuck")
}

// throttled answers the first n calls with a 429 and then calls the provider.
type throttled struct {
	integrations.Provider
	n, calls atomic.Int32
}

func (t *throttled) Upsert(ctx context.Context, c integrations.Customer, l integrations.Link) (integrations.Result, error) {
	t.calls.Add(1)
	if t.n.Add(-1) >= 0 {
		return integrations.Result{}, integrations.RateLimited(errors.New("429 (injected)"), 0)
	}
	return t.Provider.Upsert(ctx, c, l)
}

// TestRateLimitsSpendNoAttempts (finding 9): a provider that throttles for
// longer than MaxAttempts failures would last does not dead-letter the user.
func TestRateLimitsSpendNoAttempts(t *testing.T) {
	t.Parallel()
	th := &throttled{}
	th.n.Store(6)
	p := newPipeline(t, pipelineOpts{cfg: worker.Config{MaxAttempts: 2}, wrap: func(pr integrations.Provider) integrations.Provider {
		th.Provider = pr
		return th
	}})
	u := p.create("throttled@example.com")
	p.waitSynced(30*time.Second, store.LinkSynced, u)
	require.GreaterOrEqual(t, th.calls.Load(), int32(7), "six 429s, then the push")
	require.Zero(t, p.queueDepth("tandem.dead.stripe"))
}

// fencing applies a remote edit of the user while its push is in flight,
// once.
type fencing struct {
	integrations.Provider
	st   *store.Store
	done atomic.Bool
}

func (f *fencing) Upsert(ctx context.Context, c integrations.Customer, l integrations.Link) (integrations.Result, error) {
	if l.RemoteID != "" && f.done.CompareAndSwap(false, true) {
		edit := integrations.Customer{Email: c.Email, Name: "Edited in Stripe", Phone: c.Phone, Metadata: c.Metadata}
		_, err := f.st.ApplyInbound(ctx, "stripe", store.InboundChange{EventID: fmt.Sprintf("evt_fence_%s", c.UserID),
			EventType: "customer.updated", RemoteID: l.RemoteID, OccurredAt: time.Now().Add(30 * time.Second),
			State: store.RemoteState{Email: edit.Email, Name: edit.Name, Phone: edit.Phone, Metadata: edit.Metadata, Hash: edit.Hash()}},
			func(context.Context) (store.RemoteState, bool, error) {
				return store.RemoteState{}, false, errors.New("no re-read")
			})
		if err != nil {
			return integrations.Result{}, err
		}
	}
	return f.Provider.Upsert(ctx, c, l)
}

// TestLostLeaseIsRetriedNotRecordedSynced (finding 5): a remote edit applied
// while a push is in flight fences the push off; the push's outcome is not
// recorded as synced (the provider may hold either), and the retry leaves
// the provider holding what MySQL holds.
func TestLostLeaseIsRetriedNotRecordedSynced(t *testing.T) {
	t.Parallel()
	f := &fencing{}
	p := newPipeline(t, pipelineOpts{wrap: func(pr integrations.Provider) integrations.Provider {
		f.Provider = pr
		return f
	}})
	f.st = p.store
	ctx := context.Background()
	u := p.create("fenced@example.com")
	p.waitSynced(20*time.Second, store.LinkSynced, u)
	name := "Patched"
	_, err := p.store.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		got, err := p.store.GetUser(ctx, u.ID)
		require.NoError(t, err)
		l := p.link(u.ID)
		cs := customersOf(p.fake, u.ID)
		return f.done.Load() && len(cs) == 1 && cs[0].Name == got.Name && l.Status == store.LinkSynced && l.SyncedVersion == got.Version
	}, 20*time.Second, 10*time.Millisecond, "MySQL and Stripe end equal, the link synced at the user's version")
	got, err := p.store.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "Edited in Stripe", got.Name, "the remote edit, newer, won")
}

// TestTheWorkerDeadLettersBeforeRabbitMQDoes (finding 10): a message
// RabbitMQ has handed back x-delivery-limit - 1 times (workers died holding
// it) would next be dead-lettered by RabbitMQ itself, the link never
// saying why. The worker dead-letters it first, and the link shows failed.
func TestTheWorkerDeadLettersBeforeRabbitMQDoes(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, pipelineOpts{})
	u := p.create("poison@example.com")
	p.waitSynced(20*time.Second, store.LinkSynced, u)

	pub, err := broker.Message{EventID: "0193aaaa-0000-7000-8000-000000000001", Type: "user.updated", UserID: u.ID,
		Version: u.Version + 1, OccurredAt: time.Now().UTC(), Origin: "api"}.Publishing()
	require.NoError(t, err)
	pub.Headers = amqp.Table{"x-delivery-count": int64(broker.DeliveryLimit - 1)}
	ch, err := p.pubConn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, ch.PublishWithContext(context.Background(), "", broker.WorkQueue("stripe"), false, false, pub))

	l := p.waitStatus(20*time.Second, u.ID, store.LinkFailed)
	require.Contains(t, deref(l.LastError), "handed back to RabbitMQ")
	require.Eventually(t, func() bool { return p.queueDepth(broker.DeadQueue("stripe")) == 1 }, 20*time.Second, 10*time.Millisecond)
}
