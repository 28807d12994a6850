package api

import (
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tandem-sync/tandem/internal/store"
)

// historyJSON is the wire form of a history entry.
type historyJSON struct {
	At         time.Time `json:"at"`
	Kind       string    `json:"kind"`
	Provider   *string   `json:"provider"`
	Version    *int64    `json:"version"`
	Origin     *string   `json:"origin"`
	Outcome    *string   `json:"outcome"`
	EventID    *string   `json:"event_id"`
	Error      *string   `json:"error"`
	DurationMS *float64  `json:"duration_ms"`
}

type historyListJSON struct {
	Data       []historyJSON `json:"data"`
	NextCursor string        `json:"next_cursor"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// renderHistory is the wire form of e.
func renderHistory(e store.HistoryEntry) historyJSON {
	out := historyJSON{At: e.At, Kind: e.Kind, Provider: optional(e.Provider), Origin: optional(e.Origin),
		Outcome: optional(e.Outcome), EventID: optional(e.EventID), Error: optional(e.Error)}
	if e.Version > 0 {
		v := e.Version
		out.Version = &v
	}
	if e.Duration > 0 {
		ms := float64(e.Duration.Microseconds()) / 1000
		out.DurationMS = &ms
	}
	return out
}

// History cursors: base64url of "h:<unix microseconds>:<id>" of the last entry.
func encodeHistoryCursor(e store.HistoryEntry) string {
	return base64.RawURLEncoding.EncodeToString([]byte("h:" + strconv.FormatInt(e.At.UnixMicro(), 10) + ":" + strconv.FormatUint(e.ID, 10)))
}

func decodeHistoryCursor(s string) (time.Time, uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	parts := strings.Split(string(b), ":")
	if err != nil || len(parts) != 3 || parts[0] != "h" {
		return time.Time{}, 0, errors.New("bad cursor")
	}
	us, err1 := strconv.ParseInt(parts[1], 10, 64)
	id, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || us <= 0 {
		return time.Time{}, 0, errors.New("bad cursor")
	}
	return time.UnixMicro(us).UTC(), id, nil
}

func parseLimit(c *fiber.Ctx) (int, error) {
	v := c.Query("limit")
	if v == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		return 0, problem(fiber.StatusBadRequest, "bad-limit", "limit must be an integer from 1 to 100")
	}
	return n, nil
}

func (s *Server) getHistory(c *fiber.Ctx) error {
	id, err := userID(c)
	if err != nil {
		return err
	}
	q := store.HistoryQuery{}
	if q.Limit, err = parseLimit(c); err != nil {
		return err
	}
	if v := c.Query("cursor"); v != "" {
		if q.BeforeAt, q.BeforeID, err = decodeHistoryCursor(v); err != nil {
			return problem(fiber.StatusBadRequest, "bad-cursor", "cursor is not one this API returned")
		}
	}
	entries, more, err := s.users.History(c.UserContext(), id, q)
	if err != nil {
		return err
	}
	out := historyListJSON{Data: make([]historyJSON, 0, len(entries))}
	for _, e := range entries {
		out.Data = append(out.Data, renderHistory(e))
	}
	if more {
		out.NextCursor = encodeHistoryCursor(entries[len(entries)-1])
	}
	return c.JSON(out)
}

// provider returns the provider query parameter: an enabled provider, or
// the only one when it is left out.
func (s *Server) provider(c *fiber.Ctx, required bool) (string, error) {
	p := strings.Clone(c.Query("provider"))
	if p == "" && len(s.cfg.Providers) == 1 && !required {
		return s.cfg.Providers[0], nil
	}
	if !slices.Contains(s.cfg.Providers, p) {
		return "", problem(fiber.StatusBadRequest, "bad-provider",
			"provider must name an enabled provider: "+strings.Join(s.cfg.Providers, ", "))
	}
	return p, nil
}

// syncStatusFilter reads sync_status and provider for GET /v1/users.
func (s *Server) syncStatusFilter(c *fiber.Ctx, q *store.ListQuery) error {
	st := c.Query("sync_status")
	if st == "" {
		if c.Query("provider") != "" {
			return problem(fiber.StatusBadRequest, "bad-provider", "provider filters with sync_status only")
		}
		return nil
	}
	switch st {
	case store.LinkFailed, store.LinkConflict, store.LinkPending:
	default:
		return problem(fiber.StatusBadRequest, "bad-sync-status", "sync_status must be failed, conflict or pending")
	}
	p, err := s.provider(c, false)
	if err != nil {
		return err
	}
	q.SyncStatus, q.Provider = strings.Clone(st), p
	return nil
}

type syncAcceptedJSON struct {
	UserID   string `json:"user_id"`
	Provider string `json:"provider"`
	Status   string `json:"status"`
}

// resync answers POST /v1/users/{id}/sync?provider=P: push the user again.
func (s *Server) resync(c *fiber.Ctx) error {
	id, err := userID(c)
	if err != nil {
		return err
	}
	p, err := s.provider(c, false)
	if err != nil {
		return err
	}
	if err := s.users.Resync(c.UserContext(), id, p); err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(syncAcceptedJSON{UserID: id, Provider: p, Status: store.LinkPending})
}
