package integrations

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Errors a WebhookReceiver's ParseWebhook wraps (test with errors.Is). The
// webhook answers both with 400 and stores nothing.
var (
	// ErrUnverified: the request does not prove it comes from the provider
	// (signature missing, malformed, wrong or too old).
	ErrUnverified = errors.New("webhook not verified")
	// ErrBadPayload: the request is authentic (or could not be checked
	// because it is unusable) but cannot be read: wrong content type,
	// malformed body, an event of an API version the receiver does not
	// accept, an event without the fields every event has.
	ErrBadPayload = errors.New("bad webhook payload")
)

// InboundKind says what an inbound event means for the user it concerns.
type InboundKind string

// Inbound kinds.
const (
	// InboundCreated: the remote object was created.
	InboundCreated InboundKind = "created"
	// InboundUpdated: the remote object changed.
	InboundUpdated InboundKind = "updated"
	// InboundDeleted: the remote object was deleted.
	InboundDeleted InboundKind = "deleted"
	// InboundIgnored: an event type the receiver does not handle. It is
	// answered with success and counted, nothing else.
	InboundIgnored InboundKind = "ignored"
)

// InboundEvent is one verified change a provider reports, in provider-neutral
// terms. A webhook request may carry several (Salesforce's outbound messages
// carry up to 100 notifications); each is applied, and de-duplicated, on its
// own.
type InboundEvent struct {
	// ID is the provider's id of the event, unique per provider and the
	// same on every redelivery: the de-duplication key. Printable ASCII, at
	// most 255 bytes.
	ID string
	// Kind is what the event means (InboundIgnored for types the receiver
	// does not handle; the fields below are then unset, except RawType).
	Kind InboundKind
	// RawType is the provider's event type ("customer.updated"), for logs
	// and the inbound event log. Printable ASCII, at most 64 bytes.
	RawType string
	// RemoteID is the provider's id of the object (a Stripe customer id).
	// Printable ASCII, at most 255 bytes.
	RemoteID string
	// UserID is the Tandem user id the object is tagged with
	// (Stripe: metadata.tandem_user_id), "" if none.
	UserID string
	// OccurredAt is when the change happened, by the provider's clock, at
	// the provider's resolution (Stripe: whole seconds). Events of one
	// object are ordered by it; equal times are ties the webhook resolves
	// by calling Fetch.
	OccurredAt time.Time
	// Customer is the object's state mapped the way the adapter's pushes
	// produce it, so that Customer.Hash equals the pushed-state hash of the
	// push that left the object this way. UserID is "", Version 0, and
	// Metadata holds no key starting with "tandem_" (reserved for Tandem).
	// For InboundDeleted it is the state right before the deletion.
	Customer Customer
	// Echo reports that a request Tandem sent caused the event (its
	// idempotency key starts with KeyPrefix, or the provider says so
	// another way): the webhook records it and applies nothing.
	Echo bool
	// Raw is the event as received, kept for an operator when the event
	// cannot be applied (an email conflict).
	Raw []byte
}

// WebhookReceiver is the optional inbound capability of a Provider: a
// provider that implements it gets a route POST /webhook/<Name()> on the
// webhook process. Find it by type assertion on the undecorated provider
// (decorators hide it). Implementations must be safe for concurrent use.
type WebhookReceiver interface {
	// CheckWebhookConfig reports a setting the receiver needs and lacks
	// (Stripe: STRIPE_WEBHOOK_SECRET) as a one-line error naming the
	// variable. The webhook process calls it at start-up; processes that
	// only push (the worker) never do, so they start without it.
	CheckWebhookConfig() error

	// ParseWebhook verifies one webhook request (header and the raw body,
	// exactly as received) and decodes its events. It makes no call to the
	// provider. It returns an error wrapping ErrUnverified when the request
	// cannot be proved authentic, one wrapping ErrBadPayload when it cannot
	// be read; any other error means the receiver itself failed (the
	// webhook answers 500).
	ParseWebhook(ctx context.Context, header http.Header, body []byte) ([]InboundEvent, error)

	// Fetch reads the remote object remoteID as the provider holds it now,
	// mapped like InboundEvent.Customer. found is false when the object
	// does not exist or is deleted. Errors follow the package's error
	// kinds. The webhook calls it to settle ties between events of the
	// same time, and for events that may predate Tandem's last push.
	Fetch(ctx context.Context, remoteID string) (c Customer, found bool, err error)
}

// WebhookResponder is optional for a WebhookReceiver whose provider expects a
// particular answer to a delivery it has processed (Salesforce: a SOAP
// acknowledgement). Without it the webhook answers 200 with a small JSON
// document.
type WebhookResponder interface {
	// Ack renders the success answer to a request that carried events (all
	// of them applied, or recognised as duplicates, echoes or ignorable).
	Ack(events []InboundEvent) (contentType string, body []byte)
}
