package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

const token = "test-token"

// env is one API server on loopback over its own database.
type env struct {
	t      *testing.T
	base   string
	store  *store.Store
	dsn    string
	router routers.Router
	client *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, dsn := testutil.NewStore(t)
	return newEnvOn(t, st, dsn)
}

// newEnvOn serves the API over st (whose database dsn names).
func newEnvOn(t *testing.T, st *store.Store, dsn string) *env {
	t.Helper()
	app := api.New(st, st, api.Config{Tokens: []string{token, "other-token"}, Providers: []string{"stripe"}},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), ops.NewRegistry(), ops.Check{Name: "mysql", Fn: st.Ping})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	base := "http://" + ln.Addr().String()

	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPISpec())
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()))
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return &env{t: t, base: base, store: st, dsn: dsn, router: router,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, ExpectContinueTimeout: 10 * time.Second}}}
}

// response is a finished HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &m), "body: %s", r.Body)
	return m
}

// req describes a request; Body is marshalled to JSON unless it is a string
// or []byte, which are sent as they are.
type req struct {
	Method  string
	Path    string
	Body    any
	Header  map[string]string
	NoAuth  bool
	Invalid bool // the request deliberately breaks the spec: skip its request validation
}

// do sends r and checks that the request (unless r.Invalid) and the
// response match the OpenAPI description.
func (e *env) do(r req) response {
	e.t.Helper()
	var body []byte
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = []byte(b)
	case []byte:
		body = b
	default:
		var err error
		body, err = json.Marshal(b)
		require.NoError(e.t, err)
	}
	hreq, err := http.NewRequest(r.Method, e.base+r.Path, bytes.NewReader(body))
	require.NoError(e.t, err)
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if !r.NoAuth {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range r.Header {
		hreq.Header.Set(k, v)
	}
	resp, err := e.client.Do(hreq)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	rbody, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	out := response{Status: resp.StatusCode, Header: resp.Header, Body: rbody}
	e.validate(hreq, body, out, r.Invalid)
	return out
}

func (e *env) validate(hreq *http.Request, body []byte, resp response, skipRequest bool) {
	e.t.Helper()
	route, params, err := e.router.FindRoute(hreq)
	if err != nil {
		return // not a described route (health, unknown paths)
	}
	hreq.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{Request: hreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if !skipRequest && resp.Status < 400 {
		require.NoError(e.t, openapi3filter.ValidateRequest(context.Background(), in), "request does not match the spec")
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.Status,
		Header: resp.Header, Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	out.SetBodyBytes(resp.Body)
	require.NoError(e.t, openapi3filter.ValidateResponse(context.Background(), out),
		"response %d does not match the spec: %s", resp.Status, resp.Body)
}

func (e *env) create(email, name string) map[string]any {
	e.t.Helper()
	r := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": email, "name": name}})
	require.Equal(e.t, 201, r.Status, "%s", r.Body)
	return r.json(e.t)
}

func (e *env) count(q string, args ...any) int64 {
	e.t.Helper()
	return testutil.QueryInt(e.t, e.dsn, q, args...)
}

// requireProblem checks a problem+json answer with the given status.
func requireProblem(t *testing.T, r response, status int) map[string]any {
	t.Helper()
	require.Equal(t, status, r.Status, "%s", r.Body)
	require.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json"), r.Header.Get("Content-Type"))
	p := r.json(t)
	require.EqualValues(t, status, p["status"])
	require.NotEmpty(t, p["type"])
	require.NotEmpty(t, p["title"])
	return p
}
