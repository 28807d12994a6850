package console_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/console"
	"github.com/tandem-sync/tandem/internal/pipeline"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

const token = "console-test-token"

type env struct {
	t    *testing.T
	base string
	st   *store.Store
	dsn  string
	c    *console.Console
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, dsn := testutil.NewStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := console.New(ctx, console.Config{Tokens: []string{token, "second-token"}, Providers: []string{"stripe"}, Users: st,
		Pipeline: pipeline.Source{Store: st, Providers: []string{"stripe"}}, Interval: 20 * time.Millisecond, KeepAlive: 20 * time.Millisecond,
		Replay: func(context.Context, string) (int, error) { return 0, errors.New("no broker here") }})
	require.NoError(t, err)
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	c.Mount(app)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return &env{t: t, base: "http://" + ln.Addr().String(), st: st, dsn: dsn, c: c}
}

// browser is a client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *env) post(c *http.Client, path string, form url.Values, header ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.base+path, strings.NewReader(form.Encode()))
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(e.t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (e *env) get(c *http.Client, path string) (*http.Response, string) {
	e.t.Helper()
	resp, err := c.Get(e.base + path)
	require.NoError(e.t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// csrf reads the CSRF token a signed-in page carries.
func csrf(t *testing.T, page string) string {
	t.Helper()
	_, rest, ok := strings.Cut(page, `data-csrf="`)
	require.True(t, ok, "no CSRF token on the page")
	v, _, _ := strings.Cut(rest, `"`)
	require.NotEmpty(t, v)
	return v
}

// Sign-in, the pages, actions guarded by the session and the CSRF token,
// and sign-out; bad tokens and forged or stale requests change nothing.
func TestSignInActionsAndSignOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "c@example.com", Name: "C"}, nil)
	require.NoError(t, err)
	b := browser(t)

	resp, page := e.get(b, "/console/")
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, page, `action="/console/sign-in"`, "not signed in: the sign-in page")
	resp, page = e.post(b, "/console/sign-in", url.Values{"token": {"wrong"}})
	require.Equal(t, 401, resp.StatusCode)
	require.Contains(t, page, "not an API token")
	resp, _ = e.get(b, "/console/events")
	require.Equal(t, 401, resp.StatusCode)

	// Another site's page cannot sign a browser in (login CSRF).
	resp, _ = e.post(b, "/console/sign-in", url.Values{"token": {token}}, "Origin", "https://evil.example")
	require.Equal(t, 403, resp.StatusCode)

	resp, _ = e.post(b, "/console/sign-in", url.Values{"token": {token}})
	require.Equal(t, 303, resp.StatusCode)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "tandem_console" {
			cookie = c
		}
	}
	require.NotNil(t, cookie)
	require.True(t, cookie.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	require.NotContains(t, cookie.Value, token, "the cookie holds the token")

	resp, page = e.get(b, "/console/")
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, page, `id="providers"`)
	require.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))
	token := csrf(t, page)

	resp, page = e.get(b, "/console/users/"+u.ID)
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, page, "c@example.com")
	require.Contains(t, page, "change (api)")
	resp, _ = e.get(b, "/console/users/0193a8b0-0000-7000-8000-000000000000")
	require.Equal(t, 404, resp.StatusCode)

	outbox := func() int64 {
		return testutil.QueryInt(t, e.dsn, "SELECT COUNT(*) FROM outbox WHERE origin = 'resync'")
	}
	// Without the CSRF token, or from another origin: refused.
	resp, _ = e.post(b, "/console/users/"+u.ID+"/resync", url.Values{"provider": {"stripe"}})
	require.Equal(t, 403, resp.StatusCode)
	resp, _ = e.post(b, "/console/users/"+u.ID+"/resync", url.Values{"provider": {"stripe"}, "csrf": {token}}, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, 403, resp.StatusCode)
	// Without the cookie: the sign-in page.
	resp, page = e.post(http.DefaultClient, "/console/users/"+u.ID+"/resync", url.Values{"provider": {"stripe"}, "csrf": {token}})
	require.Equal(t, 401, resp.StatusCode)
	require.Contains(t, page, "sign in again")
	require.Zero(t, outbox())
	resp, _ = e.post(b, "/console/users/0193a8b0-0000-7000-8000-000000000000/resync", url.Values{"provider": {"stripe"}, "csrf": {token}})
	require.Equal(t, 404, resp.StatusCode)
	require.Zero(t, outbox())

	resp, _ = e.post(b, "/console/users/"+u.ID+"/resync", url.Values{"provider": {"stripe"}, "csrf": {token}})
	require.Equal(t, 303, resp.StatusCode)
	require.Equal(t, "/console/users/"+u.ID, resp.Header.Get("Location"))
	require.EqualValues(t, 1, outbox())

	resp, page = e.post(b, "/console/dlq/stripe/replay", url.Values{"csrf": {token}})
	require.Equal(t, 503, resp.StatusCode)
	require.Contains(t, page, "no broker here")

	resp, _ = e.post(b, "/console/sign-out", url.Values{"csrf": {token}})
	require.Equal(t, 303, resp.StatusCode)
	_, page = e.get(b, "/console/")
	require.Contains(t, page, `action="/console/sign-in"`, "signed out")
}

// An expired or forged cookie is no session.
func TestExpiredOrForgedCookie(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, v := range []string{"1.AAAA", "99999999999.AAAA", "garbage", ""} {
		req, err := http.NewRequest("GET", e.base+"/console/", nil)
		require.NoError(t, err)
		req.AddCookie(&http.Cookie{Name: "tandem_console", Value: v})
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Contains(t, string(b), `action="/console/sign-in"`, "cookie %q", v)
	}
}

// The event stream sends the pipeline, and a client that goes away is
// dropped: its subscription (and goroutine) is freed.
func TestEventsStreamAndClientGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := browser(t)
	resp, _ := e.post(b, "/console/sign-in", url.Values{"token": {"second-token"}})
	require.Equal(t, 303, resp.StatusCode)

	req, err := http.NewRequest("GET", e.base+"/console/events", nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	resp, err = b.Do(req.WithContext(ctx))
	require.NoError(t, err)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "data: ") {
			require.Contains(t, line, `"outbox"`)
			break
		}
	}
	require.Equal(t, 1, e.c.Subscribers())
	cancel()
	resp.Body.Close()
	require.Eventually(t, func() bool { return e.c.Subscribers() == 0 }, 10*time.Second, 10*time.Millisecond)
}

// Signed in over HTTPS (here: behind a proxy saying so), the cookie is
// Secure; over plain HTTP it is not (a browser would drop it).
func TestCookieSecureOverHTTPS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		proto  string
		secure bool
	}{{"https", true}, {"", false}} {
		var header []string
		if tc.proto != "" {
			header = []string{"X-Forwarded-Proto", tc.proto}
		}
		resp, _ := e.post(browser(t), "/console/sign-in", url.Values{"token": {token}}, header...)
		require.Equal(t, 303, resp.StatusCode)
		require.Len(t, resp.Cookies(), 1)
		require.Equal(t, tc.secure, resp.Cookies()[0].Secure, "proto %q", tc.proto)
	}
}
