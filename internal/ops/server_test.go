package ops_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// hardened serves a NewApp app with a /echo route reading up to 1 KiB.
func hardened(t *testing.T, l ops.Limits) (addr string, logs *testutil.SyncBuffer, metrics func() string) {
	t.Helper()
	logs = &testutil.SyncBuffer{}
	reg := ops.NewRegistry()
	app := ops.NewApp(fiber.Config{DisableStartupMessage: true}, l, slog.New(slog.NewJSONHandler(logs, nil)), ops.NewHTTPMetrics(reg))
	app.Post("/echo", func(c *fiber.Ctx) error {
		b, err := ops.ReadBody(c, 1<<10)
		if err != nil {
			return err
		}
		return c.Send(b)
	})
	ops.Mount(app, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ops.Listener(app, ln)) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return ln.Addr().String(), logs, func() string {
		var b strings.Builder
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() != "tandem_http_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					fmt.Fprintf(&b, " %s=%s", lp.GetName(), lp.GetValue())
				}
				fmt.Fprintf(&b, " count=%v;", m.GetCounter().GetValue())
			}
		}
		return b.String()
	}
}

// exchange writes raw on a fresh connection and reads one answer.
func exchange(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, raw)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestServerRefusalsAreLoggedAndCounted: what the server answers before
// any handler (431 headers too large, 408 headers too slow) and the 413 of
// a body over the route's limit leave an access-log line and a count.
func TestServerRefusalsAreLoggedAndCounted(t *testing.T) {
	t.Parallel()
	addr, logs, metrics := hardened(t, ops.Limits{HeaderTimeout: 300 * time.Millisecond})

	resp := exchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 8<<10)+"\r\n\r\n")
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	resp = exchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // never finishes its headers
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	resp = exchange(t, addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n"+strings.Repeat("a", 2048))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	m := metrics()
	require.Contains(t, m, "route=rejected status=431", m)
	require.Contains(t, m, "route=rejected status=408", m)
	require.Contains(t, m, "method=POST route=/echo status=413", m)
	l := logs.String()
	require.Contains(t, l, `"status":431`)
	require.Contains(t, l, `"status":408`)
	require.Contains(t, l, `"status":413`)
}

// TestConnectionsPerAddressAreCapped: beyond MaxConnsPerIP, a connection
// gets a 429 and is closed; once one closes, a new one is served.
func TestConnectionsPerAddressAreCapped(t *testing.T) {
	t.Parallel()
	addr, logs, metrics := hardened(t, ops.Limits{MaxConnsPerIP: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		held = append(held, c)
	}
	resp := exchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Contains(t, metrics(), "route=rejected status=429")
	require.Contains(t, logs.String(), "too many from one address")

	held[0].Close()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond, "a closed connection frees its slot")
}

// TestConnectionsAreCappedInTotal: beyond MaxConns, a connection gets a
// 503 and is closed, with a trace.
func TestConnectionsAreCappedInTotal(t *testing.T) {
	t.Parallel()
	addr, logs, metrics := hardened(t, ops.Limits{MaxConns: 1})
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp = exchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, metrics(), "route=rejected status=503")
	require.Contains(t, logs.String(), "too many connections")
}

// TestChunkedBodyOverTheLimitIs413: a chunked body is counted as it
// arrives and refused once past the limit; one within it is read.
func TestChunkedBodyOverTheLimitIs413(t *testing.T) {
	t.Parallel()
	addr, _, _ := hardened(t, ops.Limits{})
	chunk := strings.Repeat("a", 600)
	resp := exchange(t, addr, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
		fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", len(chunk), chunk, len(chunk), chunk))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	resp = exchange(t, addr, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(chunk), chunk))
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestRefusalFloodIsCountedWholeAndLoggedSampled: 50 refusals of the same
// kind are all counted, but do not write 50 log lines (one per second,
// with the number left out).
func TestRefusalFloodIsCountedWholeAndLoggedSampled(t *testing.T) {
	t.Parallel()
	addr, logs, metrics := hardened(t, ops.Limits{})
	for range 50 {
		resp := exchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 8<<10)+"\r\n\r\n")
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	}
	require.Contains(t, metrics(), "route=rejected status=431 count=50;")
	lines := strings.Count(logs.String(), `"status":431`)
	require.GreaterOrEqual(t, lines, 1)
	require.Less(t, lines, 50, "a flood is sampled in the log")
}

// TestPprofIsServedOnlyWhenMounted: without MountPprof /debug/pprof/ is a
// 404; with it, the index, a named profile and a CPU profile answer.
func TestPprofIsServedOnlyWhenMounted(t *testing.T) {
	t.Parallel()
	serve := func(mount bool) string {
		reg := ops.NewRegistry()
		app := ops.NewApp(fiber.Config{DisableStartupMessage: true}, ops.Limits{}, slog.New(slog.DiscardHandler), ops.NewHTTPMetrics(reg))
		ops.Mount(app, reg)
		if mount {
			ops.MountPprof(app)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = app.Listener(ops.Listener(app, ln)) }()
		t.Cleanup(func() { _ = app.Shutdown() })
		return "http://" + ln.Addr().String()
	}
	get := func(url string) (int, []byte) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b
	}
	off, on := serve(false), serve(true)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		code, _ := get(off + path)
		require.Equal(t, http.StatusNotFound, code, path)
	}
	code, body := get(on + "/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), "goroutine")
	code, body = get(on + "/debug/pprof/heap")
	require.Equal(t, http.StatusOK, code)
	require.True(t, bytes.HasPrefix(body, []byte{0x1f, 0x8b}), "a heap profile is gzipped protobuf")
	code, body = get(on + "/debug/pprof/profile?seconds=1")
	require.Equal(t, http.StatusOK, code)
	require.True(t, bytes.HasPrefix(body, []byte{0x1f, 0x8b}), "a CPU profile is gzipped protobuf")
}
