package container

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// BenchmarkImage measures what sizes the chart's requests and limits (run
// it once: `make bench-image`, or go test -run '^$' -bench Image -benchtime
// 1x ./deploy/container):
//
//   - the image's size;
//   - each process's cold start in a container: from `docker run` to its
//     /readyz answering 200 (the api started with -migrate=false after the
//     migration container ran, as the chart runs it);
//   - each container's resident memory (VmRSS now, VmHWM its peak) after a
//     load: creates offered through the REST API by 32 clients for 5 s,
//     each synced to the sandbox by the worker (whose echo events the
//     webhook applies), then 1,000 dashboard edits applied by the webhook.
//
// The worker's Stripe rate limit is lifted so that the load is bounded by
// the machine, as in `make bench`.
func BenchmarkImage(b *testing.B) {
	d := startDaemon(b)
	image := d.buildImage(b)
	size, err := strconv.ParseInt(d.must(b, "image", "inspect", "-f", "{{.Size}}", image), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer() // ns/op: the system's start and the load, not the build
	s := startSystem(b, d, image, "STRIPE_RATE_LIMIT=100000", "TANDEM_LOG_LEVEL=warn")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Creates through the REST API, 32 clients for 5 s.
	const clients, offer = 32, 5 * time.Second
	var created atomic.Int64
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < offer; i++ {
				body := map[string]any{"email": fmt.Sprintf("u%d-%d@example.com", c, i), "name": fmt.Sprintf("User %d %d", c, i)}
				if _, err := s.apiCall(ctx, http.MethodPost, "/v1/users", body, nil); err != nil {
					failed.Add(1)
					continue
				}
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	apiRate := float64(created.Load()) / time.Since(start).Seconds()
	if err := waitFor(ctx, func() bool { return int64(s.sb.Fake.Stats().CustomersCreated) >= created.Load() }); err != nil {
		b.Fatalf("%d users created, %d customers in the sandbox: %v", created.Load(), s.sb.Fake.Stats().CustomersCreated, err)
	}
	synced := time.Since(start)
	if err := s.sb.Fake.WaitDelivered(ctx); err != nil {
		b.Fatal(err)
	}

	// Dashboard edits, each a webhook the webhook container applies.
	const edits = 1000
	customers := s.sb.Fake.Customers()
	editStart := time.Now()
	for i := range edits {
		id := customers[i%len(customers)].ID
		if _, err := s.sb.Fake.DashboardUpdate(id, func(c *stripefake.Customer) { c.Name = fmt.Sprintf("Edited %d", i) }); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.sb.Fake.WaitDelivered(ctx); err != nil {
		b.Fatal(err)
	}
	editRate := float64(edits) / time.Since(editStart).Seconds()

	b.ReportMetric(float64(size)/(1<<20), "image-MiB")
	b.ReportMetric(apiRate, "creates/s")
	b.ReportMetric(editRate, "edits/s")
	var rows []string
	for _, p := range []struct {
		name string
		c    *container
	}{{"api", s.api}, {"webhook", s.webhook}, {"worker", s.worker}} {
		rss, hwm := memory(b, p.c.pid(b))
		ready := s.ready[p.name]
		b.ReportMetric(float64(ready.Milliseconds()), p.name+"-ready-ms")
		b.ReportMetric(float64(s.processReady[p.name].Milliseconds()), p.name+"-process-ready-ms")
		b.ReportMetric(float64(rss)/(1<<20), p.name+"-rss-MiB")
		b.ReportMetric(float64(hwm)/(1<<20), p.name+"-peak-MiB")
		rows = append(rows, fmt.Sprintf("| %s | %d ms | %d ms | %.1f MiB | %.1f MiB |", p.name, ready.Milliseconds(),
			s.processReady[p.name].Milliseconds(), float64(rss)/(1<<20), float64(hwm)/(1<<20)))
	}
	b.Logf("image %s: %.1f MiB; %d creates at %.0f/s through the api (%d failed), all in the sandbox after %v; %d dashboard edits applied at %.0f/s\n"+
		"| process | docker run → ready | process start → ready | RSS after the load | peak RSS |\n|---|---|---|---|---|\n%s",
		image, float64(size)/(1<<20), created.Load(), apiRate, failed.Load(), synced.Round(time.Millisecond), edits, editRate, strings.Join(rows, "\n"))
}

// memory reads a process's resident set size now (VmRSS) and its peak
// (VmHWM), in bytes.
func memory(tb testing.TB, pid int) (rss, hwm int64) {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, field := range []struct {
			prefix string
			into   *int64
		}{{"VmRSS:", &rss}, {"VmHWM:", &hwm}} {
			if rest, ok := strings.CutPrefix(sc.Text(), field.prefix); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					tb.Fatalf("/proc/%d/status %s: %v", pid, field.prefix, err)
				}
				*field.into = kb << 10
			}
		}
	}
	if rss == 0 || hwm == 0 {
		tb.Fatalf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm
}
