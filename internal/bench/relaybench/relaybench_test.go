package relaybench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/bench/relaybench"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// BenchmarkRelay runs the whole comparison (each phase has its own fixed
// size; run it once) against a scratch database and vhost, prints the table
// and reports the numbers as benchmark metrics:
//
//	go test -run '^$' -bench Relay -benchtime 1x ./internal/bench/relaybench/
func BenchmarkRelay(b *testing.B) {
	dsn := testutil.NewDatabase(b)
	vhost := testutil.NewVhost(b)
	var res relaybench.Result
	for b.Loop() {
		var err error
		res, err = relaybench.Run(context.Background(), os.Stdout, dsn, vhost, relaybench.Options{})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(res.RawRate, "raw_msg/s")
	b.ReportMetric(res.RelayRate, "relay_msg/s")
	b.ReportMetric(res.Ratio*100, "relay_%_of_raw")
	b.ReportMetric(float64(res.LagP50.Microseconds())/1000, "lag_p50_ms")
	b.ReportMetric(float64(res.LagP99.Microseconds())/1000, "lag_p99_ms")
}

// TestRunSmall runs a scaled-down comparison so the bench code keeps working.
func TestRunSmall(t *testing.T) {
	t.Parallel()
	dsn := testutil.NewDatabase(t)
	vhost := testutil.NewVhost(t)
	var out strings.Builder
	res, err := relaybench.Run(context.Background(), &out, dsn, vhost, relaybench.Options{
		Messages: 2000, LagRate: 200, LagDuration: 500 * time.Millisecond, Writers: 8,
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.RawRate <= 0 || res.RelayRate <= 0 || res.LagUsers != 100 {
		t.Fatalf("implausible result: %+v", res)
	}
}
