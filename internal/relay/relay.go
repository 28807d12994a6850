// Package relay is the outbox relay: it moves committed outbox rows to
// RabbitMQ. Every change to a user is committed together with an outbox row
// (see package store); the relay claims unpublished rows with SELECT … FOR
// UPDATE SKIP LOCKED, publishes them with publisher confirms, and marks the
// confirmed ones published in the same transaction. So a committed change
// always reaches the broker, even after a broker or relay failure, and a
// rolled-back change never does.
//
// Guarantees: at least once, not exactly once. A row is marked only after
// RabbitMQ confirmed it, so it is never lost; if the marking fails (database
// gone, process killed after the confirm), it is published again, and
// consumers de-duplicate by event id. Several relays (one per api replica)
// may run at once: SKIP LOCKED hands each its own rows, and a relay that dies
// releases its rows with its connection. Messages may leave out of order;
// they only name the change, and consumers read the current row.
//
// The relay wakes at once when Notify is called (wire it to
// store.Store.OnCommit), polls every Config.PollInterval for rows other
// replicas wrote, drains until nothing is left, backs off while the broker or
// database fails, and prunes published rows older than Config.Retention. A
// message RabbitMQ returns as unroutable (no queue bound to the exchange) or
// nacks is not marked: it stays in the outbox, counted in
// tandem_outbox_publish_failures_total, and is tried again after the backoff.
//
// Wiring in cmd/api:
//
//	r, err := relay.New(st, broker.NewPublisher(conn, broker.PublisherOptions{}), relay.Config{
//		BatchSize: cfg.Relay.BatchSize, PollInterval: cfg.Relay.PollInterval, Retention: cfg.Relay.Retention,
//	}, logger, registry)
//	st.OnCommit(r.Notify)
//	go r.Run(ctx)
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/store"
)

// Store is what the relay needs from the database; *store.Store has it.
type Store interface {
	// RelayBatch claims up to limit unpublished rows, calls publish while
	// holding them, marks the ids publish returns, and commits.
	RelayBatch(ctx context.Context, limit int, publish store.PublishFunc) (claimed, published int, err error)
	// PruneOutbox deletes up to limit rows published before olderThan.
	PruneOutbox(ctx context.Context, olderThan time.Time, limit int) (int64, error)
	// OutboxBacklog counts unpublished rows and dates the oldest.
	OutboxBacklog(ctx context.Context) (count int64, oldest time.Time, err error)
}

// Publisher publishes messages with confirms; *broker.Publisher is one.
// failed[i] is nil when msgs[i] was confirmed; err is nil when all were.
type Publisher interface {
	Publish(ctx context.Context, msgs []broker.Message) (failed []error, err error)
}

// Config tunes the relay. Zero fields take the defaults shown.
type Config struct {
	// BatchSize is the most rows claimed and published per transaction
	// (TANDEM_RELAY_BATCH_SIZE, default 200).
	BatchSize int
	// PollInterval is how often the relay looks for rows without being
	// notified, for rows written by other replicas, and refreshes the
	// backlog metrics (TANDEM_RELAY_POLL_INTERVAL, default 500ms).
	PollInterval time.Duration
	// Retention is how long published rows are kept before pruning
	// (TANDEM_RELAY_RETENTION, default 24h; README "Storage" has the sizing).
	Retention time.Duration
	// PruneInterval is how often pruning runs (default 1m); PruneBatch the
	// most rows one DELETE removes (default 1000).
	PruneInterval time.Duration
	PruneBatch    int
	// Workers is the number of batches in flight at once (default 2): one
	// claims and marks rows in MySQL while another waits for confirms.
	// Batches of different workers may leave out of order.
	Workers int
	// MinBackoff and MaxBackoff bound the wait after a failed batch
	// (defaults 100ms and 5s), doubling with jitter while failures last.
	MinBackoff, MaxBackoff time.Duration
	// BatchTimeout bounds one batch, confirms included (default 30s). On
	// shutdown the batches in flight get this long to finish, so rows the
	// broker confirmed are marked rather than sent twice.
	BatchTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Validate reports the first invalid field (negative values; zero means
// default).
func (c Config) Validate() error {
	switch {
	case c.BatchSize < 0:
		return fmt.Errorf("relay: BatchSize %d: want a positive number", c.BatchSize)
	case c.PollInterval < 0, c.Retention < 0, c.PruneInterval < 0, c.MinBackoff < 0, c.MaxBackoff < 0, c.BatchTimeout < 0:
		return errors.New("relay: durations must be positive")
	case c.PruneBatch < 0, c.Workers < 0:
		return errors.New("relay: PruneBatch and Workers must be positive")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 200
	}
	if c.PollInterval == 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = time.Minute
	}
	if c.PruneBatch == 0 {
		c.PruneBatch = 1000
	}
	if c.Workers == 0 {
		c.Workers = 2
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Relay moves outbox rows to the broker. Create it with New, run it with
// Run.
type Relay struct {
	st     Store
	pub    Publisher
	cfg    Config
	logger *slog.Logger
	wake   chan struct{}
	m      metrics
}

// New builds a relay. It registers its metrics on reg (nil: not
// registered); it returns an error for an invalid cfg or a metrics
// registration conflict.
func New(st Store, pub Publisher, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Relay{st: st, pub: pub, cfg: cfg, logger: logger.With("component", "relay"),
		wake: make(chan struct{}, 1), m: m}, nil
}

// Notify wakes the relay: new rows were committed. It never blocks, and
// calls made while the relay is busy coalesce into one more pass.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx is cancelled, then lets the batches in flight finish
// (within Config.BatchTimeout) and returns nil. Failures are logged and
// retried with backoff, never returned: rows wait in the outbox meanwhile.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range r.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, r.logger.With("relay_worker", i))
		}()
	}
	r.Notify() // rows left from before start
	r.housekeep(ctx)
	wg.Wait()
	return nil
}

// work is one worker: wait for a reason, drain, back off on failure.
func (r *Relay) work(ctx context.Context, logger *slog.Logger) {
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	failures := 0
	var backoffUntil time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-poll.C:
		case <-retry.C:
		}
		if time.Now().Before(backoffUntil) {
			// Backing off: neither a notification nor a poll shortens it;
			// the retry timer ends it.
			continue
		}
		err := r.drain(ctx)
		if err == nil {
			if failures > 0 {
				logger.Info("outbox relay recovered", "failed_attempts", failures)
			}
			failures = 0
			continue
		}
		failures++
		delay := broker.Backoff(failures, r.cfg.MinBackoff, r.cfg.MaxBackoff)
		logger.Warn("outbox relay batch failed; rows stay in the outbox", "error", err, "attempt", failures, "retry_in", delay)
		backoffUntil = time.Now().Add(delay)
		retry.Reset(delay)
	}
}

// drain publishes batches until one comes back short or fails.
func (r *Relay) drain(ctx context.Context) error {
	for ctx.Err() == nil {
		claimed, err := r.batch(ctx)
		if err != nil {
			return err
		}
		if claimed < r.cfg.BatchSize {
			return nil
		}
		// A full batch: there is probably more; let an idle worker help.
		r.Notify()
	}
	return nil
}

// batch relays one batch. It is not interrupted by ctx: a batch whose
// messages the broker confirmed should be marked, not sent again.
func (r *Relay) batch(ctx context.Context) (int, error) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.BatchTimeout)
	defer cancel()
	var publishFailed bool
	claimed, published, err := r.st.RelayBatch(bctx, r.cfg.BatchSize, func(ctx context.Context, events []store.OutboxEvent) ([]uint64, error) {
		ids, err := r.publish(ctx, events)
		publishFailed = err != nil
		return ids, err
	})
	r.m.published.Add(float64(published))
	if err != nil {
		stage := "database"
		if publishFailed {
			stage = "publish"
		}
		r.m.batchErrors.WithLabelValues(stage).Inc()
		return claimed, err
	}
	return claimed, nil
}

// publish sends events and returns the ids of those confirmed.
func (r *Relay) publish(ctx context.Context, events []store.OutboxEvent) ([]uint64, error) {
	msgs := make([]broker.Message, len(events))
	for i, e := range events {
		msgs[i] = broker.Message{EventID: e.EventID, Type: e.Type, UserID: e.UserID, Version: e.Version,
			OccurredAt: e.CreatedAt, Origin: e.Origin}
	}
	failed, err := r.pub.Publish(ctx, msgs)
	now := r.cfg.Now()
	ids := make([]uint64, 0, len(events))
	for i, e := range events {
		if i < len(failed) && failed[i] != nil {
			r.m.failures.WithLabelValues(reason(failed[i])).Inc()
			continue
		}
		if i >= len(failed) && err != nil {
			r.m.failures.WithLabelValues(reason(err)).Inc()
			continue
		}
		ids = append(ids, e.ID)
		r.m.lag.Observe(now.Sub(e.CreatedAt).Seconds())
	}
	return ids, err
}

// housekeep refreshes the backlog gauges every PollInterval and prunes every
// PruneInterval until ctx is cancelled.
func (r *Relay) housekeep(ctx context.Context) {
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	prune := time.NewTicker(r.cfg.PruneInterval)
	defer prune.Stop()
	r.observeBacklog(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			r.observeBacklog(ctx)
		case <-prune.C:
			r.prune(ctx)
		}
	}
}

func (r *Relay) observeBacklog(ctx context.Context) {
	n, oldest, err := r.st.OutboxBacklog(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("measuring the outbox backlog failed", "error", err)
		}
		return
	}
	r.m.backlog.Set(float64(n))
	age := 0.0
	if n > 0 {
		age = max(r.cfg.Now().Sub(oldest).Seconds(), 0)
	}
	r.m.oldestAge.Set(age)
}

// prune deletes published rows older than Retention, PruneBatch at a time.
func (r *Relay) prune(ctx context.Context) {
	cutoff := r.cfg.Now().Add(-r.cfg.Retention)
	var total int64
	for ctx.Err() == nil {
		n, err := r.st.PruneOutbox(ctx, cutoff, r.cfg.PruneBatch)
		total += n
		r.m.pruned.Add(float64(n))
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("pruning the outbox failed", "error", err, "deleted", total)
			}
			break
		}
		if n < int64(r.cfg.PruneBatch) {
			break
		}
	}
	if total > 0 {
		r.logger.Debug("pruned published outbox rows", "deleted", total, "published_before", cutoff)
	}
}

// reason is the failure label of a publish error.
func reason(err error) string {
	switch {
	case errors.Is(err, broker.ErrReturned):
		return "returned"
	case errors.Is(err, broker.ErrNacked):
		return "nacked"
	case errors.Is(err, broker.ErrConfirmTimeout):
		return "timeout"
	case errors.Is(err, broker.ErrNotConnected), errors.Is(err, broker.ErrConnClosed):
		return "not_connected"
	case errors.Is(err, broker.ErrChannelClosed):
		return "channel_closed"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	default:
		return "other"
	}
}
