// Package webhook is Tandem's inbound side (DESIGN §1, §6): one route POST
// /webhook/<provider> for every enabled provider that implements
// integrations.WebhookReceiver. A delivery is verified by the provider's
// receiver, then each of its events is applied to MySQL with
// store.ApplyInbound: once (de-duplicated by event id), in order (older
// events and echoes of Tandem's own pushes are ignored), in one transaction
// per event and without an outbox row, so an inbound change is never
// published again and no echo loop can start.
//
// Answers:
//
//   - 200 when every event was applied or recognised (duplicate, stale,
//     echo, ignored, conflict: see store.InboundOutcome), with a JSON body
//     listing the outcomes, or the receiver's own acknowledgement
//     (integrations.WebhookResponder);
//   - 400 application/problem+json when the delivery cannot be verified
//     (type .../problems/unverified) or read (.../problems/bad-payload),
//     401 when it lacks the shared secret or carries a wrong one
//     (.../problems/unauthenticated), 403 when it comes from a sender this
//     deployment does not serve (.../problems/forbidden): nothing is
//     stored;
//   - 413 for a body over BodyLimit (1 MiB), or the receiver's own limit
//     (integrations.WebhookSizer), refused from its Content-Length before
//     it is read. A receiver that can authenticate a delivery from its
//     header and query (integrations.WebhookAuthenticator) does so before
//     the body is read, so an unauthenticated client makes the process read
//     and hold none of it. Bodies are streamed (see ops.NewApp), never
//     inflated, and handed to the receiver without a copy;
//   - 500 when an event could not be applied (database or provider
//     failure): nothing of that event is committed, and the provider's
//     retry applies it (events of the delivery applied before it are
//     recognised as duplicates then). The body is problem+json, or the
//     receiver's own fault document (integrations.WebhookResponder).
//
// Events of one delivery are applied one after the other, each in its own
// transaction, in the order the receiver returns them; the success answer
// is sent only once every one of them is committed.
//
// Metrics: tandem_webhook_events_total{provider, kind, outcome} (outcome
// "unhandled" for event types the receiver ignores, "error" for failures),
// tandem_webhook_rejected_total{provider, reason} (unverified,
// unauthenticated, forbidden, bad_payload),
// tandem_webhook_conflicts_total{provider}; plus the HTTP metrics of package
// ops.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/userfields"
)

// BodyLimit is the largest delivery accepted (413 beyond), unless the
// receiver says otherwise (integrations.WebhookSizer).
const BodyLimit = 1 << 20

// FetchTimeout bounds one re-read of a remote object.
const FetchTimeout = 10 * time.Second

// Store is what the webhook needs from storage.
type Store interface {
	ApplyInbound(ctx context.Context, provider string, ev store.InboundChange, refetch store.RefetchFunc) (store.InboundResult, error)
}

// Receivers picks, from built providers, those that receive webhooks
// (integrations.WebhookReceiver, looked up on the undecorated provider),
// keyed by name, and checks each one's webhook configuration. skipped names
// the providers without the capability. It returns the first configuration
// error (naming the variable at fault).
func Receivers(providers ...integrations.Provider) (receivers map[string]integrations.WebhookReceiver, skipped []string, err error) {
	receivers = map[string]integrations.WebhookReceiver{}
	for _, p := range providers {
		r, ok := p.(integrations.WebhookReceiver)
		if !ok {
			skipped = append(skipped, p.Name())
			continue
		}
		if err := r.CheckWebhookConfig(); err != nil {
			return nil, nil, err
		}
		receivers[p.Name()] = r
	}
	return receivers, skipped, nil
}

// metrics are the webhook's own counters.
type metrics struct {
	events    *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	conflicts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_webhook_events_total",
			Help: "Verified inbound events by provider, kind (created, updated, deleted, ignored) and outcome.",
		}, []string{"provider", "kind", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_webhook_rejected_total",
			Help: "Webhook deliveries refused with a 4xx, by provider and reason (unverified, unauthenticated, forbidden, bad_payload).",
		}, []string{"provider", "reason"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_webhook_conflicts_total",
			Help: "Inbound events that left their link in conflict (an email another user holds, a state Tandem cannot store).",
		}, []string{"provider"}),
	}
	reg.MustRegister(m.events, m.rejected, m.conflicts)
	return m
}

// New builds the webhook's Fiber app: POST /webhook/<name> for each
// receiver (keyed by provider name), GET /healthz, /readyz (checks) and
// /metrics (reg, which also gets the webhook's metrics).
func New(receivers map[string]integrations.WebhookReceiver, st Store, log *slog.Logger, reg *prometheus.Registry, checks ...ops.Check) *fiber.App {
	return NewWith(Options{}, receivers, st, log, reg, checks...)
}

// Options tune NewWith.
type Options struct {
	// Limits are the server's connection and time limits (zero fields:
	// ops defaults).
	Limits ops.Limits
	// NoInboundCreate turns off making users of unknown remote objects
	// (TANDEM_INBOUND_CREATE=false): such an object is linked to the live
	// user with its email, or ignored.
	NoInboundCreate bool
}

// NewWith is New with options.
func NewWith(o Options, receivers map[string]integrations.WebhookReceiver, st Store, log *slog.Logger, reg *prometheus.Registry, checks ...ops.Check) *fiber.App {
	// Bodies are streamed: each route reads its own with ops.ReadBody, up
	// to its own limit, once the receiver has authenticated what it can
	// without the body.
	app := ops.NewApp(fiber.Config{
		AppName:               "tandem-webhook",
		DisableStartupMessage: true,
		ErrorHandler:          errorHandler(log),
		WriteTimeout:          30 * time.Second,
	}, o.Limits, log, ops.NewHTTPMetrics(reg))
	ops.Mount(app, reg, checks...)
	m := newMetrics(reg)
	for _, name := range slices.Sorted(maps.Keys(receivers)) {
		limit := BodyLimit
		if s, ok := receivers[name].(integrations.WebhookSizer); ok && s.MaxWebhookBytes() > 0 {
			limit = s.MaxWebhookBytes()
		}
		h := &handler{name: name, recv: receivers[name], store: st, log: log.With("provider", name), m: m, limit: limit,
			noCreate: o.NoInboundCreate}
		h.responder, _ = receivers[name].(integrations.WebhookResponder)
		h.auth, _ = receivers[name].(integrations.WebhookAuthenticator)
		app.Post("/webhook/"+name, h.serve)
	}
	return app
}

// handler serves one provider's route.
type handler struct {
	name      string
	recv      integrations.WebhookReceiver
	responder integrations.WebhookResponder
	auth      integrations.WebhookAuthenticator
	store     Store
	log       *slog.Logger
	limit     int  // largest body accepted
	noCreate  bool // TANDEM_INBOUND_CREATE=false
	m         *metrics
}

// outcomeJSON is one event's outcome in the 200 answer.
type outcomeJSON struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Outcome string `json:"outcome"`
	UserID  string `json:"user_id,omitempty"`
}

func (h *handler) serve(c *fiber.Ctx) error {
	ctx := c.UserContext()
	log := ops.Logger(ctx, h.log) // h.log names the provider
	// Copies: Fiber reuses its buffers once the handler returns, and a
	// receiver may keep what it gets.
	req := integrations.WebhookRequest{Header: http.Header{}, Query: url.Values{}}
	c.Request().Header.VisitAll(func(k, v []byte) { req.Header.Add(string(k), string(v)) })
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) { req.Query.Add(string(k), string(v)) })
	var err error
	if h.auth != nil {
		// Before the body: an unauthenticated client makes the process
		// read and hold none of it.
		err = h.auth.AuthenticateWebhook(req.Header, req.Query)
	}
	if err == nil {
		// The raw body as received (never inflated), which the signature
		// covers; ReadBody's bytes are ours, not Fiber's.
		req.Body, err = ops.ReadBody(c, h.limit)
		if err != nil {
			return err
		}
		events, perr := h.recv.ParseWebhook(ctx, req)
		return h.answer(c, log, events, perr)
	}
	return h.answer(c, log, nil, err)
}

// answer answers a delivery whose parsing gave events and err.
func (h *handler) answer(c *fiber.Ctx, log *slog.Logger, events []integrations.InboundEvent, err error) error {
	ctx := c.UserContext()
	switch {
	case errors.Is(err, integrations.ErrUnverified):
		h.m.rejected.WithLabelValues(h.name, "unverified").Inc()
		log.Warn("webhook refused: not verified", "error", err.Error())
		return problem(fiber.StatusBadRequest, "unverified", "the delivery's signature is missing, wrong, or dated outside the allowed window")
	case errors.Is(err, integrations.ErrUnauthenticated):
		h.m.rejected.WithLabelValues(h.name, "unauthenticated").Inc()
		log.Warn("webhook refused: not authenticated", "error", err.Error())
		return problem(fiber.StatusUnauthorized, "unauthenticated", "the delivery lacks the shared secret or carries a wrong one")
	case errors.Is(err, integrations.ErrForbidden):
		h.m.rejected.WithLabelValues(h.name, "forbidden").Inc()
		log.Warn("webhook refused: sender not allowed", "error", err.Error())
		return problem(fiber.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, integrations.ErrBadPayload):
		h.m.rejected.WithLabelValues(h.name, "bad_payload").Inc()
		log.Warn("webhook refused: unreadable", "error", err.Error())
		return problem(fiber.StatusBadRequest, "bad-payload", err.Error())
	case err != nil:
		return h.fault(fmt.Errorf("%s receiver: %w", h.name, err))
	}
	for _, ev := range events {
		if err := checkEvent(ev); err != nil {
			h.m.rejected.WithLabelValues(h.name, "bad_payload").Inc()
			log.Warn("webhook refused: unreadable", "error", err.Error())
			return problem(fiber.StatusBadRequest, "bad-payload", err.Error())
		}
	}

	out := make([]outcomeJSON, 0, len(events))
	for _, ev := range events {
		if ev.Kind == integrations.InboundIgnored {
			h.m.events.WithLabelValues(h.name, string(ev.Kind), "unhandled").Inc()
			log.Debug("inbound event of an unhandled type", "event_id", ev.ID, "event_type", ev.RawType)
			out = append(out, outcomeJSON{ID: ev.ID, Type: ev.RawType, Outcome: "unhandled"})
			continue
		}
		res, err := Apply(ctx, h.store, h.name, h.recv, ev, h.noCreate)
		if err != nil {
			h.m.events.WithLabelValues(h.name, string(ev.Kind), "error").Inc()
			return h.fault(err)
		}
		h.m.events.WithLabelValues(h.name, string(ev.Kind), string(res.Outcome)).Inc()
		attrs := []any{"event_id", ev.ID, "event_type", ev.RawType, "remote_id", ev.RemoteID,
			"outcome", string(res.Outcome), "user_id", res.UserID, "version", res.Version, "refetched", res.Refetched}
		switch res.Outcome {
		case store.InboundConflict, store.InboundInvalid:
			h.m.conflicts.WithLabelValues(h.name).Inc()
			log.Warn("inbound event needs an operator", append(attrs, "detail", res.Detail)...)
		case store.InboundIgnoredNoEmail:
			log.Info("inbound event ignored", append(attrs, "detail", res.Detail)...)
		default:
			log.Debug("inbound event", append(attrs, "detail", res.Detail)...)
		}
		out = append(out, outcomeJSON{ID: ev.ID, Type: ev.RawType, Outcome: string(res.Outcome), UserID: res.UserID})
	}
	if h.responder != nil {
		ct, b := h.responder.Ack(events)
		c.Set(fiber.HeaderContentType, ct)
		return c.Status(fiber.StatusOK).Send(b)
	}
	return c.Status(fiber.StatusOK).JSON(fiber.Map{"received": len(events), "events": out})
}

// fault is the error that answers a delivery err kept from being handled:
// the receiver's fault document if it has one, else err itself (500
// problem+json); errorHandler logs it.
func (h *handler) fault(err error) error {
	if h.responder == nil {
		return err
	}
	ct, body := h.responder.Fault("the delivery could not be applied now; send it again later")
	return &faultError{err: err, contentType: ct, body: body}
}

// faultError is a 500 whose body the receiver rendered.
type faultError struct {
	err         error
	contentType string
	body        []byte
}

func (e *faultError) Error() string { return e.err.Error() }
func (e *faultError) Unwrap() error { return e.err }

// change is the store's view of a verified event.
func change(ev integrations.InboundEvent) store.InboundChange {
	return store.InboundChange{
		EventID:    ev.ID,
		EventType:  ev.RawType,
		Deleted:    ev.Kind == integrations.InboundDeleted,
		RemoteID:   ev.RemoteID,
		UserID:     ev.UserID,
		OccurredAt: ev.OccurredAt,
		Echo:       ev.Echo,
		State:      stateOf(ev.Customer, ev.WithoutMetadata),
		Payload:    ev.Raw,
	}
}

// stateOf maps a remote customer to the store's state, with the hash the
// pushing side computes. Without metadata, the store hashes it with the
// user's metadata.
//
// The state is validated exactly as the REST API validates a user
// (package userfields): one it would refuse carries the reason in Invalid,
// and the store records the event invalid without applying it.
func stateOf(c integrations.Customer, withoutMetadata bool) store.RemoteState {
	if withoutMetadata {
		c.Metadata = nil
		return store.RemoteState{Email: c.Email, Name: c.Name, Phone: c.Phone, KeepMetadata: true,
			HashWith: func(md map[string]string) string {
				with := c
				with.Metadata = md
				return with.Hash()
			}, Invalid: invalid(c)}
	}
	return store.RemoteState{Email: c.Email, Name: c.Name, Phone: c.Phone, Metadata: c.Metadata, Hash: c.Hash(), Invalid: invalid(c)}
}

// maxInvalidDetail bounds the reason recorded for an invalid state.
const maxInvalidDetail = 1000

// invalid says why the API would refuse c as a user, or "".
func invalid(c integrations.Customer) string {
	errs := userfields.Validate(c.Email, c.Name, c.Phone, c.Metadata)
	if len(errs) == 0 {
		return ""
	}
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		parts = append(parts, e.Field+": "+e.Message)
	}
	detail := "refused as the API would refuse it (" + strings.Join(parts, "; ") + ")"
	if len(detail) > maxInvalidDetail {
		detail = strings.ToValidUTF8(detail[:maxInvalidDetail], "") + "…"
	}
	return detail
}

// checkEvent refuses events whose ids cannot be keys (the receiver's bug or
// a hostile sender holding the secret): 400 rather than a database error.
func checkEvent(ev integrations.InboundEvent) error {
	switch {
	case !key(ev.ID, 255):
		return fmt.Errorf("event id %q: want 1-255 printable ASCII bytes", ev.ID)
	case !key(ev.RawType, 64):
		return fmt.Errorf("event %s: type %q: want 1-64 printable ASCII bytes", ev.ID, ev.RawType)
	case ev.Kind == integrations.InboundIgnored:
		return nil
	case ev.Kind != integrations.InboundCreated && ev.Kind != integrations.InboundUpdated && ev.Kind != integrations.InboundDeleted:
		return fmt.Errorf("event %s: unknown kind %q", ev.ID, ev.Kind)
	case !key(ev.RemoteID, 255):
		return fmt.Errorf("event %s: object id %q: want 1-255 printable ASCII bytes", ev.ID, ev.RemoteID)
	case ev.OccurredAt.IsZero():
		return fmt.Errorf("event %s: no time", ev.ID)
	}
	return nil
}

func key(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Problem is an RFC 9457 problem document, as the REST API sends them.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

const problemBase = "https://tandem-sync.dev/problems/"

func problem(status int, slug, detail string) *Problem {
	return &Problem{Type: problemBase + slug, Title: http.StatusText(status), Status: status, Detail: detail}
}

// errorHandler writes err as problem+json: the one place errors become
// statuses. 5xx are logged (once, here) with the request's logger.
func errorHandler(base *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var p *Problem
		var fe *fiber.Error
		var fault *faultError
		if errors.As(err, &fault) {
			ops.Logger(c.UserContext(), base).Error("webhook failed", "error", err.Error())
			c.Set(fiber.HeaderContentType, fault.contentType)
			return c.Status(fiber.StatusInternalServerError).Send(fault.body)
		}
		switch {
		case errors.As(err, &p):
		case errors.As(err, &fe):
			switch fe.Code {
			case fiber.StatusRequestEntityTooLarge:
				p = problem(fe.Code, "too-large", "the request body is larger than this route accepts")
			case fiber.StatusNotFound:
				p = problem(fe.Code, "no-route", "no such route")
			case fiber.StatusMethodNotAllowed:
				p = problem(fe.Code, "method-not-allowed", "method not allowed on this route")
			default:
				p = problem(fe.Code, "http", fe.Message)
			}
		default:
			p = problem(fiber.StatusInternalServerError, "internal", "the event could not be applied; retry later (see the logs for this request id)")
		}
		if p.Status >= 500 {
			ops.Logger(c.UserContext(), base).Error("webhook failed", "error", err.Error())
		}
		b, merr := json.Marshal(p)
		if merr != nil {
			return merr
		}
		c.Set(fiber.HeaderContentType, "application/problem+json")
		return c.Status(p.Status).Send(b)
	}
}
