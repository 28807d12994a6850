// Package worker consumes one provider's queue (tandem.sync.<provider>) and
// pushes each announced change out through the provider's adapter.
//
// A message only names a change; the worker reads the user as committed now
// and pushes that under a per-(user, provider) lease kept in MySQL
// (store.Sync): no transaction or row lock is held while the provider is
// called, the lease expires if its holder vanishes, and the outcome is
// recorded only if the lease is still the holder's (a fencing token), so
// however many workers run and however messages are reordered or
// duplicated, the provider never ends on an older version than MySQL holds
// while the link says synced. Before the call the push is recorded as an
// attempt whose outcome is unknown; the outcome (remote id, synced version,
// the state the provider now holds, status, last error) is recorded before
// the message is acked. A push that may have executed (a 5xx, a timeout)
// keeps its attempt: the next push of that user looks for an object the
// first may have made (integrations.Link.Unsure) and sends new idempotency
// keys (integrations.Link.Attempt).
//
// Failures follow the adapter's error kinds: a transient error is retried
// through the delay queues (tandem.retry.<provider>.<tier>) until
// MaxAttempts, then dead-lettered; a permanent one is dead-lettered at once
// (tandem.dead.<provider>, reason in x-tandem-error) and the link shows
// failed with the provider's message. A failure of MySQL is retried through
// the delay queues for as long as it lasts: only the provider's failures use
// up MaxAttempts. Waits that are nobody's failure use none either: the
// provider's rate limit (its Retry-After sets the delay, however long), a
// lease held by another worker. A message RabbitMQ has handed back
// broker.DeliveryLimit-1 times (workers died holding it) is dead-lettered by
// the worker itself, with the link marked failed, rather than by RabbitMQ
// behind Tandem's back.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
)

// Store is what the worker needs from storage.
type Store interface {
	Sync(ctx context.Context, userID, provider string, ttl time.Duration, plan store.PlanFunc, push store.PushFunc) error
	FailLink(ctx context.Context, userID, provider, reason string) error
}

// Broker is what the worker needs from the connection manager.
type Broker interface {
	WaitReady(ctx context.Context) error
	Channel() (*amqp.Channel, error)
}

// Republisher moves deliveries to the delay and dead-letter queues.
type Republisher interface {
	PublishRetry(ctx context.Context, provider string, d amqp.Delivery, attempt int, cause string) (time.Duration, error)
	PublishDead(ctx context.Context, provider string, d amqp.Delivery, cause string) error
	PublishDelay(ctx context.Context, provider string, d amqp.Delivery, wait time.Duration, cause string) (time.Duration, error)
}

// Config tunes a worker.
type Config struct {
	// Prefetch is how many unacked messages RabbitMQ hands this worker at
	// once (default 64).
	Prefetch int
	// Concurrency is how many messages are processed at once (default 32).
	Concurrency int
	// MaxAttempts is how many times the provider may fail one message
	// before it is dead-lettered (default 10); MySQL failures do not count.
	MaxAttempts int
	// Drain bounds how long in-flight messages may take to finish after
	// the context is cancelled (default 20 s); what is left is handed back
	// to RabbitMQ unacked.
	Drain time.Duration
	// RequeueDelay is how long a message whose retry or dead letter could
	// not be published is held before it is handed back to RabbitMQ, so a
	// broken retry path does not become a hot loop of redeliveries and
	// provider calls (default 1 s; shutdown cuts it short).
	RequeueDelay time.Duration
	// LeaseTTL is how long a worker may hold a user's lease while it
	// pushes (default 30 s); PushTimeout bounds the provider calls of one
	// push, rate-limiter waits included (default and at most 3/4 of
	// LeaseTTL), so the lease outlives every push that records.
	LeaseTTL    time.Duration
	PushTimeout time.Duration
	// Finder, if set, is the provider's integrations.Finder (looked up on
	// the undecorated provider): a delete whose create was never recorded
	// finds the object it may have made through it.
	Finder integrations.Finder
	// Matcher, if set, is the provider's integrations.Matcher (looked up on
	// the undecorated provider): before creating a remote object the
	// worker links one that already belongs to the user (see Pusher).
	// LinkByEmail (TANDEM_LINK_BY_EMAIL) lets it link an untagged object
	// by its email.
	Matcher     integrations.Matcher
	LinkByEmail bool

	pause func(ctx context.Context, d time.Duration) // waits d or until ctx ends; tests replace it
}

func (c *Config) setDefaults() {
	if c.Prefetch <= 0 {
		c.Prefetch = 64
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	if c.Drain <= 0 {
		c.Drain = 20 * time.Second
	}
	if c.RequeueDelay <= 0 {
		c.RequeueDelay = time.Second
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.PushTimeout <= 0 || c.PushTimeout > c.LeaseTTL*3/4 {
		c.PushTimeout = c.LeaseTTL * 3 / 4
	}
	if c.pause == nil {
		c.pause = sleep
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Outcomes of one message, as the outcome label of tandem_worker_messages_total.
const (
	OutcomeSynced  = "synced"        // pushed; the provider holds the current version
	OutcomeDeleted = "deleted"       // the remote object was deleted (or never existed)
	OutcomeSkipped = "skipped"       // already done: the link's synced version covers the message
	OutcomeRetried = "retried"       // transient failure, scheduled on a delay queue
	OutcomeDelayed = "delayed"       // put back without an attempt: rate limited, or the user is being pushed elsewhere
	OutcomeDead    = "dead_lettered" // permanent failure or attempts exhausted
	OutcomeInvalid = "invalid"       // not a Tandem message: dead-lettered
)

// Worker consumes one provider's work queue.
type Worker struct {
	provider integrations.Provider
	name     string
	store    Store
	broker   Broker
	pub      Republisher
	cfg      Config
	log      *slog.Logger
	m        *metrics
	pusher   *Pusher
}

// New returns a worker for provider p. reg receives the worker's metrics.
func New(p integrations.Provider, st Store, b Broker, pub Republisher, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	cfg.setDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Worker{provider: p, name: p.Name(), store: st, broker: b, pub: pub, cfg: cfg,
		log: log.With("provider", p.Name()), m: m, pusher: NewPusher(p, st, cfg)}, nil
}

// Run consumes until ctx is cancelled, reconnecting whenever the broker
// connection drops. On cancellation it stops taking messages, lets the
// in-flight ones finish (within Config.Drain; the rest go back to the queue
// unacked) and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	for {
		if err := w.broker.WaitReady(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, broker.ErrTopologyMismatch) {
				return fmt.Errorf("worker %s: waiting for RabbitMQ: %w", w.name, err)
			}
			// An operator must fix the queues; stay up (unready) rather
			// than crash-loop, and look again later.
			w.log.Error("cannot consume until the RabbitMQ topology is fixed", "error", err.Error())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(15 * time.Second):
			}
			continue
		}
		err := w.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		w.log.Warn("consumer stopped; resuming when RabbitMQ is back", "error", errString(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// consume runs one consumer on one channel until the channel closes or ctx
// is cancelled.
func (w *Worker) consume(ctx context.Context) error {
	ch, err := w.broker.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Qos(w.cfg.Prefetch, 0, false); err != nil {
		return fmt.Errorf("setting prefetch: %w", err)
	}
	tag := fmt.Sprintf("tandem-worker-%s-%d", w.name, time.Now().UnixNano())
	deliveries, err := ch.Consume(broker.WorkQueue(w.name), tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming %s: %w", broker.WorkQueue(w.name), err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	w.log.Info("consuming", "queue", broker.WorkQueue(w.name), "prefetch", w.cfg.Prefetch, "concurrency", w.cfg.Concurrency)

	// Handlers run on a context that outlives ctx by the drain period, so a
	// push under way when SIGTERM arrives can finish and be recorded.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	for range w.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				select {
				case <-stopping:
					// Prefetched but not started: hand it back.
					_ = d.Nack(false, true)
					continue
				default:
				}
				w.handle(work, d)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	select {
	case <-ctx.Done():
		close(stopping)
		_ = ch.Cancel(tag, false) // no new deliveries; the channel drains and closes
		timer := time.NewTimer(w.cfg.Drain)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			w.log.Warn("drain timeout: unfinished messages go back to the queue")
			cancelWork()
		}
		return nil
	case err := <-closed:
		<-done
		if err == nil {
			return errors.New("channel closed")
		}
		return err
	case <-done:
		return errors.New("delivery channel closed")
	}
}

// handle processes one delivery and settles it: ack after the outcome is
// durable (in MySQL, or in a delay or dead-letter queue), nack with requeue
// when even that failed.
func (w *Worker) handle(ctx context.Context, d amqp.Delivery) {
	start := time.Now()
	msg, err := broker.Decode(d.Body)
	if err != nil {
		w.settleLogged(ctx, w.log.With("message_id", d.MessageId), d, OutcomeInvalid, err, 0, start)
		return
	}
	log := w.log.With("event_id", msg.EventID, "user_id", msg.UserID, "version", msg.Version)
	if nb := broker.NotBefore(d); time.Until(nb) > 0 {
		w.delay(ctx, log, d, time.Until(nb), errors.New("held back until "+nb.UTC().Format(time.RFC3339)), start)
		return
	}
	attempt := broker.Attempt(d) + 1
	if n := broker.DeliveryCount(d); n >= broker.DeliveryLimit-1 {
		// RabbitMQ dead-letters it on its next return, without a word to
		// the link: do it here, saying why.
		err := fmt.Errorf("handed back to RabbitMQ %d times without an outcome (workers stopped or died while holding it)", n)
		if ferr := w.store.FailLink(ctx, msg.UserID, w.name, err.Error()); ferr != nil && !errors.Is(ferr, store.ErrNotFound) {
			log.Warn("could not mark the link failed", "error", ferr.Error())
		}
		w.settleLogged(ctx, log, d, OutcomeDead, err, attempt, start)
		return
	}
	final := attempt >= w.cfg.MaxAttempts
	outcome, err := w.pusher.Push(ctx, Request{UserID: msg.UserID, Version: msg.Version, Attempt: attempt, Final: final})
	wait, limited := integrations.RetryAfter(err)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		// Users are never removed, only marked deleted: a user the worker
		// cannot read is one whose transaction it cannot see yet (the
		// pipeline bench caught a message read before its user, about once
		// in 40,000 creates). Acking it would lose the change: it is
		// retried like a transient failure, and dead-lettered after
		// MaxAttempts if the user never appears (a message naming no user).
		outcome = OutcomeRetried
		if final {
			outcome = OutcomeDead
		}
		err = fmt.Errorf("no user %s (not visible yet, or none): %w", msg.UserID, err)
	case errors.Is(err, store.ErrBusy), errors.Is(err, store.ErrLeaseLost):
		w.delay(ctx, log, d, 0, err, start)
		return
	case limited && !integrations.IsPermanent(err):
		// The provider asked to slow down: wait as long as it says, and
		// spend no attempt on it.
		log.Info("rate limited by the provider", "retry_after", wait.String())
		w.delay(ctx, log, d, wait, err, start)
		return
	case integrations.IsPermanent(err) || final && isProviderError(err):
		// Only the provider's failures use up the retry budget: a database
		// or broker outage, however long, is waited out.
		outcome = OutcomeDead
	default:
		outcome = OutcomeRetried
	}
	if err != nil {
		log.Warn("sync failed", "attempt", attempt, "outcome", outcome, "error", err.Error())
	}
	w.settleLogged(ctx, log, d, outcome, err, attempt, start)
}

// delay puts d back after at least wait (the shortest retry tier for 0)
// without counting an attempt, and acks it.
func (w *Worker) delay(ctx context.Context, log *slog.Logger, d amqp.Delivery, wait time.Duration, cause error, start time.Time) {
	tier, err := w.pub.PublishDelay(ctx, w.name, d, wait, cause.Error())
	if err != nil {
		log.Error("could not delay message; requeueing it after a pause", "error", err.Error(), "pause", w.cfg.RequeueDelay.String())
		w.cfg.pause(ctx, w.cfg.RequeueDelay)
		_ = d.Nack(false, true)
		w.m.messages.WithLabelValues(w.name, "requeued").Inc()
		return
	}
	w.m.retries.WithLabelValues(w.name, broker.TierName(tier)).Inc()
	if err := d.Ack(false); err != nil {
		log.Warn("ack failed; the message will be redelivered", "error", err.Error())
	}
	w.m.messages.WithLabelValues(w.name, OutcomeDelayed).Inc()
	w.m.latency.WithLabelValues(w.name, OutcomeDelayed).Observe(time.Since(start).Seconds())
}

// settleLogged makes the outcome durable where it is not yet (a delay or
// dead-letter queue) and acks d.
func (w *Worker) settleLogged(ctx context.Context, log *slog.Logger, d amqp.Delivery, outcome string, cause error, attempt int, start time.Time) {
	var err error
	switch outcome {
	case OutcomeRetried:
		var delay time.Duration
		delay, err = w.pub.PublishRetry(ctx, w.name, d, attempt, cause.Error())
		if err == nil {
			w.m.retries.WithLabelValues(w.name, broker.TierName(delay)).Inc()
		}
	case OutcomeDead, OutcomeInvalid:
		err = w.pub.PublishDead(ctx, w.name, d, cause.Error())
		if err == nil {
			w.m.dead.WithLabelValues(w.name).Inc()
			log.Error("message dead-lettered", "queue", broker.DeadQueue(w.name), "error", cause.Error())
		}
	}
	if err != nil {
		// Neither a retry nor a dead letter could be made durable: hand the
		// message back so it is not lost, after a pause (its redelivery
		// calls the provider again).
		log.Error("could not reschedule message; requeueing it after a pause", "error", err.Error(), "pause", w.cfg.RequeueDelay.String())
		w.cfg.pause(ctx, w.cfg.RequeueDelay)
		_ = d.Nack(false, true)
		w.m.messages.WithLabelValues(w.name, "requeued").Inc()
		return
	}
	if err := d.Ack(false); err != nil {
		log.Warn("ack failed; the message will be redelivered", "error", err.Error())
	}
	w.m.messages.WithLabelValues(w.name, outcome).Inc()
	w.m.latency.WithLabelValues(w.name, outcome).Observe(time.Since(start).Seconds())
	log.Debug("message handled", "outcome", outcome)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

type metrics struct {
	messages *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	retries  *prometheus.CounterVec
	dead     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_worker_messages_total", Help: "Messages handled, by provider and outcome.",
		}, []string{"provider", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_worker_message_duration_seconds", Help: "Time to handle one message, by provider and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"provider", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_worker_retries_total", Help: "Messages scheduled on a delay queue, by provider and tier.",
		}, []string{"provider", "tier"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_worker_dead_letters_total", Help: "Messages dead-lettered, by provider.",
		}, []string{"provider"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.latency, m.retries, m.dead} {
		if reg == nil {
			continue
		}
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("worker: registering metrics: %w", err)
		}
	}
	return m, nil
}
