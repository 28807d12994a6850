package api_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
)

// rawExchange sends head (a request line and headers, without the blank
// line) and body on a fresh connection, writing all of body before
// reading, as a simple client does, and returns the answer.
func (e *env) rawExchange(head string, body []byte) (*http.Response, []byte) {
	e.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	require.NoError(e.t, err)
	defer conn.Close()
	_, err = conn.Write(append([]byte(strings.ReplaceAll(head, "\n", "\r\n")+"\r\n\r\n"), body...))
	require.NoError(e.t, err, "the client could write its whole request")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(e.t, err, "the client reads an answer, not a reset")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp, b
}

// TestOversizedBodyAnswerReachesTheClient: a client that writes its whole
// over-limit body before reading reads the 413 (not a broken pipe or a
// reset), without retrying.
func TestOversizedBodyAnswerReachesTheClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, size := range []int{api.BodyLimit + 1, 4 * api.BodyLimit} {
		body := bytes.Repeat([]byte("a"), size)
		resp, b := e.rawExchange(fmt.Sprintf("POST /v1/users HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Type: application/json\nContent-Length: %d", token, size), body)
		require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s", b)
		require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	}
	require.Zero(t, e.count("SELECT COUNT(*) FROM users"))
}

// TestDeclaredBodiesReserveNoMemory opens 300 connections that each
// declare a 1 MiB body (the limit) and send one byte of it: the api must
// not reserve the declared size for each (it did: +327 MB).
func TestDeclaredBodiesReserveNoMemory(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.base, "http://")
	e.create("warm@example.com", "Warm Up")
	before, heapBefore := testutil.RSS(t), testutil.Heap()
	conns := make([]net.Conn, 0, 300)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 300 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		conns = append(conns, c)
		_, _ = fmt.Fprintf(c, "POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", token, api.BodyLimit)
	}
	testutil.WaitReadByServer(t, addr)
	grown, heapGrown := testutil.RSS(t)-before, testutil.Heap()-heapBefore
	t.Logf("RSS %d MB before, grew by %d MB (heap in use by %d MB) with 300 connections declaring 1 MiB each", before>>20, grown>>20, heapGrown>>20)
	require.Less(t, grown, int64(64<<20), "300 connections that declared 1 MiB bodies grew the RSS by %d MB", grown>>20)
	require.Less(t, heapGrown, int64(64<<20), "300 connections that declared 1 MiB bodies grew the heap by %d MB", heapGrown>>20)
}

// TestGzipBombThroughTwoContentEncodings: a 128 MiB gzip bomb sent with
// two Content-Encoding headers (identity first, gzip last) is refused
// (415) without being inflated, and creates nothing.
func TestGzipBombThroughTwoContentEncodings(t *testing.T) {
	e := newEnv(t)
	// 128 gzip members of 1 MiB of zeros each: one stream that inflates
	// to 128 MiB.
	var member bytes.Buffer
	zw := gzip.NewWriter(&member)
	_, _ = zw.Write(make([]byte, 1<<20))
	require.NoError(t, zw.Close())
	bomb := bytes.NewBuffer(bytes.Repeat(member.Bytes(), 128))
	before := testutil.RSS(t)
	resp, b := e.rawExchange(fmt.Sprintf("POST /v1/users HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Type: application/json\nContent-Encoding: identity\nContent-Encoding: gzip\nContent-Length: %d", token, bomb.Len()), bomb.Bytes())
	grown := testutil.RSS(t) - before
	t.Logf("RSS grew by %d MB with a %d KiB gzip bomb", grown>>20, bomb.Len()>>10)
	require.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode, "%s", b)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	require.Less(t, grown, int64(64<<20))
	require.Zero(t, e.count("SELECT COUNT(*) FROM users"))
}

// TestAmbiguousHeadersAreRefused: duplicate If-Match (the first one used
// to win: * then "99" was an unconditional update), two Content-Lengths,
// Transfer-Encoding with Content-Length: 400, nothing changes.
func TestAmbiguousHeadersAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create("ada@example.com", "Ada")["id"].(string)

	hreq, err := http.NewRequest(http.MethodPatch, e.base+"/v1/users/"+id, strings.NewReader(`{"name":"Mallory"}`))
	require.NoError(t, err)
	hreq.Header.Set("Authorization", "Bearer "+token)
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Add("If-Match", "*")
	hreq.Header.Add("If-Match", `"99"`)
	resp, err := e.client.Do(hreq)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	requireProblem(t, response{Status: resp.StatusCode, Header: resp.Header, Body: b}, http.StatusBadRequest)

	patch := `{"name":"Mallory"}`
	for name, head := range map[string]string{
		"two content lengths": fmt.Sprintf("PATCH /v1/users/%s HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Type: application/json\nContent-Length: %d\nContent-Length: 5", id, token, len(patch)),
		"te and cl":           fmt.Sprintf("PATCH /v1/users/%s HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Type: application/json\nTransfer-Encoding: chunked\nContent-Length: %d", id, token, len(patch)),
	} {
		resp, b := e.rawExchange(head, []byte(patch))
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", name, b)
	}
	u := e.do(req{Method: "GET", Path: "/v1/users/" + id}).json(t)
	require.Equal(t, "Ada", u["name"])
	require.EqualValues(t, 1, u["version"])
}

// TestMetricsStayScrapableUnderMixedMethods runs requests of every method
// at once, then scrapes /metrics: it answers 200 with only real methods as
// labels (a borrowed method string used to mutate: "POS", "GETETE").
func TestMetricsStayScrapableUnderMixedMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	methods := []string{"GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS", "HEAD"}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				m := methods[(w+i)%len(methods)]
				hreq, _ := http.NewRequest(m, e.base+"/v1/users/"+fmt.Sprint(i), nil)
				hreq.Header.Set("Authorization", "Bearer "+token)
				resp, err := e.client.Do(hreq)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	resp, err := e.client.Get(e.base + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "tandem_http_requests_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `method="`)
		m, _, _ := strings.Cut(rest, `"`)
		require.Contains(t, methods, m, line)
	}
}

// TestDatabaseOutageIs503WithRetryAfter: while MySQL cannot be reached
// every call answers 503 problem+json with Retry-After (a client retries
// later), not 500; once it is back, calls succeed again.
func TestDatabaseOutageIs503WithRetryAfter(t *testing.T) {
	t.Parallel()
	dsn := testutil.NewDatabase(t)
	require.NoError(t, store.Migrate(context.Background(), dsn))
	proxy := tcpproxy.New(t, "127.0.0.1:3306")
	proxied := strings.Replace(dsn, "tcp(127.0.0.1:3306)", "tcp("+proxy.Addr()+")", 1)
	require.NotEqual(t, dsn, proxied)
	st, err := store.Open(context.Background(), proxied, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	e := newEnvOn(t, st, dsn)
	id := e.create("ada@example.com", "Ada")["id"].(string)

	proxy.Cut()
	for _, r := range []req{
		{Method: "GET", Path: "/v1/users/" + id},
		{Method: "GET", Path: "/v1/users"},
		{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "bob@example.com", "name": "Bob"}},
		{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "eve@example.com", "name": "Eve"}, Header: map[string]string{"Idempotency-Key": "k1"}},
		{Method: "PATCH", Path: "/v1/users/" + id, Body: map[string]any{"name": "Ada King"}},
		{Method: "DELETE", Path: "/v1/users/" + id},
	} {
		resp := e.do(r)
		p := requireProblem(t, resp, http.StatusServiceUnavailable)
		require.Equal(t, "https://tandem-sync.dev/problems/unavailable", p["type"], "%s %s", r.Method, r.Path)
		require.NotEmpty(t, resp.Header.Get("Retry-After"), "%s %s", r.Method, r.Path)
	}
	proxy.Restore()
	require.Equal(t, "Ada", e.do(req{Method: "GET", Path: "/v1/users/" + id}).json(t)["name"])
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
}

// TestServerRefusalsReachLogsAndMetrics: a 431 (headers over the read
// buffer) and a 413 answered by the server itself leave an access-log line
// and a count in /metrics (they used to leave no trace).
func TestServerRefusalsReachLogsAndMetrics(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	var logs testutil.SyncBuffer
	reg := ops.NewRegistry()
	app := api.New(st, st, api.Config{Tokens: []string{token}, Providers: []string{"stripe"}},
		slog.New(slog.NewJSONHandler(&logs, nil)), reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	e := &env{t: t, base: "http://" + ln.Addr().String(), client: http.DefaultClient}

	resp, _ := e.rawExchange("GET /v1/users HTTP/1.1\nHost: x\nX-Big: "+strings.Repeat("a", 16<<10), nil)
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	resp, _ = e.rawExchange(fmt.Sprintf("POST /v1/users HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Type: application/json\nContent-Length: %d", token, 2*api.BodyLimit), bytes.Repeat([]byte("a"), 2*api.BodyLimit))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	metrics, err := http.Get(e.base + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	require.Regexp(t, `tandem_http_requests_total\{[^}]*status="431"[^}]*\} 1`, string(b))
	require.Regexp(t, `tandem_http_requests_total\{[^}]*status="413"[^}]*\} 1`, string(b))
	require.Contains(t, logs.String(), `"status":431`)
	require.Contains(t, logs.String(), `"status":413`)
}
