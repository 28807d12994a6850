// Package api is Tandem's REST API (DESIGN §3): CRUD on users under /v1,
// bearer-token auth, Idempotency-Key on create, If-Match on PATCH and DELETE,
// RFC 9457 problem+json errors, and the OpenAPI description at
// /openapi.yaml.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"log/slog"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
)

//go:embed openapi.yaml
var openAPISpec []byte

// OpenAPISpec returns the API description served at /openapi.yaml.
func OpenAPISpec() []byte { return openAPISpec }

// BodyLimit is the largest request body accepted (413 beyond).
const BodyLimit = 1 << 20

// Users is what the HTTP layer needs from storage.
type Users interface {
	CreateUser(ctx context.Context, in store.NewUser, save *store.SaveResponse) (store.User, error)
	GetUser(ctx context.Context, id string) (store.User, error)
	ListUsers(ctx context.Context, q store.ListQuery) ([]store.User, bool, error)
	UpdateUser(ctx context.Context, id string, p store.Patch, ifMatch int64) (store.User, error)
	DeleteUser(ctx context.Context, id string, ifMatch int64) (store.User, error)
	Links(ctx context.Context, userIDs ...string) (map[string][]store.Link, error)
	History(ctx context.Context, userID string, q store.HistoryQuery) ([]store.HistoryEntry, bool, error)
	Resync(ctx context.Context, userID, provider string) error
}

// Idempotency is what the HTTP layer needs to honour Idempotency-Key.
type Idempotency interface {
	BeginIdempotent(ctx context.Context, k store.IdempotencyKey, ttl, abandon time.Duration) (store.IdempotencyKey, *store.StoredResponse, error)
	FinishIdempotent(ctx context.Context, k store.IdempotencyKey, status int, body []byte) error
	ReleaseIdempotent(ctx context.Context, k store.IdempotencyKey) error
}

// Config configures the API server.
type Config struct {
	// Tokens are the bearer tokens accepted; at least one is required.
	Tokens []string
	// Providers are the enabled providers, shown in every user's sync block.
	Providers []string
	// IdempotencyTTL is how long an Idempotency-Key is kept (default 24 h).
	IdempotencyTTL time.Duration
	// IdempotencyAbandon is after how long an unfinished key (its process
	// died) is taken over by a retry (default 1 min).
	IdempotencyAbandon time.Duration
	// Limits bound connections and read times (ops.Limits defaults).
	Limits ops.Limits
}

// Server is the REST API.
type Server struct {
	users  Users
	idem   Idempotency
	cfg    Config
	log    *slog.Logger
	tokens [][32]byte
}

// New builds the Fiber app of the API with its routes and middleware;
// checks feed /readyz, reg gets the HTTP metrics and serves /metrics.
func New(users Users, idem Idempotency, cfg Config, log *slog.Logger, reg *prometheus.Registry, checks ...ops.Check) *fiber.App {
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.IdempotencyAbandon <= 0 {
		cfg.IdempotencyAbandon = time.Minute
	}
	s := &Server{users: users, idem: idem, cfg: cfg, log: log}
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
	}
	// Bodies are streamed: each handler reads its own with ops.ReadBody,
	// after authentication, up to BodyLimit.
	app := ops.NewApp(fiber.Config{
		AppName:               "tandem-api",
		DisableStartupMessage: true,
		ErrorHandler:          errorHandler(log),
		WriteTimeout:          30 * time.Second,
	}, cfg.Limits, log, ops.NewHTTPMetrics(reg))
	ops.Mount(app, reg, checks...)
	app.Get("/openapi.yaml", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "application/yaml")
		return c.Send(openAPISpec)
	})
	v1 := app.Group("/v1", s.auth)
	v1.Post("/users", s.createUser)
	v1.Get("/users", s.listUsers)
	v1.Get("/users/:id", s.getUser)
	v1.Patch("/users/:id", s.patchUser)
	v1.Delete("/users/:id", s.deleteUser)
	v1.Get("/users/:id/history", s.getHistory)
	v1.Post("/users/:id/sync", s.resync)
	return app
}

// auth requires a valid bearer token and remembers which one (as a hash) for
// idempotency scoping.
func (s *Server) auth(c *fiber.Ctx) error {
	h := c.Get(fiber.HeaderAuthorization)
	const prefix = "bearer "
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
		ok := 0
		for _, t := range s.tokens {
			ok |= subtle.ConstantTimeCompare(sum[:], t[:])
		}
		if ok == 1 {
			c.Locals(tokenKey{}, sum)
			return c.Next()
		}
	}
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="tandem"`)
	return problem(fiber.StatusUnauthorized, "unauthorized", "a valid bearer token is required in the Authorization header")
}

type tokenKey struct{}
