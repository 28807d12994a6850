package stripefake

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	stripe "github.com/stripe/stripe-go/v76"
)

// Event types the fake emits.
const (
	EventCustomerCreated = "customer.created"
	EventCustomerUpdated = "customer.updated"
	EventCustomerDeleted = "customer.deleted"
)

// Event is one Stripe event. Its JSON encoding is the Stripe event object,
// rendered with stripe.APIVersion, which is what the fake delivers to the
// webhook endpoint and serves from /v1/events.
type Event struct {
	ID         string
	Type       string
	Created    time.Time
	CustomerID string
	// RequestID is the id of the API request that caused the event; empty
	// (null on the wire) for dashboard changes.
	RequestID string
	// IdempotencyKey is the Idempotency-Key of that request; empty (null on
	// the wire) when none was sent and for dashboard changes.
	IdempotencyKey string
	// Object is data.object: the customer as it was right after the change
	// (right before it, for customer.deleted).
	Object json.RawMessage
	// PreviousAttributes is data.previous_attributes, set only on
	// customer.updated: the changed fields with their old values.
	PreviousAttributes json.RawMessage
	// PendingWebhooks is 1 while the event waits for delivery to the
	// configured endpoint, 0 once delivered or when no endpoint is set.
	PendingWebhooks int

	seq uint64
}

type eventJSON struct {
	ID              string           `json:"id"`
	Object          string           `json:"object"`
	APIVersion      string           `json:"api_version"`
	Created         int64            `json:"created"`
	Data            eventDataJSON    `json:"data"`
	Livemode        bool             `json:"livemode"`
	PendingWebhooks int              `json:"pending_webhooks"`
	Request         eventRequestJSON `json:"request"`
	Type            string           `json:"type"`
}

type eventDataJSON struct {
	Object             json.RawMessage `json:"object"`
	PreviousAttributes json.RawMessage `json:"previous_attributes,omitempty"`
}

type eventRequestJSON struct {
	ID             *string `json:"id"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// MarshalJSON renders e as a Stripe event object.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{
		ID:              e.ID,
		Object:          "event",
		APIVersion:      stripe.APIVersion,
		Created:         e.Created.Unix(),
		Data:            eventDataJSON{Object: e.Object, PreviousAttributes: e.PreviousAttributes},
		PendingWebhooks: e.PendingWebhooks,
		Request:         eventRequestJSON{ID: nullable(e.RequestID), IdempotencyKey: nullable(e.IdempotencyKey)},
		Type:            e.Type,
	})
}

func (e *Event) key() sortKey { return sortKey{created: e.Created.Unix(), seq: e.seq} }

// origin says which request, if any, caused a change.
type origin struct {
	requestID      string
	idempotencyKey string
}

// emit records an event for c and queues it for delivery. Call with s.mu held.
func (s *Server) emit(typ string, c Customer, prev json.RawMessage, o origin, now time.Time) {
	obj, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("stripefake: encoding customer: %v", err))
	}
	s.seq++
	ev := &Event{
		ID:                 newID("evt_", 24),
		Type:               typ,
		Created:            now,
		CustomerID:         c.ID,
		RequestID:          o.requestID,
		IdempotencyKey:     o.idempotencyKey,
		Object:             obj,
		PreviousAttributes: prev,
		seq:                s.seq,
	}
	if s.deliv.hasEndpoint() {
		ev.PendingWebhooks = 1
	}
	payload, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("stripefake: encoding event: %v", err))
	}
	s.events = append(s.events, ev)
	s.eventsByID[ev.ID] = ev
	s.stats.Events++
	trimOldest(&s.events, s.limits.MaxEvents, func(old *Event) { delete(s.eventsByID, old.ID) })
	if ev.PendingWebhooks > 0 && !s.deliv.enqueue(ev.ID, ev.Type, ev.CustomerID, payload) {
		ev.PendingWebhooks = 0
	}
}

// markDelivered clears an event's pending_webhooks once its endpoint took it.
func (s *Server) markDelivered(eventID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev, ok := s.eventsByID[eventID]; ok {
		ev.PendingWebhooks = 0
	}
}

// previousAttributes returns Stripe's data.previous_attributes for a change
// from old to upd: every top-level field that changed, with its old value;
// for metadata only the keys that changed, null for keys that were added.
// changed is false when nothing differs (Stripe emits no event then).
func previousAttributes(old, upd Customer) (prev json.RawMessage, changed bool) {
	before, after := asMap(old), asMap(upd)
	diff := map[string]any{}
	for k, v := range after {
		if reflect.DeepEqual(before[k], v) {
			continue
		}
		if k != "metadata" {
			diff[k] = before[k]
			continue
		}
		om, _ := before[k].(map[string]any)
		nm, _ := v.(map[string]any)
		md := map[string]any{}
		for mk, mv := range nm {
			if ov, ok := om[mk]; !ok || ov != mv {
				md[mk] = om[mk] // nil when the key is new
			}
		}
		for mk, ov := range om {
			if _, ok := nm[mk]; !ok {
				md[mk] = ov
			}
		}
		diff[k] = md
	}
	if len(diff) == 0 {
		return nil, false
	}
	b, err := json.Marshal(diff)
	if err != nil {
		panic(fmt.Sprintf("stripefake: encoding previous attributes: %v", err))
	}
	return b, true
}

func asMap(c Customer) map[string]any {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("stripefake: encoding customer: %v", err))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("stripefake: decoding customer: %v", err))
	}
	return m
}

func (s *Server) retrieveEvent(c *call, id string) response {
	for _, f := range c.fields {
		if f.root != "expand" {
			return unknownParameter(f.key).response()
		}
	}
	return s.execute(c, func(time.Time) response {
		ev, ok := s.eventsByID[id]
		if !ok {
			return noSuchEvent("id", id).response()
		}
		return jsonResponse(ev)
	})
}

func (s *Server) listEvents(c *call) response {
	var p listParams
	var typ string
	var types []field
	var delivered *bool
	for _, f := range c.fields {
		if ok, err := parseListField(&p, f); err != nil {
			return err.response()
		} else if ok {
			continue
		}
		switch {
		case f.root == "type" && len(f.path) == 0:
			typ = f.last()
		case f.root == "types":
			types = append(types, f)
		case f.root == "delivery_success" && len(f.path) == 0:
			v := f.last()
			if v != "true" && v != "false" {
				return invalidRequest("delivery_success", "", "Invalid boolean: %s", v).response()
			}
			b := v == "true"
			delivered = &b
		default:
			return unknownParameter(f.key).response()
		}
	}
	typeList, err := stringList(types)
	if err != nil {
		return err.response()
	}
	if typ != "" && len(typeList) > 0 {
		return invalidRequest("types", "", "You may only specify one of these parameters: type, types.").response()
	}
	return s.execute(c, func(time.Time) response {
		var items []*Event
		for _, ev := range slices.Backward(s.events) {
			if typ != "" && !typeMatches(typ, ev.Type) {
				continue
			}
			if len(typeList) > 0 && !slices.ContainsFunc(typeList, func(t string) bool { return typeMatches(t, ev.Type) }) {
				continue
			}
			if !p.created.match(ev.Created.Unix()) {
				continue
			}
			if delivered != nil && *delivered != (ev.PendingWebhooks == 0) {
				continue
			}
			items = append(items, ev)
		}
		sortNewestFirst(items, (*Event).key)
		cursor := func(id string) (sortKey, bool) {
			ev, ok := s.eventsByID[id]
			if !ok {
				return sortKey{}, false
			}
			return ev.key(), true
		}
		data, more, err := page(items, p, (*Event).key, cursor, "event")
		if err != nil {
			return err.response()
		}
		return listResponse("/v1/events", data, more)
	})
}

// typeMatches implements Stripe's event type filter, where "customer.*"
// matches every customer event.
func typeMatches(pattern, typ string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(typ, prefix)
	}
	return pattern == typ
}
