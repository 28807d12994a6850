package stripe

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

const (
	// maxBurst bounds the requests sent back to back after an idle spell.
	maxBurst = 5
	// slowest is the lowest rate a run of 429s can bring the limiter to,
	// as a fraction of the configured rate.
	slowest = 1.0 / 16
	// adjustEvery is how often the rate may halve (once per spell of 429s
	// from concurrent requests) and how often it grows back by
	// 1/recoverSteps of the configured rate while no 429 arrives.
	adjustEvery  = time.Second
	recoverSteps = 8
	// maxPause caps the pause a Retry-After header imposes on this process.
	maxPause = time.Minute
)

// limiter is a token bucket (golang.org/x/time/rate) that every request waits
// on, adapted to Stripe's answers: on a 429 it halves its rate (at most once
// per adjustEvery, down to slowest of the configured rate) and pauses every
// caller for the Retry-After Stripe named; then it grows back by an eighth of
// the configured rate per adjustEvery without a 429.
type limiter struct {
	mu         sync.Mutex
	bucket     *rate.Limiter
	base       rate.Limit
	cur        rate.Limit
	halvedAt   time.Time // last halving
	grownAt    time.Time // last halving, 429 or growth step
	pauseUntil time.Time

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	m     limiterMetrics
}

type limiterMetrics struct {
	waits       prometheus.Counter // requests that had to wait
	waitSeconds prometheus.Counter // time spent waiting
	throttled   prometheus.Counter // 429 answers
	rate        prometheus.Gauge   // current requests per second
}

func newLimiter(perSecond float64, m limiterMetrics) *limiter {
	burst := min(max(int(perSecond), 1), maxBurst)
	l := &limiter{
		bucket: rate.NewLimiter(rate.Limit(perSecond), burst),
		base:   rate.Limit(perSecond),
		cur:    rate.Limit(perSecond),
		now:    time.Now,
		sleep:  sleepCtx,
		m:      m,
	}
	m.rate.Set(perSecond)
	return l
}

// wait blocks until a request may be sent. It returns ctx's error if ctx ends
// first, or at once if ctx's deadline comes before the request's turn.
func (l *limiter) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for {
		l.mu.Lock()
		now := l.now()
		l.recover(now)
		if pause := l.pauseUntil.Sub(now); pause > 0 {
			l.mu.Unlock()
			if err := l.sleepFor(ctx, now, pause); err != nil {
				return err
			}
			continue
		}
		r := l.bucket.ReserveN(now, 1)
		l.mu.Unlock()
		if !r.OK() { // cannot happen: burst ≥ 1
			return fmt.Errorf("stripe: rate limiter refused a request")
		}
		d := r.DelayFrom(now)
		if d <= 0 {
			return nil
		}
		if err := l.sleepFor(ctx, now, d); err != nil {
			r.CancelAt(l.now())
			return err
		}
		return nil
	}
}

func (l *limiter) sleepFor(ctx context.Context, now time.Time, d time.Duration) error {
	if deadline, ok := ctx.Deadline(); ok && now.Add(d).After(deadline) {
		return fmt.Errorf("stripe: waiting %v for the rate limit would pass the deadline: %w", d, context.DeadlineExceeded)
	}
	l.m.waits.Inc()
	l.m.waitSeconds.Add(d.Seconds())
	return l.sleep(ctx, d)
}

// throttled records a 429 whose Retry-After was pause (0 if none).
func (l *limiter) throttled(pause time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.m.throttled.Inc()
	if floor := l.base * slowest; l.cur > floor && now.Sub(l.halvedAt) >= adjustEvery {
		l.setRate(now, max(l.cur/2, floor))
		l.halvedAt = now
	}
	l.grownAt = now // growth starts over after every 429
	if pause > 0 {
		if until := now.Add(min(pause, maxPause)); until.After(l.pauseUntil) {
			l.pauseUntil = until
		}
	}
}

// recover grows a reduced rate back, one step per adjustEvery without a 429.
// l.mu is held.
func (l *limiter) recover(now time.Time) {
	if l.cur >= l.base {
		return
	}
	steps := now.Sub(l.grownAt) / adjustEvery
	if steps <= 0 {
		return
	}
	l.setRate(now, min(l.base, l.cur+rate.Limit(steps)*l.base/recoverSteps))
	l.grownAt = l.grownAt.Add(steps * adjustEvery)
}

func (l *limiter) setRate(now time.Time, r rate.Limit) {
	l.cur = r
	l.bucket.SetLimitAt(now, r)
	l.m.rate.Set(float64(r))
}

// limit is the current rate (requests per second).
func (l *limiter) limit() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return float64(l.cur)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
