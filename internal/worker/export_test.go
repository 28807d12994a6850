package worker

import (
	"context"
	"time"
)

// WithPause returns c whose worker waits through pause instead of sleeping
// before it hands back a message it could not reschedule.
func WithPause(c Config, pause func(ctx context.Context, d time.Duration)) Config {
	c.pause = pause
	return c
}
