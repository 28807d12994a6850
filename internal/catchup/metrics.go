package catchup

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	events   *prometheus.CounterVec
	rounds   *prometheus.CounterVec
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, r *Runner) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_catchup_events_total",
			Help: "Changes read from the providers' change logs by catch-up, by provider and outcome: the store's outcomes for the changes catch-up applied first (their webhook was lost or late), known (recorded before, by a webhook or an earlier round), unhandled, malformed, error.",
		}, []string{"provider", "outcome"}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_catchup_rounds_total",
			Help: "Catch-up rounds of this process, by provider and result (ok, failed: the cursor stayed; expired: the cursor was older than the provider's log, see tandem_catchup_gap).",
		}, []string{"provider", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_catchup_requests_total",
			Help: "Provider requests made by catch-up.",
		}, []string{"provider"}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.events, m.rounds, m.requests)
	for _, s := range r.sources {
		name := s.Name
		gauge := func(metric, help string, f func(st *sourceState, now time.Time) float64) {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: metric, Help: help, ConstLabels: prometheus.Labels{"provider": name},
			}, func() float64 {
				r.mu.Lock()
				defer r.mu.Unlock()
				st := r.state[name]
				if !st.known {
					return 0
				}
				return f(st, time.Now())
			}))
		}
		gauge("tandem_catchup_lag_seconds", "Now minus the provider's time of the newest change catch-up read (0 before the first).",
			func(st *sourceState, now time.Time) float64 {
				if st.cursor.NewestAt.IsZero() {
					return 0
				}
				return now.Sub(st.cursor.NewestAt).Seconds()
			})
		gauge("tandem_catchup_cursor_age_seconds", "Now minus the time before which the provider's change log has been read: grows when rounds fail or stop.",
			func(st *sourceState, now time.Time) float64 { return now.Sub(st.cursor.ReadThrough).Seconds() })
		gauge("tandem_catchup_gap", "1 while the cursor records a stretch of the log that aged out unread (run tandemctl reconcile), else 0.",
			func(st *sourceState, _ time.Time) float64 {
				if st.cursor.GapFrom.IsZero() {
					return 0
				}
				return 1
			})
	}
	return m
}
