package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tandem-sync/tandem/internal/bench"
	"github.com/tandem-sync/tandem/internal/bench/catchupbench"
)

// catchupStage: catch-up of 10,000 events whose webhooks were lost, against
// the webhook's own rate for the same events (target ≥ 80 %), and the
// provider requests it used (target ≤ 1 per 100 events).
func catchupStage(ctx context.Context, dsn string) ([]bench.Row, error) {
	fmt.Fprintln(os.Stderr, "catchup: 10,000 lost Stripe events through the webhook route, then through catch-up")
	o := catchupbench.Options{}
	res, err := catchupbench.Run(ctx, dsn, o)
	if err != nil {
		return nil, err
	}
	wh := bench.Row{Stage: "Webhook: the backlog's events POSTed to /webhook/stripe", Conc: 64, Ops: res.Webhook.Events, Rate: res.Webhook.Rate}
	cu := bench.Row{Stage: "Catch-up: the same events read from the Events API and applied", Conc: 16, Ops: res.Catchup.Events, Rate: res.Catchup.Rate,
		Ratios: map[string]float64{"webhook": res.Catchup.Rate / res.Webhook.Rate},
		Note: fmt.Sprintf("target ≥ 80 %% of webhook; %d Stripe requests = %.2f per 100 events (target ≤ 1)",
			res.Catchup.Requests, 100*float64(res.Catchup.Requests)/float64(res.Catchup.Events))}
	return []bench.Row{wh, cu}, nil
}
