package salesforce

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// Event types (InboundEvent.RawType) of notifications. Outbound Messages do
// not say whether a contact was created or updated, so both are
// EventContactChanged (integrations.InboundUpdated: the webhook creates or
// links a user for a contact it does not know).
const (
	EventContactChanged = "contact.changed"
	EventContactDeleted = "contact.deleted"
)

// TokenParameter is the query parameter of the Outbound Message endpoint URL
// that carries SALESFORCE_WEBHOOK_SECRET.
const TokenParameter = "token"

var (
	_ integrations.WebhookReceiver      = (*Adapter)(nil)
	_ integrations.WebhookResponder     = (*Adapter)(nil)
	_ integrations.WebhookAuthenticator = (*Adapter)(nil)
)

// AuthenticateWebhook checks the token query parameter (exactly one,
// SALESFORCE_WEBHOOK_SECRET, compared in constant time) before any body is
// read: an error wrapping integrations.ErrUnauthenticated otherwise.
func (a *Adapter) AuthenticateWebhook(_ http.Header, query url.Values) error {
	if a.inboundErr != nil {
		return a.inboundErr
	}
	tokens := query[TokenParameter]
	if len(tokens) == 1 && a.cfg.Inbound.CheckToken(tokens[0]) {
		return nil
	}
	what := "a wrong " + TokenParameter + " parameter"
	switch {
	case len(tokens) == 0:
		what = "no " + TokenParameter + " parameter"
	case len(tokens) > 1:
		what = "several " + TokenParameter + " parameters"
	}
	return fmt.Errorf("%w: salesforce: the request URL carries %s (the Outbound Message endpoint URL must end in ?%s=<SALESFORCE_WEBHOOK_SECRET>)",
		integrations.ErrUnauthenticated, what, TokenParameter)
}

// CheckWebhookConfig reports missing or invalid inbound settings
// (SALESFORCE_WEBHOOK_SECRET, SALESFORCE_ORG_ID,
// SALESFORCE_INTEGRATION_USER_ID) as one line naming the variables.
func (a *Adapter) CheckWebhookConfig() error { return a.inboundErr }

// ParseWebhook authenticates one Outbound Message and returns one event per
// notification, ordered by LastModifiedDate (stable: notifications of the
// same second keep the message's order). In turn:
//
//   - the query parameter token must be SALESFORCE_WEBHOOK_SECRET (compared
//     in constant time), else an error wrapping
//     integrations.ErrUnauthenticated; the body is not read before;
//   - the body must be an Outbound Message about contacts
//     (ParseOutboundMessage: encoding/xml, no DTD, at most MaxMessageBytes
//     and MaxNotifications), sent as text/xml if a Content-Type is given,
//     whose every notification carries LastModifiedDate and
//     LastModifiedById, else an error wrapping integrations.ErrBadPayload;
//   - its OrganizationId must be SALESFORCE_ORG_ID, else an error wrapping
//     integrations.ErrForbidden.
//
// Each event has the notification id as ID, the contact id as RemoteID,
// Tandem_User_Id__c as UserID, LastModifiedDate as OccurredAt, the contact
// mapped by CustomerFrom (without UserID) as Customer, Kind InboundDeleted
// when IsDeleted is true and InboundUpdated otherwise, Echo when the
// integration user made the change (IsEcho), and WithoutMetadata unless
// SALESFORCE_METADATA_FIELD is set. A metadata field that does not hold a
// JSON object of strings (someone edited it by hand) does not fail the
// message: that event is WithoutMetadata, so the user's metadata is kept
// and Tandem's next push writes the field again. Raw is the notification as
// JSON ({organization_id, action_id, notification_id, sobject}).
func (a *Adapter) ParseWebhook(ctx context.Context, req integrations.WebhookRequest) ([]integrations.InboundEvent, error) {
	if a.inboundErr != nil {
		return nil, a.inboundErr
	}
	in := a.cfg.Inbound
	if err := a.AuthenticateWebhook(req.Header, req.Query); err != nil {
		return nil, err
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "text/xml" && mt != "application/xml") {
			return nil, fmt.Errorf("%w: salesforce: Content-Type %q: want text/xml", integrations.ErrBadPayload, ct)
		}
	}
	msg, err := ParseOutboundMessage(req.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", integrations.ErrBadPayload, err)
	}
	if !in.FromOrg(msg) {
		return nil, fmt.Errorf("%w: salesforce: the message comes from organization %s, not SALESFORCE_ORG_ID",
			integrations.ErrForbidden, clip(msg.OrganizationID))
	}
	events := make([]integrations.InboundEvent, 0, len(msg.Notifications))
	for _, n := range msg.Notifications {
		ev, err := a.event(ctx, msg, n)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	slices.SortStableFunc(events, func(x, y integrations.InboundEvent) int { return x.OccurredAt.Compare(y.OccurredAt) })
	return events, nil
}

// event maps one notification of msg.
func (a *Adapter) event(ctx context.Context, msg OutboundMessage, n Notification) (integrations.InboundEvent, error) {
	switch {
	case n.LastModifiedDate.IsZero():
		return integrations.InboundEvent{}, fmt.Errorf("%w: salesforce: notification %s has no LastModifiedDate: add it to the Outbound Message's fields",
			integrations.ErrBadPayload, clip(n.ID))
	case n.LastModifiedByID == "":
		return integrations.InboundEvent{}, fmt.Errorf("%w: salesforce: notification %s has no LastModifiedById: add it to the Outbound Message's fields",
			integrations.ErrBadPayload, clip(n.ID))
	}
	in := a.cfg.Inbound
	ev := integrations.InboundEvent{
		ID:         n.ID,
		Kind:       integrations.InboundUpdated,
		RawType:    EventContactChanged,
		RemoteID:   n.ContactID,
		UserID:     n.TandemUserID,
		OccurredAt: n.LastModifiedDate,
		Echo:       in.IsEcho(n),
	}
	if n.IsDeleted {
		ev.Kind, ev.RawType = integrations.InboundDeleted, EventContactDeleted
	}
	ev.Customer, ev.WithoutMetadata = a.inboundCustomer(ctx, n)
	raw, err := json.Marshal(map[string]any{
		"organization_id": msg.OrganizationID, "action_id": msg.ActionID,
		"notification_id": n.ID, "sobject": n.Fields,
	})
	if err != nil {
		return integrations.InboundEvent{}, fmt.Errorf("salesforce: encoding notification %s: %w", n.ID, err)
	}
	ev.Raw = raw
	return ev, nil
}

// MaxWebhookBytes is the largest Outbound Message the webhook accepts
// (integrations.WebhookSizer): MaxMessageBytes, not the webhook's 1 MiB
// default, since one message carries up to 100 notifications.
func (a *Adapter) MaxWebhookBytes() int { return MaxMessageBytes }

// Ack renders AckResponse: Salesforce drops every notification of the
// message.
func (a *Adapter) Ack([]integrations.InboundEvent) (string, []byte) {
	return AckContentType, AckResponse()
}

// Fault renders FaultResponse(reason): Salesforce delivers the message
// again later.
func (a *Adapter) Fault(reason string) (string, []byte) {
	return AckContentType, FaultResponse(reason)
}

// Fetch reads contact remoteID through the REST API (GET, never a write),
// mapped like the events of ParseWebhook: without UserID, and
// WithoutMetadata unless SALESFORCE_METADATA_FIELD is set and the field
// holds a JSON object of strings (or nothing). found is false when the
// contact does not exist or is deleted. Errors follow the contract's kinds.
func (a *Adapter) Fetch(ctx context.Context, remoteID string) (integrations.RemoteObject, bool, error) {
	fields := []string{"Id", "IsDeleted", "Email", "FirstName", "LastName", "Phone", ExternalIDField}
	if f := a.cfg.MetadataField; f != "" {
		fields = append(fields, f)
	}
	r, err := a.do(ctx, http.MethodGet, "/"+url.PathEscape(remoteID)+"?fields="+strings.Join(fields, ","), nil)
	if err == nil {
		err = classify(r)
	}
	if errors.Is(err, integrations.ErrNotFound) {
		return integrations.RemoteObject{}, false, nil
	}
	if err != nil {
		return integrations.RemoteObject{}, false, fmt.Errorf("salesforce: reading contact %s: %w", remoteID, err)
	}
	var rec map[string]any
	if err := json.Unmarshal(r.body, &rec); err != nil {
		return integrations.RemoteObject{}, false, fmt.Errorf("salesforce: reading contact %s: unreadable answer: %w", remoteID, err)
	}
	n := Notification{Fields: make(map[string]string, len(rec))}
	for k, v := range rec {
		switch v := v.(type) {
		case string:
			n.Fields[k] = v
		case bool:
			n.Fields[k] = strconv.FormatBool(v)
		}
	}
	if deleted, _ := strconv.ParseBool(n.Fields["IsDeleted"]); deleted {
		return integrations.RemoteObject{}, false, nil
	}
	n.ContactID = cmp.Or(n.Fields["Id"], remoteID)
	n.TandemUserID = n.Fields[ExternalIDField]
	n.Email, n.FirstName, n.LastName, n.Phone = n.Fields["Email"], n.Fields["FirstName"], n.Fields["LastName"], n.Fields["Phone"]
	c, without := a.inboundCustomer(ctx, n)
	return integrations.RemoteObject{Customer: c, WithoutMetadata: without}, true, nil
}

// inboundCustomer maps n like CustomerFrom, without UserID. without reports
// that the metadata is not carried (no metadata field) or cannot be read
// (logged): Metadata is then nil.
func (a *Adapter) inboundCustomer(ctx context.Context, n Notification) (c integrations.Customer, without bool) {
	field := a.cfg.MetadataField
	c, err := CustomerFrom(n, field)
	if err != nil {
		a.logger.WarnContext(ctx, "contact metadata field unreadable; the user's metadata is kept",
			"remote_id", n.ContactID, "field", field, "error", err.Error())
	}
	c.UserID = ""
	if field == "" || err != nil {
		c.Metadata = nil
		return c, true
	}
	return c, false
}
