package bench

import (
	"strings"
	"testing"
	"time"
)

func TestPipelineSummary(t *testing.T) {
	step := func(name string, offered, synced float64, p99 time.Duration, sustained bool, cpu time.Duration) PipelineStep {
		return PipelineStep{Name: name, Offered: offered, Synced: synced, LagP99: p99, Sustained: sustained,
			CPU: map[string]time.Duration{"api": cpu / 2, "mysqld": cpu / 2}}
	}
	runs := [][]PipelineStep{
		{step("creates 200/s", 200, 200, 50*time.Millisecond, true, 4*time.Millisecond),
			step("creates 300/s", 300, 296, 300*time.Millisecond, true, 5*time.Millisecond),
			step("creates 400/s", 400, 310, 2*time.Second, false, 5*time.Millisecond)},
		{step("creates 200/s", 200, 199, 70*time.Millisecond, true, 6*time.Millisecond),
			step("creates 300/s", 300, 250, 1500*time.Millisecond, false, 7*time.Millisecond)},
		{step("creates 200/s", 200, 198, 60*time.Millisecond, true, 5*time.Millisecond),
			step("creates 300/s", 300, 299, 200*time.Millisecond, true, 6*time.Millisecond),
			step("creates 400/s", 400, 330, 1200*time.Millisecond, false, 5*time.Millisecond)},
	}
	var b strings.Builder
	best := PipelineSummary(&b, runs)
	out := b.String()
	if best != 300 {
		t.Errorf("best = %d, want 300 (sustained in 2 of 3 runs; 400 in none)\n%s", best, out)
	}
	for _, want := range []string{
		"| creates 200/s | 3 | 3 of 3 | 199 (198–200) | 60.00 ms (50.00 ms–70.00 ms) | 5000 µs |",
		"| creates 300/s | 3 | 2 of 3 | 296 (250–299) |",
		"| creates 400/s | 2 | 0 of 3 | 320 (310–330) |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// A rate sustained in only half the runs is not claimed.
	if got := PipelineSummary(&strings.Builder{}, runs[:2]); got != 200 {
		t.Errorf("best of 2 runs = %d, want 200 (300/s sustained in 1 of 2)", got)
	}
}
