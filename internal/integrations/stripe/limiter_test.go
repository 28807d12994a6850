package stripe

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestLimiter(t *testing.T, perSecond float64) (*limiter, *fakeClock) {
	t.Helper()
	m, err := newLimiterMetrics(nil)
	require.NoError(t, err)
	l := newLimiter(perSecond, m)
	clk := newFakeClock()
	l.now, l.sleep = clk.now, clk.sleep
	return l, clk
}

func TestLimiterHalvesOnThrottleAndRecovers(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, 16)
	require.InDelta(t, 16, l.limit(), 0)

	l.throttled(0)
	require.InDelta(t, 8, l.limit(), 1e-9)
	l.throttled(0) // same spell of 429s (concurrent requests): no second halving
	require.InDelta(t, 8, l.limit(), 1e-9)

	clk.advance(time.Second)
	l.throttled(0)
	require.InDelta(t, 4, l.limit(), 1e-9)
	for range 10 {
		clk.advance(time.Second)
		l.throttled(0)
	}
	require.InDelta(t, 1, l.limit(), 1e-9, "never below 1/16 of the configured rate")

	// Without 429s it grows back by 16/8 = 2 per second.
	clk.advance(time.Second)
	require.NoError(t, l.wait(context.Background()))
	require.InDelta(t, 3, l.limit(), 1e-9)
	clk.advance(3500 * time.Millisecond)
	require.NoError(t, l.wait(context.Background()))
	require.InDelta(t, 9, l.limit(), 1e-9)
	clk.advance(10 * time.Second)
	require.NoError(t, l.wait(context.Background()))
	require.InDelta(t, 16, l.limit(), 1e-9, "never above the configured rate")
}

func TestLimiterPausesForRetryAfter(t *testing.T) {
	t.Parallel()
	l, clk := newTestLimiter(t, 1000)
	l.throttled(3 * time.Second)
	require.NoError(t, l.wait(context.Background()))
	require.Equal(t, 3*time.Second, clk.total(), "every caller waits out Retry-After")
	require.NoError(t, l.wait(context.Background()))
	require.Equal(t, 3*time.Second, clk.total())

	l.throttled(time.Hour)
	clk.advance(2 * time.Second) // past the halving guard; irrelevant to the pause
	require.NoError(t, l.wait(context.Background()))
	require.Equal(t, 3*time.Second+maxPause-2*time.Second, clk.total(), "the pause is capped")
}

func TestLimiterCanceledContext(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(t, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, l.wait(ctx), context.Canceled)
}
