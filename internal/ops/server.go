package ops

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Limits bound what clients can make one process hold: connections, time
// to send a request, and (with ReadBody) bytes.
type Limits struct {
	// MaxConns is the number of connections served at once (default
	// 1024); beyond it, new connections get a 503 and are closed.
	MaxConns int
	// MaxConnsPerIP is the number of connections one client address may
	// hold (default 128; negative: no limit, e.g. behind a proxy that
	// connects from one address); beyond it, a 429 and the connection is
	// closed.
	MaxConnsPerIP int
	// HeaderTimeout is the time a client has to send a request's line and
	// headers (default 10 s): a 408 beyond.
	HeaderTimeout time.Duration
	// BodyTimeout is the time a client has, once the headers are in, to
	// send the body (default 30 s).
	BodyTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle that long (default 2
	// min).
	IdleTimeout time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxConns      = 1024
	DefaultMaxConnsPerIP = 128
	DefaultHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout   = 30 * time.Second
	DefaultIdleTimeout   = 2 * time.Minute
)

// prefetch is what fasthttp reads of a streamed body before the handler
// runs (its own constant): a body this small is read whole with the
// headers, a larger one is left on the connection for ReadBody.
const prefetch = 8 << 10

// drainLimit and drainTimeout bound what is read and discarded of a body
// the handler did not read, after its answer is sent, so that a client
// still writing it reads the answer rather than a connection reset.
const (
	drainLimit   = 64 << 20
	drainTimeout = 10 * time.Second
)

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerIP == 0 {
		l.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if l.MaxConnsPerIP < 0 {
		l.MaxConnsPerIP = 0
	}
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = DefaultHeaderTimeout
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// NewApp returns a Fiber app hardened against hostile clients, with
// Middleware installed (log, m): request bodies are streamed, not buffered
// (read them with ReadBody, never with c.Body(), which would read any
// length and inflate a Content-Encoding), so a declared Content-Length
// reserves nothing; connections are capped in total and per client
// address; headers and bodies have their own read deadlines; requests
// with ambiguous framing or headers, or a Content-Encoding, are refused
// before routing; a body left unread is drained (bounded) after the
// answer, so the client reads the answer. cfg.ErrorHandler also answers
// what the server refuses before any handler runs (408, 413, 431), and
// those answers are logged and counted like the others.
func NewApp(cfg fiber.Config, l Limits, log *slog.Logger, m *HTTPMetrics) *fiber.App {
	l = l.withDefaults()
	cfg.StreamRequestBody = true
	cfg.DisablePreParseMultipartForm = true
	// In streaming mode the server's body limit only bounds the prefetch.
	cfg.BodyLimit = prefetch
	cfg.Concurrency = 2 * l.MaxConns // a backstop: the listener (Serve) refuses first, with a trace
	cfg.ReadTimeout = l.HeaderTimeout
	cfg.IdleTimeout = l.IdleTimeout
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.ErrorHandler == nil {
		cfg.ErrorHandler = fiber.DefaultErrorHandler
	}
	cfg.ErrorHandler = serverErrors(cfg.ErrorHandler, log, m)
	app := fiber.New(cfg)
	perIP.Store(app, perIPLimit{n: l.MaxConnsPerIP, total: l.MaxConns, log: log, m: m})
	srv := app.Server()
	srv.HeaderReceived = func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		if bodyFollows(h) {
			return fasthttp.RequestConfig{ReadTimeout: l.BodyTimeout}
		}
		return fasthttp.RequestConfig{}
	}
	app.Use(Middleware(log, m))
	return app
}

type servedKey struct{}

// serverErrors wraps h so that the errors the server answers itself,
// before any handler (a body or header too large, a request too slow, an
// unreadable request), are logged and counted like requests.
//
// Log lines are sampled (one per status and second, with the count of
// those left out) so that a flood leaves a trace, not a flooded log; the
// metrics count every one.
func serverErrors(h fiber.ErrorHandler, log *slog.Logger, m *HTTPMetrics) fiber.ErrorHandler {
	var samplers sync.Map // status → *sampler
	return func(c *fiber.Ctx, err error) error {
		if c.Locals(servedKey{}) != nil {
			return h(c, err)
		}
		herr := h(c, err)
		status := c.Response().StatusCode()
		method := methodLabel(c.Request().Header.Method())
		if m != nil {
			code := strconv.Itoa(status)
			m.requests.WithLabelValues("rejected", method, code).Inc()
			m.latency.WithLabelValues("rejected", method, code).Observe(0)
		}
		if log != nil {
			v, _ := samplers.LoadOrStore(status, &sampler{})
			if ok, left := v.(*sampler).allow(time.Now()); ok {
				log.LogAttrs(c.UserContext(), slog.LevelWarn, "request refused by the server",
					slog.String("method", method), slog.String("route", "rejected"),
					slog.Int("status", status), slog.String("error", err.Error()),
					slog.Int("left_out_since_last_line", left))
			}
		}
		return herr
	}
}

// sampler lets one log line through per second and counts the others.
type sampler struct {
	mu   sync.Mutex
	next time.Time
	left int
}

// allow reports whether a line may be logged at now, and how many were
// left out since the last one.
func (s *sampler) allow(now time.Time) (ok bool, left int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.next) {
		s.left++
		return false, 0
	}
	s.next, left, s.left = now.Add(time.Second), s.left, 0
	return true, left
}

// methodLabel is the method as a metric label: one of the standard
// methods, or "other" (a label per invented method would let clients grow
// the registry without bound). The result never aliases Fiber's buffers.
func methodLabel(m []byte) string {
	switch string(m) {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodPost, fiber.MethodPut, fiber.MethodPatch,
		fiber.MethodDelete, fiber.MethodOptions, fiber.MethodConnect, fiber.MethodTrace:
		return strings.Clone(string(m))
	}
	return "other"
}

// ErrBodyNotAllowed answers a body on a GET, HEAD, DELETE or OPTIONS
// request (no route of Tandem reads one).
var ErrBodyNotAllowed = fiber.NewError(fiber.StatusBadRequest, "this method takes no request body")

// singletons are the request headers that must appear at most once: the
// server would believe one and a proxy in front of it perhaps the other.
var singletons = []string{"content-length", "transfer-encoding", "if-match", "if-none-match", "authorization",
	"content-type", "idempotency-key", "host", "stripe-signature"}

// guard refuses requests whose headers are ambiguous or announce what the
// app never accepts. It reads the raw header block, because the parsed
// one keeps a single Content-Length.
func guard(c *fiber.Ctx) error {
	h := &c.Request().Header
	counts := map[string]int{}
	var te, ce []byte
	for raw := h.RawHeaders(); len(raw) > 0; {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		k, v, ok := bytes.Cut(bytes.TrimRight(line, "\r"), []byte(":"))
		if !ok {
			continue
		}
		name := strings.ToLower(string(bytes.TrimSpace(k)))
		counts[name]++
		v = bytes.TrimSpace(v)
		switch name {
		case "transfer-encoding":
			te = v
		case "content-encoding":
			for _, enc := range bytes.Split(v, []byte(",")) {
				if enc = bytes.TrimSpace(enc); len(enc) > 0 && !bytes.EqualFold(enc, []byte("identity")) {
					ce = enc
				}
			}
		}
	}
	for _, name := range singletons {
		if counts[name] > 1 {
			c.Context().SetConnectionClose()
			return fiber.NewError(fiber.StatusBadRequest, "ambiguous request: the "+name+" header appears "+strconv.Itoa(counts[name])+" times")
		}
	}
	if counts["transfer-encoding"] > 0 && (counts["content-length"] > 0 || !bytes.EqualFold(te, []byte("chunked"))) {
		c.Context().SetConnectionClose()
		return fiber.NewError(fiber.StatusBadRequest, "ambiguous request: Transfer-Encoding must be chunked alone, without Content-Length")
	}
	if ce != nil {
		return fiber.NewError(fiber.StatusUnsupportedMediaType,
			"request bodies must not be compressed (Content-Encoding "+strconv.Quote(string(ce))+" is not accepted)")
	}
	if hasBody(c) {
		switch string(h.Method()) {
		case fiber.MethodGet, fiber.MethodHead, fiber.MethodDelete, fiber.MethodOptions:
			return ErrBodyNotAllowed
		}
	}
	return nil
}

func hasBody(c *fiber.Ctx) bool { return bodyFollows(&c.Request().Header) }

// bodyFollows reports whether a body follows h: a Content-Length above 0,
// or chunked (-1; -2 is "no Content-Length").
func bodyFollows(h *fasthttp.RequestHeader) bool {
	n := h.ContentLength()
	return n > 0 || n == -1
}

type consumedKey struct{}

// ReadBody reads the request body, refusing (413, fiber.ErrRequestEntityTooLarge)
// a body over limit bytes: by its Content-Length before reading anything,
// or as soon as a chunked body passes it. The bytes returned belong to the
// caller (they are not Fiber's buffers). Call it once, after whatever can
// be checked without the body (authentication).
func ReadBody(c *fiber.Ctx, limit int) ([]byte, error) {
	n := c.Request().Header.ContentLength()
	if n == 0 || n == -2 {
		c.Locals(consumedKey{}, true)
		return []byte{}, nil
	}
	if n > limit {
		return nil, fiber.ErrRequestEntityTooLarge
	}
	stream := c.Context().RequestBodyStream()
	if stream == nil {
		// Not streamed (an app not built by NewApp): the server read it.
		b := c.Request().Body()
		if len(b) > limit {
			return nil, fiber.ErrRequestEntityTooLarge
		}
		c.Locals(consumedKey{}, true)
		return bytes.Clone(b), nil
	}
	// Grow as bytes arrive: a declared length reserves at most 1 MiB.
	size := min(n, 1<<20)
	if size < 0 {
		size = 4 << 10
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+1))
	if _, err := buf.ReadFrom(io.LimitReader(stream, int64(limit)+1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fiber.ErrRequestTimeout
		}
		return nil, fiber.NewError(fiber.StatusBadRequest, "reading the request body: "+err.Error())
	}
	if buf.Len() > limit {
		return nil, fiber.ErrRequestEntityTooLarge
	}
	c.Locals(consumedKey{}, true)
	return buf.Bytes(), nil
}

// drainAfterAnswer, for a request whose body is still (partly) on the
// connection, sends the answer itself with Connection: close, closes the
// write side, then reads and discards up to drainLimit bytes of the body
// for up to drainTimeout before closing: a client that writes its whole
// body before reading gets the answer, not a reset.
func drainAfterAnswer(c *fiber.Ctx) {
	n := c.Request().Header.ContentLength()
	if c.Locals(consumedKey{}) != nil || (n >= 0 && n <= prefetch) {
		return
	}
	fctx := c.Context()
	stream := fctx.RequestBodyStream()
	if stream == nil {
		return
	}
	resp := fasthttp.AcquireResponse()
	fctx.Response.CopyTo(resp)
	resp.SetConnectionClose()
	if fctx.IsHead() {
		resp.SkipBody = true
	}
	fctx.HijackSetNoResponse(true)
	fctx.Hijack(func(conn net.Conn) {
		defer fasthttp.ReleaseResponse(resp)
		_ = conn.SetWriteDeadline(time.Now().Add(drainTimeout))
		w := bufio.NewWriter(conn)
		if resp.Write(w) != nil || w.Flush() != nil {
			return
		}
		if u, ok := conn.(interface{ UnsafeConn() net.Conn }); ok {
			if cw, ok := u.UnsafeConn().(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(drainTimeout))
		_, _ = io.CopyN(io.Discard, stream, drainLimit)
	})
}
