package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// load describes a bounded write load on the REST API.
type load struct {
	ops         int     // requests in all
	concurrency int     // requests in flight at once
	perSecond   float64 // pace (0: as fast as the API answers)
	seed        uint64
	tag         string // makes the emails of this load unique
	// progress, if set, is called after each request with the number done.
	progress func(done int)
}

// loadResult counts what a load did.
type loadResult struct {
	creates, updates, deletes int            // requests of each kind
	statuses                  map[string]int // "POST 201", "PATCH 404"…
	unexpected                []string       // answers the API should not have given
	took                      time.Duration
}

func (r loadResult) String() string {
	keys := make([]string, 0, len(r.statuses))
	for k := range r.statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, r.statuses[k])
	}
	return fmt.Sprintf("%d creates, %d updates, %d deletes in %v (%s)", r.creates, r.updates, r.deletes,
		r.took.Round(time.Millisecond), strings.Join(parts, ", "))
}

// expected are the answers a correct API gives this load: a PATCH or
// DELETE may find its user deleted by a concurrent request of the load.
var expected = map[string]bool{"POST 201": true, "PATCH 200": true, "PATCH 404": true, "DELETE 204": true, "DELETE 404": true}

// run sends the load through c: creates (about 35 %, and always while fewer
// than 20 users are live), updates of random users (about 50 %: name,
// phone, metadata keys set and removed, now and then the email) and deletes
// (about 15 %). Emails are unique, so no answer but those in expected is
// correct.
func (l load) run(ctx context.Context, c *apiClient) loadResult {
	res := loadResult{statuses: map[string]int{}}
	var mu sync.Mutex // guards res and pool
	var pool []string // live user ids the load created
	rng := rand.New(rand.NewPCG(l.seed, 0x10ad))
	var serial atomic.Int64
	pick := func() (op string, id string, n int64) {
		mu.Lock()
		defer mu.Unlock()
		n = serial.Add(1)
		r := rng.Float64()
		switch {
		case len(pool) < 20 || r < 0.35:
			return "create", "", n
		case r < 0.85:
			return "update", pool[rng.IntN(len(pool))], n
		default:
			i := rng.IntN(len(pool))
			id = pool[i]
			pool[i] = pool[len(pool)-1]
			pool = pool[:len(pool)-1]
			return "delete", id, n
		}
	}
	var limiter *rate.Limiter
	if l.perSecond > 0 {
		limiter = rate.NewLimiter(rate.Limit(l.perSecond), 1)
	}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var done atomic.Int64
	start := time.Now()
	for w := range l.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wrng := rand.New(rand.NewPCG(l.seed, uint64(w)))
			for range jobs {
				op, id, n := pick()
				var method, path string
				var body any
				switch op {
				case "create":
					method, path = http.MethodPost, "/v1/users"
					body = map[string]any{"email": fmt.Sprintf("u%d-%s@e2e.example.com", n, l.tag),
						"name": fmt.Sprintf("User %d", n), "phone": phone(wrng), "metadata": metadata(wrng)}
				case "update":
					method, path = http.MethodPatch, "/v1/users/"+id
					body = patch(wrng, n, l.tag)
				default:
					method, path = http.MethodDelete, "/v1/users/"+id
				}
				status, b, err := c.call(ctx, method, path, body)
				key := fmt.Sprintf("%s %d", method, status)
				mu.Lock()
				switch op {
				case "create":
					res.creates++
				case "update":
					res.updates++
				default:
					res.deletes++
				}
				res.statuses[key]++
				switch {
				case err != nil:
					res.unexpected = append(res.unexpected, fmt.Sprintf("%s %s: %v", method, path, err))
				case !expected[key]:
					res.unexpected = append(res.unexpected, fmt.Sprintf("%s %s → %d %s", method, path, status, b))
				case op == "create":
					var u apiUser
					if json.Unmarshal(b, &u) == nil && u.ID != "" {
						pool = append(pool, u.ID)
					}
				}
				mu.Unlock()
				if l.progress != nil {
					l.progress(int(done.Add(1)))
				}
			}
		}()
	}
	for range l.ops {
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				break
			}
		}
		select {
		case jobs <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	res.took = time.Since(start)
	return res
}

// phone returns a valid phone number, or "" (a third of the time).
func phone(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return ""
	}
	return fmt.Sprintf("+1 555 %04d", r.IntN(10000))
}

// metadata returns 0 to 3 keys among a few names, so updates both add and
// replace keys.
func metadata(r *rand.Rand) map[string]string {
	md := map[string]string{}
	for range r.IntN(4) {
		md[fmt.Sprintf("k%d", r.IntN(6))] = fmt.Sprintf("v%d", r.IntN(1000))
	}
	return md
}

// patch returns a random partial update: a new name most of the time, a new
// or cleared phone, metadata keys set or removed (null), now and then a new
// unique email or all metadata cleared.
func patch(r *rand.Rand, n int64, tag string) map[string]any {
	p := map[string]any{}
	if r.IntN(4) != 0 {
		p["name"] = fmt.Sprintf("User %d renamed", n)
	}
	if r.IntN(3) == 0 {
		if ph := phone(r); ph != "" {
			p["phone"] = ph
		} else {
			p["phone"] = nil
		}
	}
	switch r.IntN(10) {
	case 0:
		p["metadata"] = nil
	case 1, 2, 3, 4:
		md := map[string]any{}
		for range 1 + r.IntN(2) {
			if r.IntN(3) == 0 {
				md[fmt.Sprintf("k%d", r.IntN(6))] = nil
			} else {
				md[fmt.Sprintf("k%d", r.IntN(6))] = fmt.Sprintf("v%d", r.IntN(1000))
			}
		}
		p["metadata"] = md
	}
	if r.IntN(10) == 0 {
		p["email"] = fmt.Sprintf("u%d-%s-moved@e2e.example.com", n, tag)
	}
	if len(p) == 0 {
		p["name"] = fmt.Sprintf("User %d renamed", n)
	}
	return p
}
