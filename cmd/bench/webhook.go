package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/tandem-sync/tandem/internal/bench"
	"github.com/tandem-sync/tandem/internal/bench/webhookbench"
)

func webhookStage(ctx context.Context, dsn string) ([]bench.Row, error) {
	fmt.Fprintln(os.Stderr, "webhook: raw transaction, bare net/http, Tandem's /webhook/stripe")
	res, err := webhookbench.Run(ctx, io.Discard, dsn, webhookbench.Options{})
	if err != nil {
		return nil, err
	}
	row := func(s webhookbench.Stage, c int) bench.Row {
		r := bench.Row{Stage: s.Name, Conc: c, Ops: s.Events, Rate: s.Rate, P50: s.P50, P99: s.P99}
		if s.Errors > 0 {
			r.Note = fmt.Sprintf("%d errors", s.Errors)
		}
		return r
	}
	c := webhookbench.Options{}.Concurrency
	if c == 0 {
		c = 64
	}
	raw, bare, tandem := row(res.Raw, c), row(res.Bare, c), row(res.Tandem, c)
	bare.Ratios = map[string]float64{"raw": res.Bare.Rate / res.Raw.Rate}
	tandem.Ratios = map[string]float64{"raw": res.Tandem.Rate / res.Raw.Rate, "bare http": res.Tandem.Rate / res.Bare.Rate}
	tandem.Note = fmt.Sprintf("target ≥ 1,500/s; RSS %.0f MiB (peak %.0f MiB, whole bench process)",
		float64(res.RSSBytes)/(1<<20), float64(res.PeakRSSBytes)/(1<<20))
	return []bench.Row{raw, bare, tandem}, nil
}
