package api

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
)

// userJSON is the wire form of a user.
type userJSON struct {
	ID        string              `json:"id"`
	Email     string              `json:"email"`
	Name      string              `json:"name"`
	Phone     string              `json:"phone"`
	Metadata  map[string]string   `json:"metadata"`
	Version   int64               `json:"version"`
	CreatedAt time.Time           `json:"created_at"`
	UpdatedAt time.Time           `json:"updated_at"`
	Sync      map[string]syncJSON `json:"sync"`
}

type syncJSON struct {
	Status        string     `json:"status"`
	RemoteID      *string    `json:"remote_id"`
	SyncedVersion int64      `json:"synced_version"`
	SyncedAt      *time.Time `json:"synced_at"`
	LastError     *string    `json:"last_error"`
}

func (s *Server) render(u store.User, links []store.Link) userJSON {
	out := userJSON{ID: u.ID, Email: u.Email, Name: u.Name, Phone: u.Phone, Metadata: u.Metadata,
		Version: u.Version, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, Sync: map[string]syncJSON{}}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	for _, p := range s.cfg.Providers {
		out.Sync[p] = syncJSON{Status: store.LinkPending}
	}
	for _, l := range links {
		out.Sync[l.Provider] = syncJSON{Status: l.Status, RemoteID: l.RemoteID, SyncedVersion: l.SyncedVersion,
			SyncedAt: l.SyncedAt, LastError: l.LastError}
	}
	return out
}

func setETag(c *fiber.Ctx, version int64) {
	c.Set(fiber.HeaderETag, `"`+strconv.FormatInt(version, 10)+`"`)
}

func (s *Server) createUser(c *fiber.Ctx) error {
	ctx := c.UserContext()
	body, err := ops.ReadBody(c, BodyLimit)
	if err != nil {
		return err
	}
	key := c.Get("Idempotency-Key")
	if key == "" {
		in, err := parseCreate(body)
		if err != nil {
			return err
		}
		u, err := s.users.CreateUser(ctx, in, nil)
		if err != nil {
			return err
		}
		setETag(c, u.Version)
		return c.Status(fiber.StatusCreated).JSON(s.render(u, nil))
	}
	if len(key) > 255 || !printable(key) {
		return problem(fiber.StatusBadRequest, "bad-idempotency-key", "Idempotency-Key must be at most 255 printable characters (UTF-8)")
	}
	token, _ := c.Locals(tokenKey{}).([32]byte)
	scope := sha256.Sum256(append(token[:], "POST /v1/users"...))
	reqHash := sha256.Sum256(body)
	k := store.IdempotencyKey{Scope: hex.EncodeToString(scope[:]), Key: strings.Clone(key), RequestHash: hex.EncodeToString(reqHash[:])}

	k, stored, err := s.idem.BeginIdempotent(ctx, k, s.cfg.IdempotencyTTL, s.cfg.IdempotencyAbandon)
	if err != nil {
		return err
	}
	if stored != nil {
		c.Set("Idempotent-Replayed", "true")
		ct := fiber.MIMEApplicationJSON
		if stored.Status >= 400 {
			ct = "application/problem+json"
		} else {
			var v struct {
				Version int64 `json:"version"`
			}
			if json.Unmarshal(stored.Body, &v) == nil {
				setETag(c, v.Version)
			}
		}
		c.Set(fiber.HeaderContentType, ct)
		return c.Status(stored.Status).Send(stored.Body)
	}

	in, err := parseCreate(body)
	if err != nil {
		s.release(c, k)
		return err
	}
	save := &store.SaveResponse{Key: k, Status: fiber.StatusCreated, Render: func(u store.User) ([]byte, error) {
		return json.Marshal(s.render(u, nil))
	}}
	u, err := s.users.CreateUser(ctx, in, save)
	if err != nil {
		if errors.Is(err, store.ErrIdempotencyLost) {
			// A retry took the key over (this request outlived the abandon
			// period): nothing of this one was committed.
			return err
		}
		if errors.Is(err, store.ErrConflict) {
			// A definite answer: replays of this key give it too.
			p := toProblem(err)
			b, _ := json.Marshal(p)
			if ferr := s.idem.FinishIdempotent(ctx, k, p.Status, b); ferr != nil {
				if !errors.Is(ferr, store.ErrIdempotencyLost) {
					s.release(c, k)
				}
				return ferr
			}
			return sendProblem(c, p)
		}
		s.release(c, k)
		return err
	}
	setETag(c, u.Version)
	return c.Status(fiber.StatusCreated).JSON(s.render(u, nil))
}

// release frees an idempotency key after a failure a retry may fix. A
// failure to release is logged: the key is taken over after the abandon
// period anyway.
func (s *Server) release(c *fiber.Ctx, k store.IdempotencyKey) {
	if err := s.idem.ReleaseIdempotent(c.UserContext(), k); err != nil {
		ops.Logger(c.UserContext(), s.log).Warn("releasing idempotency key", "error", err.Error())
	}
}

// userID returns the :id parameter, or a 404 problem when it cannot be an id.
func userID(c *fiber.Ctx) (string, error) {
	id := c.Params("id")
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return "", problem(fiber.StatusNotFound, "not-found", "no such user")
	}
	return strings.ToLower(strings.Clone(id)), nil
}

func (s *Server) getUser(c *fiber.Ctx) error {
	id, err := userID(c)
	if err != nil {
		return err
	}
	u, err := s.users.GetUser(c.UserContext(), id)
	if err != nil {
		return err
	}
	links, err := s.users.Links(c.UserContext(), id)
	if err != nil {
		return err
	}
	setETag(c, u.Version)
	return c.JSON(s.render(u, links[id]))
}

type listJSON struct {
	Data       []userJSON `json:"data"`
	NextCursor string     `json:"next_cursor"`
}

func (s *Server) listUsers(c *fiber.Ctx) error {
	q := store.ListQuery{Limit: 50}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return problem(fiber.StatusBadRequest, "bad-limit", "limit must be an integer from 1 to 100")
		}
		q.Limit = n
	}
	if v := c.Query("cursor"); v != "" {
		after, err := decodeCursor(v)
		if err != nil {
			return problem(fiber.StatusBadRequest, "bad-cursor", "cursor is not one this API returned")
		}
		q.After = after
	}
	q.Email = strings.Clone(c.Query("email"))
	if !visibleASCII(q.Email) {
		// The database compares with LOWER(), which folds some non-ASCII
		// letters onto ASCII ones (the Kelvin sign onto k): such a filter
		// would find another user's address. No valid email has them.
		return problem(fiber.StatusBadRequest, "bad-email-filter", "email must be printable ASCII, as emails are")
	}
	if err := s.syncStatusFilter(c, &q); err != nil {
		return err
	}
	users, more, err := s.users.ListUsers(c.UserContext(), q)
	if err != nil {
		return err
	}
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	links, err := s.users.Links(c.UserContext(), ids...)
	if err != nil {
		return err
	}
	out := listJSON{Data: make([]userJSON, 0, len(users))}
	for _, u := range users {
		out.Data = append(out.Data, s.render(u, links[u.ID]))
	}
	if more {
		out.NextCursor = encodeCursor(users[len(users)-1].ID)
	}
	return c.JSON(out)
}

// Cursors are opaque: base64url of "u:" + the last id of the page.
func encodeCursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("u:" + id))
}

func decodeCursor(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !strings.HasPrefix(string(b), "u:") {
		return "", errors.New("bad cursor")
	}
	id := string(b[2:])
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return "", errors.New("bad cursor")
	}
	return id, nil
}

// ifMatch parses If-Match: "<version>", W/"<version>" or * (0 = no
// precondition). "0", a version no user has, is a 412.
func ifMatch(c *fiber.Ctx) (int64, error) {
	h := strings.TrimSpace(c.Get(fiber.HeaderIfMatch))
	if h == "" || h == "*" {
		return 0, nil
	}
	v := strings.TrimPrefix(h, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		// ParseUint takes digits only: no sign, no spaces.
		n, err := strconv.ParseUint(v[1:len(v)-1], 10, 63)
		switch {
		case err == nil && n > 0:
			return int64(n), nil
		case err == nil || errors.Is(err, strconv.ErrRange):
			return 0, problem(fiber.StatusPreconditionFailed, "version-mismatch", "If-Match names a version no user has")
		}
	}
	return 0, problem(fiber.StatusBadRequest, "bad-if-match", `If-Match must be "<version>", W/"<version>" or *`)
}

func (s *Server) patchUser(c *fiber.Ctx) error {
	id, err := userID(c)
	if err != nil {
		return err
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	body, err := ops.ReadBody(c, BodyLimit)
	if err != nil {
		return err
	}
	p, err := parsePatch(body)
	if err != nil {
		return err
	}
	p.Check = checkMerged
	u, err := s.users.UpdateUser(c.UserContext(), id, p, match)
	if err != nil {
		return err
	}
	links, err := s.users.Links(c.UserContext(), id)
	if err != nil {
		return err
	}
	setETag(c, u.Version)
	return c.JSON(s.render(u, links[id]))
}

func (s *Server) deleteUser(c *fiber.Ctx) error {
	id, err := userID(c)
	if err != nil {
		return err
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	if _, err := s.users.DeleteUser(c.UserContext(), id, match); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
