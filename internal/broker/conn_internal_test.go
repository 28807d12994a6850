package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDefaultReconnectBackoffIsShortAndJittered: with the default options
// (what every process uses) the delay between reconnection attempts stays
// at or under 2 s however long the outage, so recovery after it does not
// wait on a long backoff, and it is jittered so replicas do not reconnect
// in lockstep.
func TestDefaultReconnectBackoffIsShortAndJittered(t *testing.T) {
	t.Parallel()
	var o Options
	o.setDefaults()
	seen := map[time.Duration]bool{}
	for n := 1; n <= 40; n++ {
		for range 20 {
			d := Backoff(n, o.MinBackoff, o.MaxBackoff)
			require.LessOrEqual(t, d, 2*time.Second, "delay after %d failures", n)
			require.Positive(t, d)
			if n == 40 {
				seen[d] = true
			}
		}
	}
	require.Greater(t, len(seen), 1, "no jitter at the cap")
}
