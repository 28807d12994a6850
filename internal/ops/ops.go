// Package ops holds what every Tandem process shares for operation: the JSON
// logger, the /healthz, /readyz and /metrics endpoints, per-request ids,
// access logs and HTTP metrics, and serving with a graceful shutdown.
//
// It also holds the HTTP server's defences against hostile clients
// (NewApp, ReadBody, Limits): bodies are streamed and read only by the
// handler that wants them, up to its own limit, after authentication;
// connections are capped in total and per address; headers and bodies have
// read deadlines; ambiguous or compressed requests are refused before
// routing; and what the server refuses on its own (408, 413, 431, 429) is
// logged and counted under route "rejected".
package ops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewLogger returns a JSON slog logger at level (debug, info, warn, error).
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors registered.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check is one readiness dependency (MySQL, RabbitMQ…).
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
	// Soft checks are reported but do not make the process unready (the api
	// keeps taking writes while RabbitMQ is down: they wait in the outbox).
	Soft bool
}

// Mount adds GET /healthz (the process is alive), GET /readyz (each check's
// state, "ok" or "unavailable" (or the check's DetailError), the error itself logged; 503 when a check
// that is not Soft fails) and GET /metrics.
func Mount(app *fiber.App, reg *prometheus.Registry, checks ...Check) {
	app.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	app.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		status := fiber.StatusOK
		out := fiber.Map{}
		for _, ch := range checks {
			if err := ch.Fn(ctx); err != nil {
				if !ch.Soft {
					status = fiber.StatusServiceUnavailable
				}
				// Anyone may call /readyz: the cause (addresses, user
				// names, driver messages) goes to the log only.
				out[ch.Name] = publicDetail(err)
				Logger(c.UserContext(), slog.Default()).Warn("readiness check failed",
					"check", ch.Name, "soft", ch.Soft, "error", err.Error())
			} else {
				out[ch.Name] = "ok"
			}
		}
		return c.Status(status).JSON(out)
	})
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
}

type ctxKey struct{}

// Logger returns the request-scoped logger stored in ctx, or fallback.
func Logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(ctxKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// WithLogger stores l in ctx.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// HTTPMetrics are request counts and latency by route and status.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewHTTPMetrics registers the HTTP metrics of one process on reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_http_request_duration_seconds", Help: "HTTP request latency by route, method and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "method", "status"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Middleware refuses ambiguous requests (see NewApp), then gives every request an id (the X-Request-Id it came with, if
// sane, else a fresh one; echoed in the response), a request-scoped logger
// in its user context, an access-log line and metrics. It never logs
// headers, so tokens stay out of the logs.
func Middleware(base *slog.Logger, m *HTTPMetrics) fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		c.Locals(servedKey{}, true)
		rid := c.Get(fiber.HeaderXRequestID)
		if !saneID(rid) {
			rid = newID()
		} else {
			rid = strings.Clone(rid)
		}
		c.Set(fiber.HeaderXRequestID, rid)
		log := base.With("request_id", rid)
		c.SetUserContext(WithLogger(c.UserContext(), log))
		err := guard(c)
		if err == nil {
			err = c.Next()
		}
		if err != nil {
			// Let the app's error handler write the response now so the
			// status below is the one sent.
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				_ = c.SendStatus(fiber.StatusInternalServerError)
			}
		}
		status := c.Response().StatusCode()
		route := c.Route().Path
		if route == "" || route == "/" && c.Path() != "/" {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		// Fiber's strings point into buffers it reuses for the next
		// request: a label keeps its string for the process's life.
		method := methodLabel(c.Request().Header.Method())
		if m != nil {
			code := strconv.Itoa(status)
			m.requests.WithLabelValues(route, method, code).Inc()
			m.latency.WithLabelValues(route, method, code).Observe(elapsed.Seconds())
		}
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		log.LogAttrs(c.UserContext(), level, "request",
			slog.String("method", method), slog.String("route", route), slog.String("path", strings.Clone(c.Path())),
			slog.Int("status", status), slog.Duration("duration", elapsed))
		drainAfterAnswer(c)
		return nil
	}
}

func saneID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Serve runs app on addr until ctx is cancelled, then stops accepting
// connections and waits up to timeout for in-flight requests to finish.
// For an app built by NewApp it applies the connection caps of its Limits
// (see Listener).
func Serve(ctx context.Context, app *fiber.App, addr string, timeout time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ServeListener(ctx, app, ln, timeout)
}
