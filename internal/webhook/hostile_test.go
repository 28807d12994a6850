package webhook_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/testutil"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

// bothRoutes serves Stripe and Salesforce from one app, as a deployment
// with both providers does (the largest route limit used to apply to
// every route).
func bothRoutes(t *testing.T) (sf *sfEnv, addr string) {
	t.Helper()
	sf = newSFEnv(t)
	stripeSide := newEnv(t)
	app := tandemwebhook.New(map[string]integrations.WebhookReceiver{"stripe": stripeSide.adapter, "salesforce": sf.adapter},
		sf.st, slog.New(slog.DiscardHandler), ops.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return sf, ln.Addr().String()
}

// TestDeclaredBodiesReserveNoMemory: 40 connections that declare a 16 MiB
// body (the Salesforce limit) and send one byte, on each route and on an
// unknown path, make the process hold almost nothing (it held the declared
// size on each: +670 MB).
func TestDeclaredBodiesReserveNoMemory(t *testing.T) {
	sf, addr := bothRoutes(t)
	limit := sf.adapter.MaxWebhookBytes()
	before, heapBefore := testutil.RSS(t), testutil.Heap()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	paths := []string{"/webhook/salesforce?token=" + sfToken, "/webhook/salesforce", "/webhook/stripe", "/webhook/nowhere"}
	for i := range 40 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		conns = append(conns, c)
		_, _ = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n<", paths[i%len(paths)], limit)
	}
	testutil.WaitReadByServer(t, addr)
	grown, heapGrown := testutil.RSS(t)-before, testutil.Heap()-heapBefore
	t.Logf("RSS %d MB before, grew by %d MB (heap in use by %d MB) with 40 connections declaring %d MiB each",
		before>>20, grown>>20, heapGrown>>20, limit>>20)
	require.Less(t, grown, int64(64<<20))
	require.Less(t, heapGrown, int64(64<<20))
}

// TestUnauthenticatedBodiesAreNeitherReadNorHeld: 20 clients post 16 MiB
// to the Salesforce route with a wrong token, at once, each writing its
// whole body before reading: each reads its 401 (no reset), and the
// process's peak RSS stays far below 20 × 16 MiB (it reached +648 MB).
func TestUnauthenticatedBodiesAreNeitherReadNorHeld(t *testing.T) {
	sf, addr := bothRoutes(t)
	body := bytes.Repeat([]byte("x"), sf.adapter.MaxWebhookBytes())
	testutil.RSS(t)
	testutil.ResetPeakRSS(t)
	before := testutil.PeakRSS(t)
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	errs := make([]error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], errs[i] = rawPost(addr, "/webhook/salesforce?token=wrong", "text/xml", body)
		}()
	}
	wg.Wait()
	peak := testutil.PeakRSS(t) - before
	t.Logf("peak RSS grew by %d MB with 20 unauthenticated 16 MiB posts", peak>>20)
	for i := range 20 {
		require.NoError(t, errs[i], "the client reads the answer")
		require.Equal(t, http.StatusUnauthorized, statuses[i])
	}
	require.Less(t, peak, int64(100<<20))
	require.Zero(t, sf.count("SELECT COUNT(*) FROM inbound_events"))
}

// rawPost writes a whole request (headers and body) before reading the
// answer, as simple clients do, and returns its status.
func rawPost(addr, path, contentType string, body []byte) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", path, contentType, len(body))
	bufs := net.Buffers{[]byte(head), body} // no copy of body: the test measures the server
	if _, err := bufs.WriteTo(c); err != nil {
		return 0, fmt.Errorf("writing: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, fmt.Errorf("reading the answer: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestOversizedStripeDeliveryAnswerReachesTheClient: a 4 MiB delivery,
// validly signed, written whole before reading, gets its 413.
func TestOversizedStripeDeliveryAnswerReachesTheClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pad := strings.Repeat(" ", 4*tandemwebhook.BodyLimit)
	huge := []byte(`{"id":"evt_big","object":"event","pad":"` + pad + `"}`)
	r := e.post(huge, signedHeader(huge, secret, time.Now()))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status, "%s", r.Body)
	status, err := rawPost(strings.TrimPrefix(strings.TrimSuffix(e.url, "/webhook/stripe"), "http://"), "/webhook/stripe", "application/json", huge)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, status, "unsigned: refused before the body")
}

// TestSignaturesDatedAheadAreRefused: a delivery signed an hour or ten
// years ahead is a 400, and nothing is stored.
func TestSignaturesDatedAheadAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := event(t, "evt_future", "customer.created", time.Now(), "", customer("cus_future", "f@example.com", "F", nil))
	for _, at := range []time.Time{time.Now().Add(time.Hour), time.Now().AddDate(10, 0, 0)} {
		r := e.post(body, signedHeader(body, secret, at))
		require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
	}
	require.Zero(t, e.count("SELECT COUNT(*) FROM inbound_events"))
	require.Zero(t, e.count("SELECT COUNT(*) FROM users"))
}
