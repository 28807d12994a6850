package broker_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
)

// channel opens a plain channel on url for the test.
func channel(t *testing.T, amqpURL string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// dial starts a Conn declaring the topology for providers.
func dial(t *testing.T, amqpURL string, providers []string, reg prometheus.Registerer) *broker.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, amqpURL, nil, broker.Options{
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, providers) },
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Registerer: reg,
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// get polls queue until a message arrives or the deadline passes.
func get(t *testing.T, ch *amqp.Channel, queue string, within time.Duration) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d, ok, err := ch.Get(queue, false)
		require.NoError(t, err)
		if ok {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %s within %s", queue, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func messages(t *testing.T, ch *amqp.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}

func message(id string) broker.Message {
	return broker.Message{EventID: id, Type: "user.created", UserID: "u-" + id, Version: 1,
		OccurredAt: time.Now().UTC().Truncate(time.Microsecond), Origin: "api"}
}

func TestNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, "tandem.sync.stripe", broker.WorkQueue("stripe"))
	require.Equal(t, "tandem.dead.stripe", broker.DeadQueue("stripe"))
	var names []string
	for _, tier := range broker.RetryTiers {
		names = append(names, broker.RetryQueue("stripe", tier))
	}
	require.Equal(t, []string{"tandem.retry.stripe.1s", "tandem.retry.stripe.10s", "tandem.retry.stripe.1m", "tandem.retry.stripe.10m"}, names)
	require.Equal(t, "1500ms", broker.TierName(1500*time.Millisecond))
	require.Equal(t, "2h", broker.TierName(2*time.Hour))
	require.Equal(t, time.Second, broker.RetryTier(0))
	require.Equal(t, time.Second, broker.RetryTier(1))
	require.Equal(t, 10*time.Minute, broker.RetryTier(4))
	require.Equal(t, 10*time.Minute, broker.RetryTier(99))
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	t.Parallel()
	for range 100 {
		d := broker.Backoff(1, 100*time.Millisecond, time.Second)
		require.GreaterOrEqual(t, d, 50*time.Millisecond)
		require.LessOrEqual(t, d, 100*time.Millisecond)
		d = broker.Backoff(30, 100*time.Millisecond, time.Second)
		require.GreaterOrEqual(t, d, 500*time.Millisecond)
		require.LessOrEqual(t, d, time.Second)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	t.Parallel()
	m := message("0190a0b0-0000-7000-8000-000000000001")
	pub, err := m.Publishing()
	require.NoError(t, err)
	require.Equal(t, amqp.Persistent, pub.DeliveryMode)
	require.Equal(t, m.EventID, pub.MessageId)
	require.Equal(t, "application/json", pub.ContentType)
	require.Equal(t, m.OccurredAt, pub.Timestamp)
	require.Contains(t, string(pub.Body), `"event_id":"0190a0b0-0000-7000-8000-000000000001"`)
	require.Contains(t, string(pub.Body), `"occurred_at":`)
	got, err := broker.Decode(pub.Body)
	require.NoError(t, err)
	require.Equal(t, m, got)

	for _, body := range []string{`nope`, `{}`, `{"event_id":"e"}`, `{"event_id":"e","type":"user.created"}`} {
		_, err := broker.Decode([]byte(body))
		require.ErrorIs(t, err, broker.ErrInvalidMessage, body)
	}
}

func TestDeclareTopologyIsIdempotent(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	ch := channel(t, vhost)
	providers := []string{"stripe", "salesforce"}
	require.NoError(t, broker.DeclareTopology(ch, providers))
	require.NoError(t, broker.DeclareTopology(ch, providers))
	require.NoError(t, ch.ExchangeDeclarePassive(broker.Exchange, "fanout", true, false, false, false, nil))
	for _, p := range providers {
		for _, q := range []string{broker.WorkQueue(p), broker.DeadQueue(p), broker.RetryQueue(p, time.Second), broker.RetryQueue(p, 10*time.Minute)} {
			_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			require.NoError(t, err, q)
		}
	}
}

func TestPublishFansOutToEveryWorkQueue(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	c := dial(t, vhost, []string{"stripe", "salesforce"}, nil)
	require.True(t, c.Ready())
	p := broker.NewPublisher(c, broker.PublisherOptions{})
	defer p.Close()

	msgs := []broker.Message{message("e1"), message("e2"), message("e3")}
	failed, err := p.Publish(context.Background(), msgs)
	require.NoError(t, err)
	require.Equal(t, []error{nil, nil, nil}, failed)

	ch := channel(t, vhost)
	for _, q := range []string{"tandem.sync.stripe", "tandem.sync.salesforce"} {
		require.Equal(t, 3, messages(t, ch, q), q)
		d := get(t, ch, q, 5*time.Second)
		m, err := broker.Decode(d.Body)
		require.NoError(t, err)
		require.Equal(t, "e1", m.EventID)
		require.Equal(t, "e1", d.MessageId)
		require.Equal(t, uint8(amqp.Persistent), d.DeliveryMode)
	}
}

func TestUnroutableMessageIsReportedFailed(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	c := dial(t, vhost, nil, nil) // the exchange, no queue bound
	p := broker.NewPublisher(c, broker.PublisherOptions{})
	defer p.Close()

	failed, err := p.Publish(context.Background(), []broker.Message{message("r1"), message("r2")})
	require.ErrorIs(t, err, broker.ErrReturned)
	require.Len(t, failed, 2)
	for _, e := range failed {
		require.ErrorIs(t, e, broker.ErrReturned)
	}

	// The channel stays usable: a routable publish afterwards is confirmed.
	_, err = p.PublishTo(context.Background(), "", "", []amqp.Publishing{{MessageId: "x"}})
	require.ErrorIs(t, err, broker.ErrReturned, "no queue has an empty name")
	ch := channel(t, vhost)
	_, err = ch.QueueDeclare("plain", false, false, false, false, nil)
	require.NoError(t, err)
	_, err = p.PublishTo(context.Background(), "", "plain", []amqp.Publishing{{MessageId: "y"}})
	require.NoError(t, err)
}

func TestRetryGoesBackToItsOwnWorkQueueOnly(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	c := dial(t, vhost, []string{"stripe", "salesforce"}, nil)
	p := broker.NewPublisher(c, broker.PublisherOptions{})
	defer p.Close()
	_, err := p.Publish(context.Background(), []broker.Message{message("t1")})
	require.NoError(t, err)

	ch := channel(t, vhost)
	d := get(t, ch, "tandem.sync.stripe", 5*time.Second)
	require.Equal(t, 0, broker.Attempt(d))
	tier, err := p.PublishRetry(context.Background(), "stripe", d, broker.Attempt(d)+1, "stripe: 503 Service Unavailable")
	require.NoError(t, err)
	require.Equal(t, time.Second, tier)
	require.NoError(t, d.Ack(false))

	// After the 1s tier the message is back on stripe's queue...
	again := get(t, ch, "tandem.sync.stripe", 15*time.Second)
	require.Equal(t, "t1", again.MessageId)
	require.Equal(t, 1, broker.Attempt(again))
	require.Equal(t, "stripe: 503 Service Unavailable", again.Headers[broker.HeaderError])
	require.Equal(t, "stripe", again.Headers[broker.HeaderProvider])
	m, err := broker.Decode(again.Body)
	require.NoError(t, err)
	require.Equal(t, "t1", m.EventID)
	require.NoError(t, again.Ack(false))
	// ...and salesforce still holds only its original copy.
	require.Equal(t, 1, messages(t, ch, "tandem.sync.salesforce"))
	require.Equal(t, 0, messages(t, ch, broker.RetryQueue("stripe", time.Second)))
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	c := dial(t, vhost, []string{"stripe"}, nil)
	p := broker.NewPublisher(c, broker.PublisherOptions{})
	defer p.Close()
	_, err := p.Publish(context.Background(), []broker.Message{message("d1"), message("d2")})
	require.NoError(t, err)
	ch := channel(t, vhost)

	// The worker dead-letters explicitly, with the reason.
	d := get(t, ch, "tandem.sync.stripe", 5*time.Second)
	require.NoError(t, p.PublishDead(context.Background(), "stripe", d, "stripe: 400 email invalid"))
	require.NoError(t, d.Ack(false))
	dead := get(t, ch, "tandem.dead.stripe", 5*time.Second)
	require.Equal(t, "d1", dead.MessageId)
	require.Equal(t, "stripe: 400 email invalid", dead.Headers[broker.HeaderError])
	require.NoError(t, dead.Ack(false))

	// A rejected message is dead-lettered by RabbitMQ itself.
	d = get(t, ch, "tandem.sync.stripe", 5*time.Second)
	require.NoError(t, d.Reject(false))
	dead = get(t, ch, "tandem.dead.stripe", 5*time.Second)
	require.Equal(t, "d2", dead.MessageId)
}

func TestTopologyMismatchIsAClearError(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	ch := channel(t, vhost)
	_, err := ch.QueueDeclare("tandem.sync.stripe", true, false, false, false, nil) // classic, no dead-lettering
	require.NoError(t, err)

	ch2 := channel(t, vhost)
	err = broker.DeclareTopology(ch2, []string{"stripe"})
	require.ErrorIs(t, err, broker.ErrTopologyMismatch)
	require.Contains(t, err.Error(), "queue tandem.sync.stripe exists with other settings")
	require.Contains(t, err.Error(), "delete")
	require.Contains(t, err.Error(), "PRECONDITION_FAILED")

	// The connection manager stays up, unready, and says why.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Dial(ctx, vhost, nil, broker.Options{
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{"stripe"}) },
		MaxBackoff: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	defer c.Close()
	require.False(t, c.Ready())
	require.ErrorIs(t, c.Healthy(ctx), broker.ErrTopologyMismatch)
	require.ErrorIs(t, c.WaitReady(ctx), broker.ErrTopologyMismatch)

	// Once the operator deletes the queue, it recovers by itself.
	_, err = ch.QueueDelete("tandem.sync.stripe", false, false, false)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Healthy(ctx) == nil }, 15*time.Second, 10*time.Millisecond)
	require.NoError(t, c.WaitReady(ctx))
}

func TestConnReconnectsAfterOutage(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	u, err := url.Parse(vhost)
	require.NoError(t, err)
	proxy := tcpproxy.New(t, u.Host)
	u.Host = proxy.Addr()
	reg := prometheus.NewRegistry()
	c := dial(t, u.String(), []string{"stripe"}, reg)
	require.NoError(t, c.Healthy(context.Background()))
	p := broker.NewPublisher(c, broker.PublisherOptions{ConfirmTimeout: 5 * time.Second})
	defer p.Close()
	_, err = p.Publish(context.Background(), []broker.Message{message("a")})
	require.NoError(t, err)

	proxy.Cut()
	require.Eventually(t, func() bool { return !c.Ready() }, 10*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, c.Healthy(context.Background()), broker.ErrNotConnected)
	failed, err := p.Publish(context.Background(), []broker.Message{message("b")})
	require.Error(t, err)
	require.Error(t, failed[0])
	// The gauge is lowered just after the connection is marked down.
	require.Eventually(t, func() bool { return value(t, reg, "tandem_amqp_connected") == 0 }, 5*time.Second, 5*time.Millisecond)

	proxy.Restore()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, c.WaitReady(ctx))
	_, err = p.Publish(ctx, []broker.Message{message("c")})
	require.NoError(t, err)
	require.Equal(t, 1.0, value(t, reg, "tandem_amqp_reconnects_total"))
	require.Equal(t, 1.0, value(t, reg, "tandem_amqp_connected"))

	ch := channel(t, vhost)
	require.Equal(t, 2, messages(t, ch, "tandem.sync.stripe"), "a and c; b was reported failed")
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Healthy(ctx), broker.ErrConnClosed)
	_, err = p.Publish(ctx, []broker.Message{message("d")})
	require.ErrorIs(t, err, broker.ErrConnClosed)
}

func TestDialRejectsBadURL(t *testing.T) {
	t.Parallel()
	_, err := broker.Dial(context.Background(), "http://nope", nil, broker.Options{})
	require.ErrorContains(t, err, "TANDEM_AMQP_URL")
}

// value returns the value of the metric name in reg (summed over its
// series; 0 when absent).
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return v
}

func TestConcurrentPublishesAreAllConfirmed(t *testing.T) {
	t.Parallel()
	vhost := testutil.NewVhost(t)
	c := dial(t, vhost, []string{"stripe"}, nil)
	p := broker.NewPublisher(c, broker.PublisherOptions{})
	defer p.Close()

	const goroutines, batches, size = 4, 10, 50
	errs := make(chan error, goroutines*batches)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for b := range batches {
				msgs := make([]broker.Message, size)
				for i := range msgs {
					msgs[i] = message(fmt.Sprintf("g%d-b%d-m%d", g, b, i))
				}
				_, err := p.Publish(context.Background(), msgs)
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, goroutines*batches*size, messages(t, channel(t, vhost), "tandem.sync.stripe"))
}

// TestDialBadURLDoesNotPrintItsPassword: the error for a malformed
// TANDEM_AMQP_URL (here an unescaped "%" in the password) names the
// variable and shows the URL without the password.
func TestDialBadURLDoesNotPrintItsPassword(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"amqp://guest:pa%zzs3cret@127.0.0.1:5672/",
		"amqp://guest:s3cret@127.0.0.1:notaport/",
		"amqp://guest:s3cret@127.0.0.1:5672/ x",
	} {
		_, err := broker.Dial(context.Background(), bad, nil, broker.Options{})
		require.ErrorContains(t, err, "TANDEM_AMQP_URL", bad)
		require.NotContains(t, err.Error(), "s3cret", bad)
	}
}
