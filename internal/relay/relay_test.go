package relay_test

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
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
)

// running is a relay started for a test, with its own broker connection and
// metrics registry.
type running struct {
	relay *relay.Relay
	conn  *broker.Conn
	reg   *prometheus.Registry
}

// start dials amqpURL (declaring topology for providers) and runs a relay on
// st until the test ends; the cleanup checks that Run returns promptly.
func start(t *testing.T, st relay.Store, amqpURL string, providers []string, cfg relay.Config) running {
	t.Helper()
	reg := prometheus.NewRegistry()
	dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := broker.Dial(dctx, amqpURL, nil, broker.Options{
		Setup:      func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, providers) },
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 300 * time.Millisecond,
		Registerer: reg,
	})
	require.NoError(t, err)
	pub := broker.NewPublisher(conn, broker.PublisherOptions{ConfirmTimeout: 5 * time.Second})
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 300 * time.Millisecond
	}
	r, err := relay.New(st, pub, cfg, nil, reg)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("relay.Run did not return within 15s of cancel")
		}
		pub.Close()
		conn.Close()
	})
	return running{relay: r, conn: conn, reg: reg}
}

// value sums the series of metric name in reg whose labels include
// labelValue (or all of them when labelValue is "").
func value(t *testing.T, reg *prometheus.Registry, name, labelValue string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := labelValue == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == labelValue
			}
			if match {
				v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// eventually polls cond every 10ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func backlog(t *testing.T, st *store.Store) int64 {
	t.Helper()
	n, _, err := st.OutboxBacklog(context.Background())
	require.NoError(t, err)
	return n
}

func queueLen(t *testing.T, ch *amqp.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}

func channel(t *testing.T, amqpURL string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// consumer counts the messages of one queue by event id.
type consumer struct {
	mu    sync.Mutex
	seen  map[string]int
	total int
}

func consume(t *testing.T, amqpURL, queue string) *consumer {
	t.Helper()
	ch := channel(t, amqpURL)
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	require.NoError(t, err)
	c := &consumer{seen: map[string]int{}}
	go func() {
		for d := range deliveries {
			m, err := broker.Decode(d.Body)
			if err != nil {
				continue
			}
			c.mu.Lock()
			c.seen[m.EventID]++
			c.total++
			c.mu.Unlock()
		}
	}()
	return c
}

// missing returns how many of want were not seen, and the duplicates seen.
func (c *consumer) missing(want []string) (missing, duplicates int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range want {
		if c.seen[id] == 0 {
			missing++
		}
	}
	return missing, c.total - len(c.seen)
}

func eventIDs(t *testing.T, st *store.Store) []string {
	t.Helper()
	rows, err := st.DB().Query("SELECT event_id FROM outbox ORDER BY id")
	require.NoError(t, err)
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

func newUser(i int) store.NewUser {
	return store.NewUser{Email: fmt.Sprintf("user%d-%s@example.com", i, testutil.Suffix()), Name: fmt.Sprintf("User %d", i)}
}

// createUsers writes n users through the store, 8 at a time.
func createUsers(t *testing.T, st *store.Store, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if _, err := st.CreateUser(context.Background(), newUser(i), nil); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestCommittedChangesReachEveryProviderQueueOnce(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	vhost := testutil.NewVhost(t)
	providers := []string{"stripe", "salesforce"}
	// No polling: only the commit notification can wake the relay.
	r := start(t, st, vhost, providers, relay.Config{PollInterval: time.Hour, Workers: 1})
	st.OnCommit(r.relay.Notify)

	ctx := context.Background()
	u, err := st.CreateUser(ctx, newUser(1), nil)
	require.NoError(t, err)
	name := "Renamed"
	u2, err := st.UpdateUser(ctx, u.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	u3, err := st.DeleteUser(ctx, u.ID, 0)
	require.NoError(t, err)
	eventually(t, 10*time.Second, "the outbox to drain", func() bool { return backlog(t, st) == 0 })

	ids := eventIDs(t, st)
	require.Len(t, ids, 3)
	ch := channel(t, vhost)
	for _, p := range providers {
		q := broker.WorkQueue(p)
		// Every row is marked, so no further copy can be on its way.
		require.Equal(t, 3, queueLen(t, ch, q), q)
		want := []struct {
			typ     string
			version int64
		}{{store.EventUserCreated, 1}, {store.EventUserUpdated, u2.Version}, {store.EventUserDeleted, u3.Version}}
		for i, w := range want {
			d, ok, err := ch.Get(q, true)
			require.NoError(t, err)
			require.True(t, ok)
			m, err := broker.Decode(d.Body)
			require.NoError(t, err)
			require.Equal(t, ids[i], m.EventID)
			require.Equal(t, ids[i], d.MessageId)
			require.Equal(t, w.typ, m.Type)
			require.Equal(t, u.ID, m.UserID)
			require.Equal(t, w.version, m.Version)
			require.Equal(t, store.OriginAPI, m.Origin)
			require.Equal(t, "application/json", d.ContentType)
			require.Equal(t, uint8(amqp.Persistent), d.DeliveryMode)
		}
	}
	eventually(t, 5*time.Second, "the published metric", func() bool {
		return value(t, r.reg, relay.MetricPublished, "") == 3
	})
}

func TestBrokerOutageLosesNothing(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	vhost := testutil.NewVhost(t)
	u, err := url.Parse(vhost)
	require.NoError(t, err)
	proxy := tcpproxy.New(t, u.Host)
	u.Host = proxy.Addr()
	r := start(t, st, u.String(), []string{"stripe"}, relay.Config{PollInterval: 50 * time.Millisecond})
	st.OnCommit(r.relay.Notify)
	c := consume(t, vhost, broker.WorkQueue("stripe")) // directly, not through the proxy

	proxy.Cut()
	eventually(t, 10*time.Second, "the relay to notice the outage", func() bool { return !r.conn.Ready() })
	createUsers(t, st, 500)
	eventually(t, 10*time.Second, "a failed publish attempt", func() bool {
		return value(t, r.reg, relay.MetricFailures, "not_connected") > 0
	})
	require.Equal(t, int64(500), backlog(t, st), "nothing is marked while the broker is unreachable")

	proxy.Restore()
	eventually(t, 30*time.Second, "the outbox to drain", func() bool { return backlog(t, st) == 0 })
	ids := eventIDs(t, st)
	require.Len(t, ids, 500)
	eventually(t, 10*time.Second, "every event on the queue", func() bool {
		missing, _ := c.missing(ids)
		return missing == 0
	})
	_, dup := c.missing(ids)
	t.Logf("500 events delivered, %d duplicates, %.0f reconnects", dup, value(t, r.reg, "tandem_amqp_reconnects_total", ""))
	require.GreaterOrEqual(t, value(t, r.reg, "tandem_amqp_reconnects_total", ""), 1.0)
}

func TestOutagesMidDrainLoseNothing(t *testing.T) {
	t.Parallel()
	for _, side := range []string{"broker", "database"} {
		t.Run(side, func(t *testing.T) {
			t.Parallel()
			st, dsn := testutil.NewStore(t)
			vhost := testutil.NewVhost(t)
			const n = 3000
			events := make([]store.OutboxEvent, n)
			for i := range events {
				events[i] = store.OutboxEvent{UserID: fmt.Sprintf("user-%05d", i), Version: 1, Type: store.EventUserCreated, Origin: store.OriginAPI}
			}
			require.NoError(t, st.AppendOutbox(context.Background(), events))
			ch := channel(t, vhost)
			require.NoError(t, broker.DeclareTopology(ch, []string{"stripe"}))
			c := consume(t, vhost, broker.WorkQueue("stripe"))

			// The relay reaches the side under test through a proxy.
			var proxy *tcpproxy.Proxy
			relayStore, amqpURL := st, vhost
			if side == "broker" {
				u, err := url.Parse(vhost)
				require.NoError(t, err)
				proxy = tcpproxy.New(t, u.Host)
				u.Host = proxy.Addr()
				amqpURL = u.String()
			} else {
				cfg, err := store.ParseDSN(dsn)
				require.NoError(t, err)
				proxy = tcpproxy.New(t, cfg.Addr)
				cfg.Addr = proxy.Addr()
				relayStore, err = store.Open(context.Background(), cfg.FormatDSN(), store.Options{MaxOpenConns: 8})
				require.NoError(t, err)
				t.Cleanup(func() { relayStore.Close() })
			}
			r := start(t, relayStore, amqpURL, []string{"stripe"}, relay.Config{BatchSize: 50, PollInterval: 20 * time.Millisecond})

			eventually(t, 20*time.Second, "the relay to start publishing", func() bool {
				return value(t, r.reg, relay.MetricPublished, "") > 0
			})
			proxy.Cut()
			eventually(t, 20*time.Second, "a failed batch", func() bool {
				return value(t, r.reg, relay.MetricBatchErrors, "") > 0
			})
			proxy.Restore()

			eventually(t, 60*time.Second, "the outbox to drain", func() bool { return backlog(t, st) == 0 })
			ids := eventIDs(t, st)
			eventually(t, 20*time.Second, "every event on the queue", func() bool {
				missing, _ := c.missing(ids)
				return missing == 0
			})
			_, dup := c.missing(ids)
			t.Logf("%d events delivered, %d duplicates", n, dup)
		})
	}
}

func TestTwoRelaysShareTheOutbox(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	vhost := testutil.NewVhost(t)
	const n = 5000
	events := make([]store.OutboxEvent, n)
	for i := range events {
		events[i] = store.OutboxEvent{UserID: fmt.Sprintf("user-%05d", i), Version: 1, Type: store.EventUserCreated, Origin: store.OriginAPI}
	}
	require.NoError(t, st.AppendOutbox(context.Background(), events))
	// Declare the queue first so the consumer sees every message.
	ch := channel(t, vhost)
	require.NoError(t, broker.DeclareTopology(ch, []string{"stripe"}))
	c := consume(t, vhost, broker.WorkQueue("stripe"))

	// Two replicas: separate pools, connections and relays.
	other, err := store.Open(context.Background(), dsn, store.Options{MaxOpenConns: 8})
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	cfg := relay.Config{BatchSize: 50, PollInterval: 20 * time.Millisecond}
	a := start(t, st, vhost, []string{"stripe"}, cfg)
	b := start(t, other, vhost, []string{"stripe"}, cfg)

	eventually(t, 60*time.Second, "the outbox to drain", func() bool { return backlog(t, st) == 0 })
	ids := eventIDs(t, st)
	eventually(t, 20*time.Second, "every event on the queue", func() bool {
		missing, _ := c.missing(ids)
		return missing == 0
	})
	// Every row is marked exactly once (the counters follow the commits).
	var pa, pb float64
	eventually(t, 5*time.Second, "the published metrics to add up", func() bool {
		pa, pb = value(t, a.reg, relay.MetricPublished, ""), value(t, b.reg, relay.MetricPublished, "")
		return pa+pb == n
	})
	_, dup := c.missing(ids)
	t.Logf("relay A marked %.0f, relay B marked %.0f, %d duplicates on the queue", pa, pb, dup)
}

func TestRolledBackChangePublishesNothing(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	vhost := testutil.NewVhost(t)
	r := start(t, st, vhost, []string{"stripe"}, relay.Config{})
	st.OnCommit(r.relay.Notify)
	ctx := context.Background()
	_, err := st.CreateUser(ctx, store.NewUser{Email: "taken@example.com", Name: "A"}, nil)
	require.NoError(t, err)
	_, err = st.CreateUser(ctx, store.NewUser{Email: "Taken@Example.com", Name: "B"}, nil)
	require.ErrorIs(t, err, store.ErrConflict)

	eventually(t, 10*time.Second, "the outbox to drain", func() bool { return backlog(t, st) == 0 })
	require.Len(t, eventIDs(t, st), 1)
	require.Equal(t, 1, queueLen(t, channel(t, vhost), broker.WorkQueue("stripe")))
}

func TestUnroutableMessageStaysUnpublished(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	vhost := testutil.NewVhost(t)
	r := start(t, st, vhost, nil, relay.Config{}) // the exchange, but no queue bound
	st.OnCommit(r.relay.Notify)
	_, err := st.CreateUser(context.Background(), newUser(1), nil)
	require.NoError(t, err)

	eventually(t, 10*time.Second, "a returned publish", func() bool {
		return value(t, r.reg, relay.MetricFailures, "returned") > 0
	})
	require.Equal(t, int64(1), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"))
	require.Zero(t, value(t, r.reg, relay.MetricPublished, ""))

	// Once a queue is bound, the row goes out.
	ch := channel(t, vhost)
	_, err = ch.QueueDeclare("late", true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind("late", "", broker.Exchange, false, nil))
	eventually(t, 10*time.Second, "the outbox to drain", func() bool { return backlog(t, st) == 0 })
	require.Equal(t, 1, queueLen(t, ch, "late"))
}

func TestPublishedRowsArePrunedAndMetricsReported(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	vhost := testutil.NewVhost(t)
	r := start(t, st, vhost, []string{"stripe"}, relay.Config{
		Retention: time.Millisecond, PruneInterval: 20 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	})
	st.OnCommit(r.relay.Notify)
	createUsers(t, st, 10)
	// Metrics are updated just after the database changes they count.
	eventually(t, 10*time.Second, "published rows to be pruned and counted", func() bool {
		return testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox") == 0 &&
			value(t, r.reg, relay.MetricPruned, "") == 10 &&
			value(t, r.reg, relay.MetricPublished, "") == 10
	})
	eventually(t, 10*time.Second, "the backlog gauges to read zero", func() bool {
		return value(t, r.reg, relay.MetricBacklog, "") == 0 && value(t, r.reg, relay.MetricOldestAge, "") == 0
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, relay.Config{}.Validate())
	require.Error(t, relay.Config{BatchSize: -1}.Validate())
	require.Error(t, relay.Config{PollInterval: -time.Second}.Validate())
	_, err := relay.New(nil, nil, relay.Config{Workers: -1}, nil, nil)
	require.Error(t, err)
}
