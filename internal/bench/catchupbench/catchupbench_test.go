package catchupbench_test

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/bench/catchupbench"
)

// TestBench runs the benchmark on a small backlog, so it keeps working. For
// numbers: make bench BENCH_ARGS='-stages catchup', or
//
//	TANDEM_CATCHUP_BENCH=10000 go test -run TestBench -v ./internal/bench/catchupbench/
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	o := catchupbench.Options{Events: 600, Customers: 200, Concurrency: 8}
	if n, err := strconv.Atoi(os.Getenv("TANDEM_CATCHUP_BENCH")); err == nil {
		o = catchupbench.Options{Events: n}
	}
	base := os.Getenv("TANDEM_TEST_MYSQL_DSN")
	if base == "" {
		base = "root@tcp(127.0.0.1:3306)/"
	}
	res, err := catchupbench.Run(context.Background(), base, o)
	require.NoError(t, err)
	t.Logf("webhook %d events in %s (%.0f/s); catch-up %d in %s (%.0f/s, %.0f %% of the webhook), %d requests",
		res.Webhook.Events, res.Webhook.Elapsed, res.Webhook.Rate, res.Catchup.Events, res.Catchup.Elapsed, res.Catchup.Rate,
		100*res.Catchup.Rate/res.Webhook.Rate, res.Catchup.Requests)
	require.Equal(t, o.Events, res.Catchup.Events)
	require.LessOrEqual(t, res.Catchup.Requests, (o.Events+99)/100+1, "one request per page of 100 events (and one to find the end)")
}
