package webhookbench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/bench/webhookbench"
)

// TestBench runs the benchmark briefly, so it keeps working. For numbers:
//
//	TANDEM_WEBHOOK_BENCH=5s go test -run TestBench -v ./internal/bench/webhookbench/
//
// (TANDEM_WEBHOOK_BENCH_C sets the concurrency, default 64).
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	opts := webhookbench.Options{Concurrency: 8, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond, Users: 2000}
	if d, err := time.ParseDuration(os.Getenv("TANDEM_WEBHOOK_BENCH")); err == nil {
		opts = webhookbench.Options{Duration: d}
		if c := os.Getenv("TANDEM_WEBHOOK_BENCH_C"); c != "" {
			opts.Concurrency = atoi(t, c)
		}
	}
	base := os.Getenv("TANDEM_TEST_MYSQL_DSN")
	if base == "" {
		base = "root@tcp(127.0.0.1:3306)/"
	}
	var out strings.Builder
	res, err := webhookbench.Run(context.Background(), &out, base, opts)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	for _, s := range []webhookbench.Stage{res.Raw, res.Bare, res.Tandem} {
		require.Positive(t, s.Events, s.Name)
		require.Zero(t, s.Errors, s.Name)
	}
	require.Contains(t, out.String(), "| Tandem: POST /webhook/stripe |")
}

func atoi(t *testing.T, s string) int {
	n := 0
	for _, r := range s {
		require.True(t, r >= '0' && r <= '9', "TANDEM_WEBHOOK_BENCH_C=%s", s)
		n = n*10 + int(r-'0')
	}
	return n
}
