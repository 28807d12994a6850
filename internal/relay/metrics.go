package relay

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	backlog     prometheus.Gauge
	oldestAge   prometheus.Gauge
	published   prometheus.Counter
	failures    *prometheus.CounterVec
	batchErrors *prometheus.CounterVec
	lag         prometheus.Histogram
	pruned      prometheus.Counter
}

// Metric names (all registered by New).
const (
	MetricBacklog     = "tandem_outbox_backlog"
	MetricOldestAge   = "tandem_outbox_oldest_unpublished_age_seconds"
	MetricPublished   = "tandem_outbox_published_total"
	MetricFailures    = "tandem_outbox_publish_failures_total"
	MetricBatchErrors = "tandem_outbox_batch_errors_total"
	MetricLag         = "tandem_outbox_lag_seconds"
	MetricPruned      = "tandem_outbox_pruned_total"
)

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricBacklog,
			Help: "Unpublished outbox rows (all replicas), refreshed every poll interval."}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricOldestAge,
			Help: "Age of the oldest unpublished outbox row in seconds (0 when none)."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricPublished,
			Help: "Outbox rows confirmed by RabbitMQ and marked published by this process."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricFailures,
			Help: "Outbox messages RabbitMQ did not confirm, by reason (returned, nacked, timeout, not_connected, channel_closed, other); they stay in the outbox."},
			[]string{"reason"}),
		batchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricBatchErrors,
			Help: "Relay batches that failed, by stage (publish, database); the relay backs off after each."},
			[]string{"stage"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricLag,
			Help:    "Time from the change (outbox created_at) to RabbitMQ's confirm, in seconds.",
			Buckets: []float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricPruned,
			Help: "Published outbox rows deleted after the retention period."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.backlog, m.oldestAge, m.published, m.failures, m.batchErrors, m.lag, m.pruned} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return m, fmt.Errorf("relay: registering metrics: %w (one relay per registry)", err)
			}
			return m, fmt.Errorf("relay: registering metrics: %w", err)
		}
	}
	return m, nil
}
