package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/store"
)

// BackfillOptions configure the backfill benchmark.
type BackfillOptions struct {
	MySQLDSN  string // server; the database name is replaced
	Users     int    // users to backfill (default 20,000)
	Existing  int    // of them, how many Stripe already holds untagged (default a quarter)
	RateLimit int    // STRIPE_RATE_LIMIT of tandemctl and the fake's hard limit (default 100)
	Log       io.Writer
}

// Backfill measures `tandemctl backfill` (the real binary) against the
// Stripe fake with a hard limit of RateLimit requests/s (like Stripe's, 429
// above it): provider requests per user (the target is 1.0: one listing
// page per 100 customers plus one create or update per user) and the
// sustained request rate against the limit (target ≥ 95 %, no 429).
func Backfill(ctx context.Context, o BackfillOptions) ([]Row, error) {
	if o.Users <= 0 {
		o.Users = 20000
	}
	if o.Existing <= 0 {
		o.Existing = o.Users / 4
	}
	if o.RateLimit <= 0 {
		o.RateLimit = 100
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	bin, db, done, err := commandsAndDatabase(ctx, o.MySQLDSN, "tandem_bench_backfill")
	if err != nil {
		return nil, err
	}
	defer done()
	st, err := store.Open(ctx, db.DSN, store.Options{MaxOpenConns: 16})
	if err != nil {
		return nil, err
	}
	defer st.Close()

	fake := stripefake.New(stripefake.Options{Logger: discard, MaxEvents: 1, MaxRequests: 1, MaxIdempotencyKeys: o.Users + 10})
	defer fake.Close()
	base, err := fake.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "backfill: %d users (%d already customers in Stripe, untagged)\n", o.Users, o.Existing)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.Users {
					return
				}
				email := fmt.Sprintf("backfill-%06d@example.com", i)
				if _, err := st.CreateUser(ctx, store.NewUser{Email: email, Name: fmt.Sprintf("User %d", i)}, nil); err != nil {
					errs <- err
					return
				}
				if i < o.Existing {
					if _, err := fake.DashboardCreate(stripefake.Customer{Email: email, Name: "Before Tandem"}); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	fake.SetRateLimit(float64(o.RateLimit))
	before := fake.Stats()

	cmd := exec.CommandContext(ctx, filepath.Join(bin, "tandemctl"), "backfill", "-provider", "stripe", "-json")
	cmd.Env = append(cleanEnv(), "TANDEM_CONFIG=", "TANDEM_LOG_LEVEL=warn", "TANDEM_MYSQL_DSN="+db.DSN,
		"STRIPE_SECRET_KEY="+stripefake.DefaultAPIKey, "STRIPE_API_BASE="+base,
		fmt.Sprintf("STRIPE_RATE_LIMIT=%d", o.RateLimit))
	cmd.Stderr = o.Log
	start := time.Now()
	out, err := cmd.Output()
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("tandemctl backfill: %w\n%s", err, out)
	}
	var rep struct {
		Linked, Created int
		Failed          []json.RawMessage
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, fmt.Errorf("tandemctl backfill -json: %w", err)
	}
	after := fake.Stats()
	reqs := after.Requests - before.Requests
	rejected := after.RateLimitRejections - before.RateLimitRejections
	rate := float64(reqs) / elapsed.Seconds()
	return []Row{{
		Stage: fmt.Sprintf("Backfill: %d users, STRIPE_RATE_LIMIT=%d (tandemctl)", o.Users, o.RateLimit),
		Ops:   rep.Linked + rep.Created, Rate: rate,
		Ratios: map[string]float64{"rate limit": rate / float64(o.RateLimit)},
		Note: fmt.Sprintf("%.3f requests/user (target 1.0); linked %d, created %d, failed %d; %d self-caused 429s; target ≥ 95 %% of the limit",
			float64(reqs)/float64(o.Users), rep.Linked, rep.Created, len(rep.Failed), rejected),
	}}, nil
}

// cleanEnv is the environment without Tandem's and the providers' settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TANDEM_") && !strings.HasPrefix(kv, "STRIPE_") && !strings.HasPrefix(kv, "SALESFORCE_") {
			env = append(env, kv)
		}
	}
	return env
}
