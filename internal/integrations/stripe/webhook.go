package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// WebhookTolerance is how far a Stripe-Signature timestamp may be from now,
// either way (Stripe's own default): older deliveries are refused as
// replays, and deliveries dated ahead of it as forged or from a broken
// clock.
const WebhookTolerance = 300 * time.Second

// APIVersion is the Stripe API version the webhook endpoint must be pinned
// to: the one stripe-go v76 decodes. Events of another version are refused
// unless Config.AcceptAPIVersionMismatch is set.
const APIVersion = stripego.APIVersion

// Event types the receiver handles; every other type is InboundIgnored.
const (
	EventCustomerCreated = "customer.created"
	EventCustomerUpdated = "customer.updated"
	EventCustomerDeleted = "customer.deleted"
)

// ReservedMetadataPrefix starts the metadata keys reserved for Tandem; the
// receiver maps customers without them.
const ReservedMetadataPrefix = "tandem_"

var (
	_ integrations.WebhookReceiver      = (*Adapter)(nil)
	_ integrations.WebhookAuthenticator = (*Adapter)(nil)
)

// AuthenticateWebhook refuses, before the body is read, a delivery whose
// Stripe-Signature header is missing, repeated, malformed, carries no v1
// signature, or is dated more than WebhookTolerance from now (either way):
// an error wrapping integrations.ErrUnverified. The signature itself
// needs the body: ParseWebhook checks it.
func (a *Adapter) AuthenticateWebhook(header http.Header, _ url.Values) error {
	if err := a.CheckWebhookConfig(); err != nil {
		return err
	}
	values := header.Values("Stripe-Signature")
	if len(values) != 1 {
		return fmt.Errorf("%w: stripe: %d Stripe-Signature headers, want one", integrations.ErrUnverified, len(values))
	}
	return checkSignatureTime(values[0], time.Now())
}

// checkSignatureTime checks the t= of a Stripe-Signature header against
// now, within WebhookTolerance either way (stripe-go only refuses old
// ones), and that it carries a v1 signature.
func checkSignatureTime(h string, now time.Time) error {
	var ts int64
	var haveT, haveV1 bool
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || haveT {
				return fmt.Errorf("%w: stripe: %w", integrations.ErrUnverified, webhook.ErrInvalidHeader)
			}
			ts, haveT = n, true
		case "v1":
			haveV1 = true
		}
	}
	if !haveT || !haveV1 {
		return fmt.Errorf("%w: stripe: %w", integrations.ErrUnverified, webhook.ErrInvalidHeader)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return fmt.Errorf("%w: stripe: the signature is dated %s, more than %s from now", integrations.ErrUnverified,
			time.Unix(ts, 0).UTC().Format(time.RFC3339), WebhookTolerance)
	}
	return nil
}

// CheckWebhookConfig reports a missing STRIPE_WEBHOOK_SECRET.
func (a *Adapter) CheckWebhookConfig() error {
	if a.cfg.WebhookSecret == "" {
		return errors.New("config: STRIPE_WEBHOOK_SECRET is required (the signing secret of the Stripe webhook endpoint, whsec_…)")
	}
	return nil
}

// ParseWebhook verifies a Stripe webhook delivery (its header and raw body;
// the query is not read) and decodes its event. The Stripe-Signature header
// must carry a v1 signature of body made with
// Config.WebhookSecret at most WebhookTolerance from now, before or after
// (else an error wrapping
// integrations.ErrUnverified). The body must be JSON (Content-Type
// application/json), an event of APIVersion (unless
// Config.AcceptAPIVersionMismatch), with an id and a time; a customer event
// must carry a customer with an id (else integrations.ErrBadPayload).
//
// customer.created, customer.updated and customer.deleted map the customer
// as CustomerFrom does, without the metadata keys starting with "tandem_";
// UserID is its metadata.tandem_user_id; Echo is set when the request that
// caused the event had an idempotency key starting with "tandem-". Every
// other event type is one InboundIgnored event.
func (a *Adapter) ParseWebhook(_ context.Context, req integrations.WebhookRequest) ([]integrations.InboundEvent, error) {
	if err := a.CheckWebhookConfig(); err != nil {
		return nil, err
	}
	header, body := req.Header, req.Body
	if err := a.AuthenticateWebhook(header, req.Query); err != nil {
		return nil, err
	}
	ev, err := webhook.ConstructEventWithOptions(body, header.Get("Stripe-Signature"), a.cfg.WebhookSecret,
		webhook.ConstructEventOptions{Tolerance: WebhookTolerance, IgnoreAPIVersionMismatch: true})
	switch {
	case errors.Is(err, webhook.ErrNotSigned), errors.Is(err, webhook.ErrInvalidHeader),
		errors.Is(err, webhook.ErrNoValidSignature), errors.Is(err, webhook.ErrTooOld):
		return nil, fmt.Errorf("%w: stripe: %w", integrations.ErrUnverified, err)
	case err != nil:
		return nil, fmt.Errorf("%w: stripe: the body is not a Stripe event: %s", integrations.ErrBadPayload, err)
	}
	if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, fmt.Errorf("%w: stripe: Content-Type %q: want application/json", integrations.ErrBadPayload, header.Get("Content-Type"))
	}
	out, err := a.inboundEvent(&ev, body)
	if err != nil {
		return nil, err
	}
	return []integrations.InboundEvent{out}, nil
}

// inboundEvent maps a verified event (raw: as received) as ParseWebhook
// documents it; errors wrap integrations.ErrBadPayload. The catch-up maps
// the events it reads from the Events API with it too.
func (a *Adapter) inboundEvent(ev *stripego.Event, raw []byte) (integrations.InboundEvent, error) {
	if ev.APIVersion != APIVersion && !a.cfg.AcceptAPIVersionMismatch {
		return integrations.InboundEvent{}, fmt.Errorf("%w: stripe: event %s has API version %q; pin the webhook endpoint to %s (or set STRIPE_ACCEPT_API_VERSION_MISMATCH=true)",
			integrations.ErrBadPayload, ev.ID, ev.APIVersion, APIVersion)
	}
	if ev.ID == "" || ev.Type == "" || ev.Created <= 0 {
		return integrations.InboundEvent{}, fmt.Errorf("%w: stripe: the event lacks an id, a type or a creation time", integrations.ErrBadPayload)
	}
	out := integrations.InboundEvent{ID: ev.ID, RawType: string(ev.Type), Kind: integrations.InboundIgnored, Raw: raw}
	switch ev.Type {
	case EventCustomerCreated:
		out.Kind = integrations.InboundCreated
	case EventCustomerUpdated:
		out.Kind = integrations.InboundUpdated
	case EventCustomerDeleted:
		out.Kind = integrations.InboundDeleted
	default:
		return out, nil
	}
	var cust stripego.Customer
	if ev.Data == nil || len(ev.Data.Raw) == 0 || json.Unmarshal(ev.Data.Raw, &cust) != nil || cust.ID == "" {
		return integrations.InboundEvent{}, fmt.Errorf("%w: stripe: event %s (%s) carries no customer with an id", integrations.ErrBadPayload, ev.ID, ev.Type)
	}
	out.RemoteID = cust.ID
	out.OccurredAt = time.Unix(ev.Created, 0).UTC()
	out.Customer, out.UserID = inboundCustomer(&cust)
	out.Echo = ev.Request != nil && integrations.IsTandemKey(ev.Request.IdempotencyKey)
	return out, nil
}

// Fetch reads customer remoteID (its metadata is always carried). found is
// false when Stripe does not know it (any 404) or it is deleted. Errors
// follow the contract's kinds.
func (a *Adapter) Fetch(ctx context.Context, remoteID string) (integrations.RemoteObject, bool, error) {
	p := &stripego.CustomerParams{}
	p.Context = ctx
	cust, err := a.call(ctx, func() (*stripego.Customer, error) { return a.customers.Get(remoteID, p) })
	if se, ok := stripeError(err); ok && se.HTTPStatusCode == http.StatusNotFound {
		// resource_missing, or an id Stripe cannot even route.
		return integrations.RemoteObject{}, false, nil
	}
	if err != nil {
		return integrations.RemoteObject{}, false, fmt.Errorf("stripe: reading customer %s: %w", remoteID, err)
	}
	if cust.Deleted {
		return integrations.RemoteObject{}, false, nil
	}
	c, _ := inboundCustomer(cust)
	return integrations.RemoteObject{Customer: c}, true, nil
}

// inboundCustomer maps a customer like CustomerFrom, without the reserved
// metadata keys, and returns its tandem_user_id apart.
func inboundCustomer(cust *stripego.Customer) (integrations.Customer, string) {
	c := CustomerFrom(cust)
	userID := c.UserID
	c.UserID = ""
	for k := range c.Metadata {
		if strings.HasPrefix(k, ReservedMetadataPrefix) {
			delete(c.Metadata, k)
		}
	}
	return c, userID
}
