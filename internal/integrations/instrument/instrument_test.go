package instrument_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/instrument"
)

// fakeProvider is a hand-written fake with ...Func fields.
type fakeProvider struct {
	UpsertFunc func(ctx context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error)
	DeleteFunc func(ctx context.Context, c integrations.Customer, link integrations.Link) error
}

func (f *fakeProvider) Name() string { return "fake" }
func (f *fakeProvider) Upsert(ctx context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error) {
	return f.UpsertFunc(ctx, c, link)
}
func (f *fakeProvider) Delete(ctx context.Context, c integrations.Customer, link integrations.Link) error {
	return f.DeleteFunc(ctx, c, link)
}

func TestOutcome(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	cases := map[string]error{
		instrument.OutcomeOK:          nil,
		instrument.OutcomeTransient:   fmt.Errorf("x: %w", boom),
		instrument.OutcomeRateLimited: integrations.RateLimited(boom, time.Second),
		instrument.OutcomePermanent:   integrations.Permanent(boom),
		instrument.OutcomeNotFound:    integrations.Permanent(fmt.Errorf("gone: %w", integrations.ErrNotFound)),
		instrument.OutcomeCanceled:    fmt.Errorf("x: %w", context.Canceled),
	}
	for want, err := range cases {
		require.Equal(t, want, instrument.Outcome(err), "%v", err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	mw, err := instrument.Metrics(reg)
	require.NoError(t, err)
	_, err = instrument.Metrics(reg) // a second one shares the collectors
	require.NoError(t, err)

	want := integrations.Result{RemoteID: "r1"}
	p := mw(&fakeProvider{
		UpsertFunc: func(context.Context, integrations.Customer, integrations.Link) (integrations.Result, error) {
			return want, nil
		},
		DeleteFunc: func(context.Context, integrations.Customer, integrations.Link) error {
			return integrations.Permanent(errors.New("bad"))
		},
	})
	require.Equal(t, "fake", p.Name())
	got, err := p.Upsert(context.Background(), integrations.Customer{}, integrations.Link{})
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Error(t, p.Delete(context.Background(), integrations.Customer{}, integrations.Link{}))

	families, err := reg.Gather()
	require.NoError(t, err)
	counts := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			key := f.GetName() + " " + labels["provider"] + "/" + labels["op"] + "/" + labels["outcome"]
			if c := m.GetCounter(); c != nil {
				counts[key] = c.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				counts[key] = float64(h.GetSampleCount())
			}
		}
	}
	require.Equal(t, map[string]float64{
		"tandem_provider_calls_total fake/upsert/ok":                  1,
		"tandem_provider_calls_total fake/delete/permanent":           1,
		"tandem_provider_call_duration_seconds fake/upsert/ok":        1,
		"tandem_provider_call_duration_seconds fake/delete/permanent": 1,
	}, counts)
}
