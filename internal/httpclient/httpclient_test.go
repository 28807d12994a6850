package httpclient_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/httpclient"
)

// TestConcurrentRequestsReuseConnections: two rounds of 32 requests in
// flight at once open 32 connections, not 32 plus 30 (net/http's default
// keeps 2 idle per host and closes the rest).
func TestConcurrentRequestsReuseConnections(t *testing.T) {
	const inFlight = 32
	opened := countConnections(t, httpclient.New(10*time.Second), inFlight, 2)
	if opened != inFlight {
		t.Fatalf("2 rounds of %d concurrent requests opened %d connections, want %d", inFlight, opened, inFlight)
	}
	// The check can fail: the default client opens more.
	if d := countConnections(t, &http.Client{Timeout: 10 * time.Second}, inFlight, 2); d <= inFlight {
		t.Fatalf("the default client opened %d connections: the check above cannot fail", d)
	}
}

// countConnections makes rounds of n requests that the server holds until
// all n arrived (so n are in flight at once) and returns how many
// connections the server accepted.
func countConnections(t *testing.T, client *http.Client, n, rounds int) int {
	t.Helper()
	var opened atomic.Int64
	var mu sync.Mutex
	arrived, release := 0, make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived++
		if arrived == n {
			close(release)
		}
		wait := release
		mu.Unlock()
		<-wait
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for range rounds {
		mu.Lock()
		arrived, release = 0, make(chan struct{})
		mu.Unlock()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				resp, err := client.Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var buf [8]byte
				for {
					if _, err := resp.Body.Read(buf[:]); err != nil {
						break
					}
				}
			})
		}
		wg.Wait()
	}
	client.CloseIdleConnections()
	return int(opened.Load())
}
