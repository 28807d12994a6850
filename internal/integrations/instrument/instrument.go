// Package instrument decorates an integrations.Provider with Prometheus
// metrics, so adapters measure nothing themselves:
//
//	tandem_provider_calls_total{provider, op, outcome}
//	tandem_provider_call_duration_seconds{provider, op, outcome}
//
// op is upsert or delete; outcome is one of ok, transient, rate_limited,
// permanent, not_found, canceled (see Outcome).
//
// The decorator logs nothing: the caller that handles an error logs it, once.
// Like every decorator, it hides optional interfaces of the provider it wraps.
package instrument

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// Outcomes of a provider call, as the outcome label.
const (
	OutcomeOK          = "ok"
	OutcomeTransient   = "transient"
	OutcomeRateLimited = "rate_limited"
	OutcomePermanent   = "permanent"
	OutcomeNotFound    = "not_found"
	OutcomeCanceled    = "canceled"
)

// Outcome names the kind of a provider call's error (OutcomeOK for nil).
func Outcome(err error) string {
	switch _, limited := integrations.RetryAfter(err); {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, integrations.ErrNotFound):
		return OutcomeNotFound
	case integrations.IsPermanent(err):
		return OutcomePermanent
	case limited:
		return OutcomeRateLimited
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	default:
		return OutcomeTransient
	}
}

// Metrics returns a Middleware recording every call in reg. Building several
// (one per provider, or again after a restart of a component) shares the
// collectors. It returns an error if reg holds different metrics of the same
// names.
func Metrics(reg prometheus.Registerer) (integrations.Middleware, error) {
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_provider_calls_total",
		Help: "Calls to a provider adapter, by operation and outcome.",
	}, []string{"provider", "op", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tandem_provider_call_duration_seconds",
		Help:    "Duration of calls to a provider adapter (rate-limit waits included), by operation and outcome.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"provider", "op", "outcome"})
	var err error
	if calls, err = register(reg, calls); err != nil {
		return nil, err
	}
	if duration, err = register(reg, duration); err != nil {
		return nil, err
	}
	return func(next integrations.Provider) integrations.Provider {
		return &instrumented{next: next, calls: calls, duration: duration}
	}, nil
}

type instrumented struct {
	next     integrations.Provider
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func (p *instrumented) Name() string { return p.next.Name() }

func (p *instrumented) Upsert(ctx context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error) {
	start := time.Now()
	res, err := p.next.Upsert(ctx, c, link)
	p.observe("upsert", start, err)
	return res, err
}

func (p *instrumented) Delete(ctx context.Context, c integrations.Customer, link integrations.Link) error {
	start := time.Now()
	err := p.next.Delete(ctx, c, link)
	p.observe("delete", start, err)
	return err
}

func (p *instrumented) observe(op string, start time.Time, err error) {
	outcome := Outcome(err)
	p.calls.WithLabelValues(p.next.Name(), op, outcome).Inc()
	p.duration.WithLabelValues(p.next.Name(), op, outcome).Observe(time.Since(start).Seconds())
}

func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("instrument: registering metrics: %w", err)
	}
	return c, nil
}
