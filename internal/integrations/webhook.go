package integrations

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Errors a WebhookReceiver's ParseWebhook wraps (test with errors.Is). The
// webhook stores nothing for any of them and answers ErrUnauthenticated with
// 401, ErrForbidden with 403, ErrUnverified and ErrBadPayload with 400.
var (
	// ErrUnverified: the request does not prove it comes from the provider
	// (signature missing, malformed, wrong or too old).
	ErrUnverified = errors.New("webhook not verified")
	// ErrUnauthenticated: the request lacks the shared secret that proves
	// who sent it, or carries a wrong one (Salesforce: the ?token= of the
	// endpoint URL). Receivers compare secrets in constant time.
	ErrUnauthenticated = errors.New("webhook not authenticated")
	// ErrForbidden: the request is authentic but comes from a sender this
	// deployment does not serve (Salesforce: another organization).
	ErrForbidden = errors.New("webhook sender not allowed")
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
	// InboundUpdated: the remote object changed. The webhook handles
	// created and updated alike: an object no link names is linked to the
	// user it is tagged with or whose email it has, or else becomes a new
	// user (if it has an email). A receiver whose provider cannot tell a
	// creation from an update (Salesforce) reports InboundUpdated.
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
	// WithoutMetadata reports that the provider does not hold the user's
	// metadata (Salesforce without SALESFORCE_METADATA_FIELD), or that the
	// object's metadata cannot be read, so Customer.Metadata means nothing:
	// the webhook keeps the user's metadata (a new user gets none) and
	// compares the mapped state with the pushed-state hash as if it carried
	// the user's metadata. false (the zero value) means Customer.Metadata
	// is the object's whole metadata and replaces the user's.
	WithoutMetadata bool
	// MergedInto, for an InboundDeleted event, is the remote object this
	// one was merged into (Salesforce: MasterRecordId): the user is
	// relinked to it instead of deleted. "" for a plain deletion.
	MergedInto string
	// Echo reports that a request Tandem sent caused the event (its
	// idempotency key starts with KeyPrefix, or the provider says so
	// another way): the webhook records it and applies nothing.
	Echo bool
	// Raw is the event as received (for a delivery carrying several, this
	// event's part of it, in a form an operator can read), kept when the
	// event cannot be applied (an email conflict).
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

	// ParseWebhook authenticates one webhook request and decodes its
	// events, in the order the webhook applies them. It makes no call to
	// the provider. It returns an error wrapping ErrUnverified when the
	// request's signature cannot be checked or is wrong,
	// ErrUnauthenticated when it lacks the shared secret or carries a
	// wrong one, ErrForbidden when it comes from a sender that is not
	// served, ErrBadPayload when it cannot be read; any other error means
	// the receiver itself failed (the webhook answers 500).
	ParseWebhook(ctx context.Context, req WebhookRequest) ([]InboundEvent, error)

	// Fetch reads the remote object remoteID as the provider holds it now
	// (a read: never a write). found is false when the object does not
	// exist or is deleted. Errors follow the package's error kinds. The
	// webhook calls it to settle ties between events of the same time, and
	// for events that may predate Tandem's last push.
	Fetch(ctx context.Context, remoteID string) (obj RemoteObject, found bool, err error)
}

// RemoteObject is a remote object as a WebhookReceiver's Fetch, a
// Lister's ListRemote or a Matcher's Candidates reads it.
type RemoteObject struct {
	// ID is the provider's id of the object (Fetch may leave it empty: its
	// caller knows it).
	ID string
	// UserID is the Tandem user id the object is tagged with
	// (metadata.tandem_user_id, Tandem_User_Id__c), "" if untagged.
	UserID string
	// Customer is the object's state, mapped like InboundEvent.Customer.
	Customer Customer
	// WithoutMetadata reports, like InboundEvent.WithoutMetadata, that
	// Customer.Metadata is not the object's metadata (the provider holds
	// none, or holds something that cannot be read as metadata): the
	// webhook keeps the user's. The webhook also keeps it when the event
	// that caused the read was WithoutMetadata.
	WithoutMetadata bool
}

// WebhookRequest is one webhook delivery as received. Nothing in it is the
// HTTP server's (the header and query are copies; the body is read into a
// buffer of its own), so a receiver may keep any part of it.
type WebhookRequest struct {
	// Header is the request header.
	Header http.Header
	// Query holds the query parameters of the request URL, decoded
	// (Salesforce: the token=<secret> the endpoint URL carries).
	Query url.Values
	// Body is the raw body, exactly as received (a Content-Encoding is not
	// undone): what a signature covers.
	Body []byte
}

// WebhookSizer is optional for a WebhookReceiver whose deliveries may be
// larger than the webhook's default limit of 1 MiB (Salesforce: an Outbound
// Message carries up to 100 notifications). The webhook answers 413 to a
// delivery over MaxWebhookBytes, and stores nothing.
type WebhookSizer interface {
	MaxWebhookBytes() int
}

// WebhookAuthenticator is optional for a WebhookReceiver that can refuse a
// delivery from its header and query alone (Salesforce: the token in the
// URL; Stripe: a Stripe-Signature missing, malformed or out of its time
// window). The webhook calls it before reading the body, so an
// unauthenticated client cannot make it read or hold one. It returns nil
// or an error wrapping ErrUnverified or ErrUnauthenticated, as ParseWebhook
// would (which still checks everything itself).
type WebhookAuthenticator interface {
	AuthenticateWebhook(header http.Header, query url.Values) error
}

// WebhookResponder is optional for a WebhookReceiver whose provider expects a
// particular answer to a delivery (Salesforce: a SOAP acknowledgement, or a
// SOAP fault to have it delivered again). Without it the webhook answers 200
// with a small JSON document, and failures with application/problem+json.
type WebhookResponder interface {
	// Ack renders the success answer (status 200) to a request whose
	// events were all applied and committed, or recognised as duplicates,
	// echoes or ignorable.
	Ack(events []InboundEvent) (contentType string, body []byte)

	// Fault renders the answer (status 500) to an authentic request that
	// could not be handled now (a database or provider failure), so the
	// provider delivers it again. reason is short and free of internal
	// details: it goes back to the provider.
	Fault(reason string) (contentType string, body []byte)
}
