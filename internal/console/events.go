package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// hub takes one snapshot every interval while anyone listens and hands it
// to every listener (each holds only the latest).
type hub struct {
	src   Snapshotter
	every time.Duration
	log   *slog.Logger

	mu   sync.Mutex
	subs map[chan []byte]struct{}
	last []byte
	done bool
	wake chan struct{}
}

func newHub(ctx context.Context, src Snapshotter, every time.Duration, log *slog.Logger) *hub {
	h := &hub{src: src, every: every, log: log, subs: map[chan []byte]struct{}{}, wake: make(chan struct{}, 1)}
	go h.run(ctx)
	return h
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// subscribe returns a channel receiving snapshots (JSON), closed when the
// hub stops; nil if it has stopped.
func (h *hub) subscribe() chan []byte {
	ch := make(chan []byte, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return nil
	}
	h.subs[ch] = struct{}{}
	if h.last != nil {
		ch <- h.last
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return ch
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

func (h *hub) run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	defer func() {
		h.mu.Lock()
		h.done = true
		for ch := range h.subs {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}()
	for {
		if h.count() == 0 {
			h.mu.Lock()
			h.last = nil // stale by the time someone comes
			h.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
			}
		}
		h.publish(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wake:
		}
	}
}

// publish takes a snapshot and hands it to every listener.
func (h *hub) publish(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := h.src.Snapshot(sctx)
	cancel()
	var msg []byte
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("console: pipeline snapshot", "error", err.Error())
		msg, _ = json.Marshal(map[string]string{"error": "the database could not be read: " + err.Error()})
	} else {
		st.At = time.Time{} // unchanged snapshots stay byte-identical
		msg, _ = json.Marshal(st)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = msg
	for ch := range h.subs {
		select {
		case <-ch: // drop the one not yet sent: only the latest matters
		default:
		}
		ch <- msg
	}
}

// events streams the live view: "status" events (the pipeline) and, with
// ?user=ID, "user" events (that user's sync state and latest history),
// each sent when it changed. A stream ends after StreamFor (the browser
// reconnects at once), when the client goes away (noticed at the next
// write), or when the console stops.
func (c *Console) events(ctx *fiber.Ctx) error {
	if _, ok := c.session(ctx); !ok {
		return ctx.Status(fiber.StatusUnauthorized).SendString("sign in at /console/")
	}
	userID := ""
	if v := ctx.Query("user"); v != "" {
		id, ok := parseUserID(v)
		if !ok {
			return ctx.Status(fiber.StatusNotFound).SendString("no such user")
		}
		userID = id
	}
	sub := c.hub.subscribe()
	if sub == nil {
		return ctx.Status(fiber.StatusServiceUnavailable).SendString("shutting down")
	}
	ctx.Set(fiber.HeaderContentType, "text/event-stream")
	ctx.Set(fiber.HeaderCacheControl, "no-store")
	ctx.Set("X-Accel-Buffering", "no")
	streamFor, keepAlive := c.cfg.StreamFor, c.cfg.KeepAlive
	ctx.Context().SetBodyStreamWriter(fasthttp.StreamWriter(func(w *bufio.Writer) {
		defer c.hub.unsubscribe(sub)
		end := time.NewTimer(streamFor)
		defer end.Stop()
		alive := time.NewTicker(keepAlive)
		defer alive.Stop()
		var lastStatus, lastUser []byte
		if _, err := w.WriteString("retry: 500\n\n"); err != nil || w.Flush() != nil {
			return
		}
		for {
			select {
			case msg, ok := <-sub:
				if !ok {
					return
				}
				if !bytes.Equal(msg, lastStatus) {
					lastStatus = msg
					if writeEvent(w, "status", msg) != nil {
						return
					}
				}
				if userID != "" {
					if u := c.userEvent(userID); u != nil && !bytes.Equal(u, lastUser) {
						lastUser = u
						if writeEvent(w, "user", u) != nil {
							return
						}
					}
				}
			case <-alive.C:
				if _, err := w.WriteString(": keep-alive\n\n"); err != nil || w.Flush() != nil {
					return
				}
			case <-end.C:
				return
			}
		}
	}))
	return nil
}

func writeEvent(w *bufio.Writer, name string, data []byte) error {
	if _, err := w.WriteString("event: " + name + "\ndata: "); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil { // JSON holds no raw newline
		return err
	}
	if _, err := w.WriteString("\n\n"); err != nil {
		return err
	}
	return w.Flush()
}

// userEventJSON is the "user" event: the user's links and latest history.
type userEventJSON struct {
	Sync    map[string]linkJSON `json:"sync"`
	History []historyJSON       `json:"history"`
}

type linkJSON struct {
	Status        string `json:"status"`
	RemoteID      string `json:"remote_id"`
	SyncedVersion int64  `json:"synced_version"`
	LastError     string `json:"last_error"`
}

type historyJSON struct {
	At       string `json:"at"`
	Kind     string `json:"kind"`
	Provider string `json:"provider"`
	Version  int64  `json:"version"`
	Origin   string `json:"origin"`
	Outcome  string `json:"outcome"`
	EventID  string `json:"event_id"`
	Error    string `json:"error"`
	Took     string `json:"took"`
}

func (c *Console) userEvent(id string) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := c.loadUser(ctx, id)
	if err != nil {
		return nil
	}
	out := userEventJSON{Sync: map[string]linkJSON{}, History: []historyJSON{}}
	for _, l := range v.Links {
		out.Sync[l.Provider] = linkJSON{Status: l.Status, RemoteID: derefString(l.RemoteID), SyncedVersion: l.SyncedVersion,
			LastError: derefString(l.LastError)}
	}
	for _, e := range v.History {
		h := historyJSON{At: e.At.UTC().Format("2006-01-02 15:04:05.000"), Kind: e.Kind, Provider: e.Provider, Version: e.Version,
			Origin: e.Origin, Outcome: e.Outcome, EventID: e.EventID, Error: e.Error}
		if e.Duration > 0 {
			h.Took = ago(e.Duration)
		}
		out.History = append(out.History, h)
	}
	b, _ := json.Marshal(out)
	return b
}

func parseUserID(v string) (string, bool) {
	if len(v) != 36 || strings.Count(v, "-") != 4 {
		return "", false
	}
	for _, r := range v {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return "", false
		}
	}
	return strings.ToLower(v), true
}
