package salesforce

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the adapter's own metrics (the integrations/instrument
// decorator counts calls). Names and help are provider-neutral, so another
// provider reporting a quota can share them with its own provider label.
type metrics struct {
	apiUsage      prometheus.Gauge   // API requests used in the org's rolling 24 h
	apiLimit      prometheus.Gauge   // the org's 24 h API request limit
	tokenRequests prometheus.Counter // requests to the token endpoint
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	labels := prometheus.Labels{"provider": Name}
	m := metrics{
		apiUsage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_provider_api_usage", ConstLabels: labels,
			Help: "API requests used in the provider's current quota window, as the provider reports them.",
		}),
		apiLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_provider_api_limit", ConstLabels: labels,
			Help: "API requests allowed in the provider's quota window, as the provider reports them.",
		}),
		tokenRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_provider_token_requests_total", ConstLabels: labels,
			Help: "Requests to the provider's OAuth token endpoint.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.apiUsage, err = register(reg, m.apiUsage); err != nil {
		return m, err
	}
	if m.apiLimit, err = register(reg, m.apiLimit); err != nil {
		return m, err
	}
	if m.tokenRequests, err = register(reg, m.tokenRequests); err != nil {
		return m, err
	}
	return m, nil
}

// register registers c, or returns the identical collector already
// registered (a second adapter in the same process shares the metrics).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("salesforce: registering metrics: %w", err)
	}
	return c, nil
}
