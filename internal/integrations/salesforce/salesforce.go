// Package salesforce is the Salesforce adapter of the provider contract
// (integrations.Provider): it keeps one Contact per Tandem user through the
// REST API, tagged with the user's id in the external id field
// Tandem_User_Id__c (ExternalIDField), and it parses the Outbound Messages
// Salesforce sends when a contact changes (ParseOutboundMessage; the webhook
// route that receives them lives elsewhere).
//
// # Org setup
//
// Contact needs a text custom field Tandem_User_Id__c marked External ID
// (and preferably Unique). A connected app with the OAuth 2.0 client
// credentials flow enabled provides SALESFORCE_CLIENT_ID and
// SALESFORCE_CLIENT_SECRET; its "run as" user is the integration user
// (SALESFORCE_INTEGRATION_USER_ID), which must be able to create, edit and
// delete contacts and write Tandem_User_Id__c.
//
// # Authentication
//
// The adapter fetches an access token from SALESFORCE_TOKEN_URL with
// golang.org/x/oauth2/clientcredentials and caches it: Salesforce's token
// answer carries no lifetime, so the token is used until the API answers 401
// INVALID_SESSION_ID. Then the adapter fetches a new token once and repeats
// the request once; a second 401 in a row is a permanent error (the new token
// is refused too: the connected app or its user is misconfigured). A token
// endpoint that refuses the credentials (4xx) is a permanent error too.
//
// # Requests
//
// Every write carries Sforce-Call-Options: client=tandem. Salesforce has no
// idempotency keys; the external id makes writes idempotent instead:
//
//   - Upsert without a remote id upserts by external id: PATCH
//     /services/data/v60.0/sobjects/Contact/Tandem_User_Id__c/<user id>.
//     201 creates the contact; 200 (or 204, before API 46.0) updates the one
//     that already carries the user's id, so a repeated create never makes a
//     second contact. The contact's id comes from the answer, or, after a
//     204, from GET …/Tandem_User_Id__c/<user id>?fields=Id.
//   - Upsert with a remote id updates that contact: PATCH
//     …/sobjects/Contact/<id>, setting Tandem_User_Id__c too. A contact that
//     was deleted is integrations.ErrNotFound: an upsert by external id
//     would silently re-create it.
//   - Delete deletes the contact by id, or, without a remote id, by external
//     id, so a contact whose id was never stored (the answer to its create
//     was lost) is deleted too. A contact that is already gone (404) counts
//     as deleted.
//
// Either way 300 Multiple Choices (the external id matches several
// contacts) is a permanent error matching ErrMultipleMatches.
//
// # Fields
//
// Email → Email, Phone → Phone, and the name → FirstName and LastName:
// Salesforce requires LastName, so a one-word name is the LastName, and
// otherwise the first word is the FirstName and the rest the LastName. An
// empty field is sent as null, which clears it. A user without a name cannot
// be a contact: Upsert fails with a permanent error before any request.
// CustomerFrom joins FirstName and LastName with one space; a name that does
// not come back the same way (surrounding or repeated white space after the
// first word) is pushed anyway, with a warning in Result.Warnings.
//
// # Metadata
//
// Contacts have no metadata. By default the user's metadata is not pushed:
// Upsert succeeds with a warning listing the keys it left out
// (Result.Warnings) and Result.MetadataKeys is empty. Inbound changes then
// carry no metadata either: the webhook must leave the user's metadata alone
// and compare email, name and phone only. Setting SALESFORCE_METADATA_FIELD
// to the API name of a Long Text Area custom field on Contact (e.g.
// Tandem_Metadata__c, up to 131,072 characters) makes the adapter keep the
// metadata there as a JSON object with sorted keys (null when empty), so the
// contact holds the whole user and CustomerFrom reads it back.
//
// # Listing and matching
//
// ListRemote (integrations.Lister) pages through a SOQL query of every live
// Contact, 2,000 per request, continued at Salesforce's nextRecordsUrl;
// Candidates (integrations.Matcher) finds the contacts tagged with a user
// or holding one of its emails in one SOQL query (an exact read: SOQL
// compares text ignoring case). Both map contacts as Fetch does.
//
// # Errors
//
// Errors follow the contract's kinds (see package integrations): 403
// REQUEST_LIMIT_EXCEEDED (and 429) are transient and rate-limited with a
// long wait (LimitBackoff, or a longer Retry-After), which the worker waits
// out without spending an attempt; 5xx, UNABLE_TO_LOCK_ROW and network
// failures are transient; 404 NOT_FOUND and ENTITY_IS_DELETED match
// integrations.ErrNotFound; any other 4xx is permanent and carries
// Salesforce's message (APIError).
//
// # Metrics
//
// Every answer's Sforce-Limit-Info header (api-usage=<used>/<limit>: the
// org's requests in the rolling 24 hours) sets the gauges
// tandem_provider_api_usage and tandem_provider_api_limit
// {provider="salesforce"}; tandem_provider_token_requests_total counts token
// requests (one at start, one after each refused token).
//
// # Outbound Messages
//
// ParseOutboundMessage reads the SOAP notifications Salesforce sends,
// AckResponse acknowledges them and FaultResponse asks for a redelivery;
// InboundConfig (SALESFORCE_WEBHOOK_SECRET, SALESFORCE_ORG_ID,
// SALESFORCE_INTEGRATION_USER_ID) checks the ?token= secret and the org and
// recognises echoes of Tandem's own writes (LastModifiedById is the
// integration user); CustomerFrom maps a notification back to a Customer.
// See ParseOutboundMessage for how the webhook should answer.
//
// The Adapter is also the webhook's receiver (integrations.WebhookReceiver
// and WebhookResponder): ParseWebhook does all of the above for one POST
// /webhook/salesforce and returns one event per notification, Ack and Fault
// render the SOAP answers, and Fetch reads a contact through the REST API.
//
// # Org setup for inbound changes
//
// Create an Outbound Message on Contact (Setup → Process Automation →
// Workflow Actions → Outbound Messages, triggered by a record-triggered flow
// or a workflow rule on create and edit) with:
//
//   - Endpoint URL: https://<webhook host>/webhook/salesforce?token=<SALESFORCE_WEBHOOK_SECRET>
//     (Outbound Messages cannot sign or carry headers: the token in the URL
//     is the only proof of origin, so use HTTPS);
//   - User to send as: any; "Send Session ID" off (Tandem makes no call
//     with it);
//   - Fields: Id, Email, FirstName, LastName, Phone, Tandem_User_Id__c,
//     LastModifiedDate, LastModifiedById, IsDeleted, and the metadata field
//     if SALESFORCE_METADATA_FIELD is set. LastModifiedDate and
//     LastModifiedById are required: a notification without them is
//     refused.
//
// SALESFORCE_ORG_ID is the org's id (Setup → Company Information), and
// SALESFORCE_INTEGRATION_USER_ID the connected app's "run as" user:
// notifications of changes that user made are Tandem's own writes coming
// back, and are recorded without being applied.
package salesforce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/httpclient"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// Name is the provider's stable name.
const Name = "salesforce"

// ExternalIDField is the Contact external id field holding Tandem's user id
// (contract).
const ExternalIDField = "Tandem_User_Id__c"

// CallOptions is the Sforce-Call-Options header every write carries.
const CallOptions = "client=tandem"

// DefaultHTTPTimeout bounds one request when Options.HTTPClient is nil.
const DefaultHTTPTimeout = 30 * time.Second

// maxAnswerBytes bounds the answers the adapter reads.
const maxAnswerBytes = 1 << 20

// Options are the adapter's dependencies; all are optional.
type Options struct {
	// Logger receives the adapter's debug messages; nil discards them. The
	// adapter adds provider=salesforce. Errors are returned, not logged.
	Logger *slog.Logger
	// HTTPClient sends the API and token requests; nil means a client with
	// DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Registerer receives the adapter's metrics (tandem_provider_api_usage,
	// tandem_provider_api_limit, tandem_provider_token_requests_total); nil
	// leaves them unregistered.
	Registerer prometheus.Registerer
}

// Adapter is the Salesforce provider. It is safe for concurrent use; make
// one per process, since it caches one access token.
type Adapter struct {
	cfg     Config
	base    string // {instance}/services/data/{version}/sobjects/Contact
	client  *http.Client
	tokens  *tokens
	logger  *slog.Logger
	metrics metrics
	// inboundErr is cfg.Inbound.Validate(), checked once: the webhook's
	// answer to every delivery while the inbound settings are missing.
	inboundErr error
}

var (
	_ integrations.Provider     = (*Adapter)(nil)
	_ integrations.WebhookSizer = (*Adapter)(nil)
)

// New returns an adapter for cfg. It returns cfg.Validate's error, or an
// error registering its metrics. It makes no request.
func New(cfg Config, opts Options) (*Adapter, error) {
	if cfg.APIVersion == "" {
		cfg.APIVersion = DefaultAPIVersion
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Inbound.MetadataField = cfg.MetadataField
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("provider", Name)
	client := opts.HTTPClient
	if client == nil {
		client = httpclient.New(DefaultHTTPTimeout)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Adapter{
		cfg:        cfg,
		base:       strings.TrimRight(cfg.InstanceURL, "/") + "/services/data/" + cfg.APIVersion + "/sobjects/Contact",
		client:     client,
		tokens:     newTokens(cfg, client, logger, m.tokenRequests),
		logger:     logger,
		metrics:    m,
		inboundErr: cfg.Inbound.Validate(),
	}, nil
}

// FromSettings is ConfigFrom then New: the factory's builder.
func FromSettings(s config.Settings, opts Options) (*Adapter, error) {
	cfg, err := ConfigFrom(s)
	if err != nil {
		return nil, err
	}
	return New(cfg, opts)
}

// Name returns "salesforce".
func (a *Adapter) Name() string { return Name }

// Upsert creates or updates the user's contact (see the package
// documentation). It returns a permanent error before any request if c has
// no user id or no name; an error matching integrations.ErrNotFound if the
// contact link.RemoteID is gone; a permanent error matching
// ErrMultipleMatches if the user's external id matches several contacts;
// otherwise errors of the contract's kinds. Result.RemoteID is set whenever
// the contact's id is known, even with an error; Result.Warnings lists what
// the contact does not hold exactly (metadata without
// SALESFORCE_METADATA_FIELD, a name that does not round-trip).
func (a *Adapter) Upsert(ctx context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error) {
	if c.UserID == "" {
		return integrations.Result{}, integrations.Permanent(errNoUserID)
	}
	fields, warnings, err := a.contactFields(c)
	if err != nil {
		return integrations.Result{RemoteID: link.RemoteID}, err
	}
	res := integrations.Result{RemoteID: link.RemoteID, MetadataKeys: a.metadataKeys(c), Warnings: warnings}

	if link.RemoteID != "" {
		fields[ExternalIDField] = c.UserID
		r, err := a.do(ctx, http.MethodPatch, "/"+url.PathEscape(link.RemoteID), fields)
		if err == nil {
			err = classify(r)
		}
		if err != nil {
			return integrations.Result{RemoteID: link.RemoteID}, fmt.Errorf("salesforce: updating contact %s for user %s: %w", link.RemoteID, c.UserID, maskPersonal(err, personalValues(c)...))
		}
		return res, nil
	}

	byExternalID := "/" + ExternalIDField + "/" + url.PathEscape(c.UserID)
	r, err := a.do(ctx, http.MethodPatch, byExternalID, fields)
	if err == nil {
		err = classify(r)
	}
	if err != nil {
		return integrations.Result{}, fmt.Errorf("salesforce: upserting the contact of user %s: %w", c.UserID, maskPersonal(err, personalValues(c)...))
	}
	var saved struct {
		ID string `json:"id"`
	}
	if len(bytes.TrimSpace(r.body)) > 0 {
		if err := json.Unmarshal(r.body, &saved); err != nil {
			a.logger.DebugContext(ctx, "unreadable upsert answer", "user_id", c.UserID, "status", r.status, "error", err)
		}
	}
	if saved.ID == "" {
		// 204: Salesforce updated the contact and did not say which.
		saved.ID, err = a.idByExternalID(ctx, c.UserID)
		if err != nil {
			return integrations.Result{}, err
		}
	}
	res.RemoteID = saved.ID
	return res, nil
}

// idByExternalID reads the id of the contact carrying userID.
func (a *Adapter) idByExternalID(ctx context.Context, userID string) (string, error) {
	r, err := a.do(ctx, http.MethodGet, "/"+ExternalIDField+"/"+url.PathEscape(userID)+"?fields=Id", nil)
	if err == nil {
		err = classify(r)
	}
	if errors.Is(err, integrations.ErrNotFound) {
		// Upserted a moment ago, deleted since: transient, the retry
		// upserts again.
		var ae *APIError
		errors.As(err, &ae)
		return "", fmt.Errorf("salesforce: reading the id of the contact of user %s: gone right after its upsert (%w)", userID, ae)
	}
	if err != nil {
		return "", fmt.Errorf("salesforce: reading the id of the contact of user %s: %w", userID, err)
	}
	var rec struct {
		ID string `json:"Id"`
	}
	if err := json.Unmarshal(r.body, &rec); err != nil || rec.ID == "" {
		return "", fmt.Errorf("salesforce: reading the id of the contact of user %s: answer without an Id", userID)
	}
	return rec.ID, nil
}

// Delete deletes the contact link.RemoteID or, without one, the contact
// carrying c.UserID as external id. It returns nil if there is none or it is
// already gone, a permanent error matching ErrMultipleMatches if the
// external id matches several contacts, otherwise errors of the contract's
// kinds.
func (a *Adapter) Delete(ctx context.Context, c integrations.Customer, link integrations.Link) error {
	var path, what string
	switch {
	case link.RemoteID != "":
		path, what = "/"+url.PathEscape(link.RemoteID), "contact "+link.RemoteID
	case c.UserID != "":
		path, what = "/"+ExternalIDField+"/"+url.PathEscape(c.UserID), "the contact"
	default:
		return nil
	}
	r, err := a.do(ctx, http.MethodDelete, path, nil)
	if err == nil {
		err = classify(r)
	}
	if err == nil || errors.Is(err, integrations.ErrNotFound) {
		return nil
	}
	return fmt.Errorf("salesforce: deleting %s of user %s: %w", what, c.UserID, err)
}

// response is an answer of the REST API.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request with the cached access token, records the API usage
// the answer reports, and on 401 fetches a new token and sends the request
// once more. It returns the answer (any status) or the error of getting one:
// ctx's, the token endpoint's, or a network failure (transient).
func (a *Adapter) do(ctx context.Context, method, path string, body map[string]any) (response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return response{}, integrations.Permanent(fmt.Errorf("encoding the request: %w", err))
		}
	}
	return a.doURL(ctx, method, a.base+path, payload, maxAnswerBytes, nil)
}

// doURL is do for any URL of the instance, with extra request headers and
// a bound on the answer read.
func (a *Adapter) doURL(ctx context.Context, method, target string, payload []byte, limit int64, header http.Header) (response, error) {
	if err := ctx.Err(); err != nil {
		return response{}, err
	}
	for renewed := false; ; renewed = true {
		tok, err := a.tokens.get(ctx)
		if err != nil {
			return response{}, err
		}
		r, err := a.send(ctx, method, target, payload, tok, limit, header)
		if err != nil {
			return response{}, err
		}
		if r.status == http.StatusUnauthorized && !renewed {
			a.logger.DebugContext(ctx, "access token refused; fetching a new one", "method", method)
			a.tokens.invalidate(tok)
			continue
		}
		return r, nil
	}
}

func (a *Adapter) send(ctx context.Context, method, target string, payload []byte, token string, limit int64, header http.Header) (response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return response{}, integrations.Permanent(fmt.Errorf("building the request: %w", err))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Sforce-Call-Options", CallOptions)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return response{}, fmt.Errorf("reading the answer (%d): %w", resp.StatusCode, err)
	}
	if used, limit, ok := parseLimitInfo(resp.Header.Get("Sforce-Limit-Info")); ok {
		a.metrics.apiUsage.Set(used)
		a.metrics.apiLimit.Set(limit)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}
