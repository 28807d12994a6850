// Package console is the operator's page the api serves at /console/: the
// pipeline live (server-sent events, no polling from the page), the users
// needing attention with their reason, a user's sync state and history, and
// buttons to resync a user and to replay a provider's dead letters.
//
// It is server-rendered html/template with a little JavaScript, all
// embedded in the binary (no build step). Sign-in takes an API token
// (TANDEM_API_TOKENS) and keeps a session in an HttpOnly, SameSite=Strict
// cookie signed with that token (so every replica accepts it, and removing
// the token ends its sessions); actions (POST) also need a CSRF token bound
// to the session and are refused from other origins.
//
// The live view is one snapshot (internal/pipeline) taken every Interval
// while at least one page is open, shared by every open page: a page costs
// one connection and one goroutine, and is sent only what changed.
package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/pipeline"
	"github.com/tandem-sync/tandem/internal/store"
)

//go:embed templates/*.html static/*
var files embed.FS

// Users is what the console needs of the store.
type Users interface {
	GetUser(ctx context.Context, id string) (store.User, error)
	Links(ctx context.Context, userIDs ...string) (map[string][]store.Link, error)
	History(ctx context.Context, userID string, q store.HistoryQuery) ([]store.HistoryEntry, bool, error)
	Resync(ctx context.Context, userID, provider string) error
}

// Snapshotter takes a snapshot of the pipeline (pipeline.Source).
type Snapshotter interface {
	Snapshot(ctx context.Context) (pipeline.Status, error)
}

// Config configures the console.
type Config struct {
	Tokens    []string // the API tokens that sign in (at least one)
	Providers []string
	Users     Users
	Pipeline  Snapshotter
	// Replay moves a provider's dead letters back to its work queue and
	// says how many (broker.DeadLetters.Replay); nil hides the button.
	Replay func(ctx context.Context, provider string) (int, error)
	// Interval is how often the live view is refreshed (default 1s).
	Interval time.Duration
	// SessionTTL is how long a sign-in lasts (default 12h).
	SessionTTL time.Duration
	// StreamFor is how long one event stream lasts before the server ends
	// it and the browser reconnects (default 25s: below the server's
	// write timeout).
	StreamFor time.Duration
	// KeepAlive is how often an idle event stream is written to (a
	// comment line), which is also how soon a client that went away is
	// noticed and its resources freed (default 5s).
	KeepAlive time.Duration
	// Secure marks the cookie Secure; it is also set when the sign-in
	// came over HTTPS (TLS, or X-Forwarded-Proto: https from a proxy).
	Secure bool
	Log    *slog.Logger
}

// Console serves the operator pages.
type Console struct {
	cfg  Config
	keys [][]byte
	tmpl *template.Template
	hub  *hub
}

// cookieName is the session cookie.
const cookieName = "tandem_console"

// New builds the console; its live view stops when ctx ends (then every
// open event stream ends too, so a shutdown is not held up).
func New(ctx context.Context, cfg Config) (*Console, error) {
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("console: no API token to sign in with")
	}
	if cfg.Users == nil || cfg.Pipeline == nil {
		return nil, errors.New("console: Users and Pipeline are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.StreamFor <= 0 {
		cfg.StreamFor = 25 * time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"ago":      ago,
		"stamp":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000") },
		"ms":       func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) },
		"deref":    func(s *string) string { return derefString(s) },
		"rate":     func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
		"duration": func(s float64) string { return ago(time.Duration(s * float64(time.Second))) },
	}).ParseFS(files, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	c := &Console{cfg: cfg, tmpl: tmpl}
	for _, t := range cfg.Tokens {
		c.keys = append(c.keys, []byte(t))
	}
	c.hub = newHub(ctx, cfg.Pipeline, cfg.Interval, cfg.Log)
	return c, nil
}

// Subscribers is how many event streams are open (tests, benchmarks).
func (c *Console) Subscribers() int { return c.hub.count() }

// Mount adds the console's routes under /console to app.
func (c *Console) Mount(app *fiber.App) {
	static, _ := fs.Sub(files, "static")
	g := app.Group("/console", c.headers)
	g.Get("/static/:name", func(ctx *fiber.Ctx) error {
		name := ctx.Params("name")
		b, err := fs.ReadFile(static, name)
		if err != nil {
			return ctx.Status(fiber.StatusNotFound).SendString("not found")
		}
		switch {
		case strings.HasSuffix(name, ".js"):
			ctx.Set(fiber.HeaderContentType, "text/javascript; charset=utf-8")
		case strings.HasSuffix(name, ".css"):
			ctx.Set(fiber.HeaderContentType, "text/css; charset=utf-8")
		}
		ctx.Set(fiber.HeaderCacheControl, "no-cache")
		return ctx.Send(b)
	})
	g.Get("/", c.dashboard)
	g.Post("/sign-in", c.signIn)
	g.Post("/sign-out", c.action(c.signOut))
	g.Get("/users/:id", c.userPage)
	g.Post("/users/:id/resync", c.action(c.resync))
	g.Post("/dlq/:provider/replay", c.action(c.replay))
	g.Get("/events", c.events)
}

// headers sets the security headers of every console response.
func (c *Console) headers(ctx *fiber.Ctx) error {
	ctx.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	ctx.Set("X-Frame-Options", "DENY")
	ctx.Set("X-Content-Type-Options", "nosniff")
	ctx.Set("Referrer-Policy", "same-origin")
	ctx.Set(fiber.HeaderCacheControl, "no-store")
	return ctx.Next()
}

// session is a signed-in browser.
type session struct {
	key     []byte // the token it signed in with
	expires int64
	csrf    string
}

func (c *Console) mac(key []byte, purpose string, expires int64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("tandem-console|" + purpose + "|" + strconv.FormatInt(expires, 10)))
	return m.Sum(nil)
}

func (c *Console) newCookie(key []byte, expires int64) string {
	return strconv.FormatInt(expires, 10) + "." + base64.RawURLEncoding.EncodeToString(c.mac(key, "session", expires))
}

// session returns the signed-in session of the request, if any: a cookie
// signed with one of the tokens and not expired.
func (c *Console) session(ctx *fiber.Ctx) (session, bool) {
	v := ctx.Cookies(cookieName)
	exp, sig, ok := strings.Cut(v, ".")
	if !ok {
		return session{}, false
	}
	expires, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || time.Now().Unix() >= expires {
		return session{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return session{}, false
	}
	for _, k := range c.keys {
		if hmac.Equal(got, c.mac(k, "session", expires)) {
			return session{key: k, expires: expires,
				csrf: base64.RawURLEncoding.EncodeToString(c.mac(k, "csrf", expires))}, true
		}
	}
	return session{}, false
}

// sameOrigin refuses requests a browser says come from another site.
func sameOrigin(ctx *fiber.Ctx) bool {
	if site := ctx.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := ctx.Get(fiber.HeaderOrigin); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != string(ctx.Request().Host()) {
			return false
		}
	}
	return true
}

// form reads a urlencoded form body (at most 4 KiB).
func form(ctx *fiber.Ctx) (url.Values, error) {
	b, err := ops.ReadBody(ctx, 4096)
	if err != nil {
		return nil, err
	}
	return url.ParseQuery(string(b))
}

// action wraps a POST handler: signed in, same origin, CSRF token matches;
// otherwise nothing happens.
func (c *Console) action(h func(ctx *fiber.Ctx, s session, f url.Values) error) fiber.Handler {
	return func(ctx *fiber.Ctx) error {
		if !sameOrigin(ctx) {
			return c.page(ctx.Status(fiber.StatusForbidden), "error", pageData{Title: "Refused", Message: "This request came from another site."})
		}
		s, ok := c.session(ctx)
		if !ok {
			return c.signInPage(ctx.Status(fiber.StatusUnauthorized), "Your session has ended: sign in again.")
		}
		f, err := form(ctx)
		if err != nil {
			return c.page(ctx.Status(fiber.StatusBadRequest), "error", pageData{Title: "Bad request", Message: "The form could not be read."})
		}
		if subtle.ConstantTimeCompare([]byte(f.Get("csrf")), []byte(s.csrf)) != 1 {
			return c.page(ctx.Status(fiber.StatusForbidden), "error", pageData{Title: "Refused", Message: "The form is stale or forged: reload the page and try again."})
		}
		return h(ctx, s, f)
	}
}

// pageData is what every template gets.
type pageData struct {
	Title     string
	CSRF      string
	Message   string
	Error     string
	Providers []string
	Status    *pipeline.Status
	Replay    bool
	User      *userView
}

type userView struct {
	User    store.User
	Deleted bool
	Links   []linkView
	History []store.HistoryEntry
}

type linkView struct {
	Provider string
	store.Link
}

func (c *Console) page(ctx *fiber.Ctx, name string, d pageData) error {
	d.Providers = c.cfg.Providers
	ctx.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	var b strings.Builder
	if err := c.tmpl.ExecuteTemplate(&b, name+".html", d); err != nil {
		return fmt.Errorf("console: rendering %s: %w", name, err)
	}
	return ctx.SendString(b.String())
}

func (c *Console) signInPage(ctx *fiber.Ctx, msg string) error {
	return c.page(ctx, "signin", pageData{Title: "Sign in", Error: msg})
}

func (c *Console) signIn(ctx *fiber.Ctx) error {
	if !sameOrigin(ctx) {
		return c.page(ctx.Status(fiber.StatusForbidden), "error", pageData{Title: "Refused", Message: "This request came from another site."})
	}
	f, err := form(ctx)
	if err != nil {
		return c.signInPage(ctx.Status(fiber.StatusBadRequest), "The form could not be read.")
	}
	token := strings.TrimSpace(f.Get("token"))
	sum := sha256.Sum256([]byte(token))
	var key []byte
	for _, k := range c.keys {
		ks := sha256.Sum256(k)
		if subtle.ConstantTimeCompare(sum[:], ks[:]) == 1 {
			key = k
		}
	}
	if key == nil || token == "" {
		return c.signInPage(ctx.Status(fiber.StatusUnauthorized), "That is not an API token of this deployment.")
	}
	expires := time.Now().Add(c.cfg.SessionTTL).Unix()
	ctx.Cookie(&fiber.Cookie{Name: cookieName, Value: c.newCookie(key, expires), Path: "/console/",
		Expires: time.Unix(expires, 0), HTTPOnly: true, SameSite: fiber.CookieSameSiteStrictMode, Secure: c.cfg.Secure || ctx.Secure()})
	return ctx.Redirect("/console/", fiber.StatusSeeOther)
}

func (c *Console) signOut(ctx *fiber.Ctx, _ session, _ url.Values) error {
	ctx.Cookie(&fiber.Cookie{Name: cookieName, Value: "", Path: "/console/", Expires: time.Unix(1, 0), MaxAge: -1,
		HTTPOnly: true, SameSite: fiber.CookieSameSiteStrictMode, Secure: c.cfg.Secure || ctx.Secure()})
	return ctx.Redirect("/console/", fiber.StatusSeeOther)
}

func (c *Console) dashboard(ctx *fiber.Ctx) error {
	s, ok := c.session(ctx)
	if !ok {
		return c.signInPage(ctx, "")
	}
	st, err := c.cfg.Pipeline.Snapshot(ctx.UserContext())
	d := pageData{Title: "Pipeline", CSRF: s.csrf, Replay: c.cfg.Replay != nil, Status: &st}
	if err != nil {
		d.Status, d.Error = nil, "The database could not be read: "+err.Error()
	}
	if n := ctx.Query("replayed"); n != "" {
		d.Message = "Replayed " + n + " dead letters of " + ctx.Query("provider") + "."
	}
	return c.page(ctx, "dashboard", d)
}

// userID is the :id parameter if it can be a user id.
func userID(ctx *fiber.Ctx) (string, bool) {
	id := ctx.Params("id")
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return "", false
	}
	return strings.ToLower(strings.Clone(id)), true
}

func (c *Console) loadUser(ctx context.Context, id string) (*userView, error) {
	u, err := c.cfg.Users.GetUser(ctx, id)
	deleted := false
	if errors.Is(err, store.ErrNotFound) {
		// A deleted user's history stays readable.
		if _, _, herr := c.cfg.Users.History(ctx, id, store.HistoryQuery{Limit: 1}); herr != nil {
			return nil, err
		}
		u, deleted, err = store.User{ID: id}, true, nil
	}
	if err != nil {
		return nil, err
	}
	links, err := c.cfg.Users.Links(ctx, id)
	if err != nil {
		return nil, err
	}
	v := &userView{User: u, Deleted: deleted}
	for _, p := range c.cfg.Providers {
		lv := linkView{Provider: p, Link: store.Link{Status: store.LinkPending}}
		for _, l := range links[id] {
			if l.Provider == p {
				lv.Link = l
			}
		}
		v.Links = append(v.Links, lv)
	}
	if v.History, _, err = c.cfg.Users.History(ctx, id, store.HistoryQuery{Limit: 100}); err != nil {
		return nil, err
	}
	return v, nil
}

func (c *Console) userPage(ctx *fiber.Ctx) error {
	s, ok := c.session(ctx)
	if !ok {
		return c.signInPage(ctx, "")
	}
	id, ok := userID(ctx)
	if !ok {
		return c.page(ctx.Status(fiber.StatusNotFound), "error", pageData{Title: "No such user", CSRF: s.csrf, Message: "That is not a user id."})
	}
	v, err := c.loadUser(ctx.UserContext(), id)
	if errors.Is(err, store.ErrNotFound) {
		return c.page(ctx.Status(fiber.StatusNotFound), "error", pageData{Title: "No such user", CSRF: s.csrf, Message: "No user has the id " + id + "."})
	}
	if err != nil {
		return err
	}
	return c.page(ctx, "user", pageData{Title: v.User.Email, CSRF: s.csrf, User: v})
}

func (c *Console) resync(ctx *fiber.Ctx, s session, f url.Values) error {
	id, ok := userID(ctx)
	provider := f.Get("provider")
	if !ok || !slices.Contains(c.cfg.Providers, provider) {
		return c.page(ctx.Status(fiber.StatusNotFound), "error", pageData{Title: "No such user", CSRF: s.csrf, Message: "No such user or provider."})
	}
	err := c.cfg.Users.Resync(ctx.UserContext(), id, provider)
	c.refresh()
	if errors.Is(err, store.ErrNotFound) {
		return c.page(ctx.Status(fiber.StatusNotFound), "error", pageData{Title: "No such user", CSRF: s.csrf, Message: "No user has the id " + id + "."})
	}
	if err != nil {
		return err
	}
	return ctx.Redirect("/console/users/"+id, fiber.StatusSeeOther)
}

func (c *Console) replay(ctx *fiber.Ctx, s session, _ url.Values) error {
	provider := strings.Clone(ctx.Params("provider"))
	if c.cfg.Replay == nil || !slices.Contains(c.cfg.Providers, provider) {
		return c.page(ctx.Status(fiber.StatusNotFound), "error", pageData{Title: "No such provider", CSRF: s.csrf, Message: "No such provider."})
	}
	n, err := c.cfg.Replay(ctx.UserContext(), provider)
	c.refresh()
	if err != nil {
		return c.page(ctx.Status(fiber.StatusServiceUnavailable), "error", pageData{Title: "Replay stopped", CSRF: s.csrf,
			Message: fmt.Sprintf("%d dead letters were replayed before an error: %v. Nothing was lost; press replay again.", n, err)})
	}
	return ctx.Redirect("/console/?replayed="+strconv.Itoa(n)+"&provider="+url.QueryEscape(provider), fiber.StatusSeeOther)
}

// refresh makes the live view show an action's effect at once.
func (c *Console) refresh() {
	if r, ok := c.cfg.Pipeline.(interface{ Refresh() }); ok {
		r.Refresh()
	}
	c.hub.poke()
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ago is a short duration: 850ms, 12s, 3m4s, 2h5m.
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}
