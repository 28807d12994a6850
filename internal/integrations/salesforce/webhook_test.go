package salesforce_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/conformance"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

// receiver is an adapter for fake with the inbound settings message() and
// the fake use; mutate adjusts the configuration.
func receiver(t *testing.T, fake *salesforcefake.Server, mutate ...func(*salesforce.Config)) *salesforce.Adapter {
	t.Helper()
	cfg := salesforce.Config{
		InstanceURL: "https://acme.my.salesforce.com", TokenURL: "https://acme.my.salesforce.com/services/oauth2/token",
		ClientID: "id", ClientSecret: "secret",
		Inbound: salesforce.InboundConfig{WebhookSecret: listenerSecret, OrgID: salesforcefake.DefaultOrgID,
			IntegrationUserID: salesforcefake.DefaultIntegrationUserID},
	}
	if fake != nil {
		cfg.InstanceURL, cfg.TokenURL = fake.URL(), fake.TokenURL()
		cfg.ClientID, cfg.ClientSecret = salesforcefake.DefaultClientID, salesforcefake.DefaultClientSecret
	}
	for _, m := range mutate {
		m(&cfg)
	}
	return newAdapter(t, cfg, nil)
}

// delivery is a request as the webhook hands it over: token in the query.
func delivery(body []byte, token string) integrations.WebhookRequest {
	q := url.Values{}
	if token != "" {
		q.Set("token", token)
	}
	return integrations.WebhookRequest{
		Header: http.Header{"Content-Type": {"text/xml; charset=utf-8"}, "Soapaction": {`""`}},
		Query:  q, Body: body,
	}
}

func TestParseWebhookMapsNotifications(t *testing.T) {
	t.Parallel()
	a := receiver(t, nil)
	body := message(3)
	// Out of order: the second notification is the newest, the third the oldest.
	body = []byte(strings.Replace(string(body), "2024-03-01T12:00:01.000Z", "2024-03-01T12:00:09.000Z", 1))
	body = []byte(strings.Replace(string(body), "2024-03-01T12:00:02.000Z", "2024-03-01T11:59:59.000Z", 1))
	evs, err := a.ParseWebhook(context.Background(), delivery(body, listenerSecret))
	require.NoError(t, err)
	require.Len(t, evs, 3)
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	require.Equal(t, []string{"04l5g0000000000002", "04l5g0000000000000", "04l5g0000000000001"}, ids, "ordered by LastModifiedDate")

	ev := evs[1]
	require.Equal(t, integrations.InboundEvent{
		ID: "04l5g0000000000000", Kind: integrations.InboundUpdated, RawType: salesforce.EventContactChanged,
		RemoteID: "0035g0000000000000", UserID: "0190a5d2-7c3e-7b1a-9f00-000000000000",
		OccurredAt:      time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC),
		Customer:        integrations.Customer{Email: "ada0@example.com", Name: "Ada King & Lovelace"},
		WithoutMetadata: true, Raw: ev.Raw,
	}, ev)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(ev.Raw, &raw))
	require.Equal(t, "00D5g00000TndmQEAR", raw["organization_id"])
	require.Equal(t, "04l5g0000000000000", raw["notification_id"])
	require.Equal(t, "ada0@example.com", raw["sobject"].(map[string]any)["Email"])
}

func TestParseWebhookEchoDeletionAndMetadata(t *testing.T) {
	t.Parallel()
	a := receiver(t, nil, func(c *salesforce.Config) { c.MetadataField = metadataField })
	body := strings.Replace(string(message(2)), "<sf:LastModifiedById>0055g00000TndmUAAR</sf:LastModifiedById>",
		"<sf:LastModifiedById>"+salesforcefake.DefaultIntegrationUserID[:15]+"</sf:LastModifiedById>", 1)
	body = strings.Replace(body, "<sf:IsDeleted>false</sf:IsDeleted>",
		`<sf:IsDeleted>false</sf:IsDeleted><sf:Tandem_Metadata__c>{"plan":"pro"}</sf:Tandem_Metadata__c>`, 1)
	body = strings.Replace(body, "<sf:IsDeleted>false</sf:IsDeleted>\n", "<sf:IsDeleted>true</sf:IsDeleted>\n", 1)
	evs, err := a.ParseWebhook(context.Background(), delivery([]byte(body), listenerSecret))
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.True(t, evs[0].Echo, "changed by the integration user (15-character id)")
	require.False(t, evs[0].WithoutMetadata)
	require.Equal(t, map[string]string{"plan": "pro"}, evs[0].Customer.Metadata)
	require.False(t, evs[1].Echo)
	require.Equal(t, integrations.InboundDeleted, evs[1].Kind)
	require.Equal(t, salesforce.EventContactDeleted, evs[1].RawType)
	require.False(t, evs[1].WithoutMetadata)
	require.Nil(t, evs[1].Customer.Metadata, "an empty metadata field is no metadata")

	// A metadata field edited by hand into something else: applied without
	// metadata, not refused (the other notifications must not wait on it).
	junk := strings.Replace(body, `{"plan":"pro"}`, "not json", 1)
	evs, err = a.ParseWebhook(context.Background(), delivery([]byte(junk), listenerSecret))
	require.NoError(t, err)
	require.True(t, evs[0].WithoutMetadata)
	require.Nil(t, evs[0].Customer.Metadata)
	require.False(t, evs[1].WithoutMetadata)
}

func TestParseWebhookRefusals(t *testing.T) {
	t.Parallel()
	a := receiver(t, nil)
	good := message(2)
	for name, tc := range map[string]struct {
		req  integrations.WebhookRequest
		want error
	}{
		"no token":     {delivery(good, ""), integrations.ErrUnauthenticated},
		"wrong token":  {delivery(good, listenerSecret+"x"), integrations.ErrUnauthenticated},
		"token prefix": {delivery(good, listenerSecret[:10]), integrations.ErrUnauthenticated},
		"two tokens": {func() integrations.WebhookRequest {
			r := delivery(good, listenerSecret)
			r.Query.Add("token", "x")
			return r
		}(), integrations.ErrUnauthenticated},
		"token, no body": {delivery(nil, listenerSecret), integrations.ErrBadPayload},
		"other org": {delivery([]byte(strings.Replace(string(good), "00D5g00000TndmQEAR", "00D5g00000OtherQEAR", 1)), listenerSecret),
			integrations.ErrForbidden},
		"malformed XML": {delivery(good[:len(good)-30], listenerSecret), integrations.ErrBadPayload},
		"DTD": {delivery([]byte(`<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b SYSTEM "file:///etc/passwd">]><a>&b;</a>`), listenerSecret),
			integrations.ErrBadPayload},
		"JSON": {func() integrations.WebhookRequest {
			r := delivery(good, listenerSecret)
			r.Header.Set("Content-Type", "application/json")
			return r
		}(), integrations.ErrBadPayload},
		"no LastModifiedDate": {delivery([]byte(strings.Replace(string(good), "<sf:LastModifiedDate>2024-03-01T12:00:01.000Z</sf:LastModifiedDate>", "", 1)), listenerSecret),
			integrations.ErrBadPayload},
		"no LastModifiedById": {delivery([]byte(strings.Replace(string(good), "<sf:LastModifiedById>0055g00000TndmUAAR</sf:LastModifiedById>", "", 1)), listenerSecret),
			integrations.ErrBadPayload},
	} {
		evs, err := a.ParseWebhook(context.Background(), tc.req)
		require.ErrorIs(t, err, tc.want, name)
		require.Nil(t, evs, name)
		require.NotContains(t, err.Error(), listenerSecret, "%s: the secret is not echoed", name)
	}
	_, err := a.ParseWebhook(context.Background(), delivery([]byte(strings.Replace(string(good), "<sf:LastModifiedDate>2024-03-01T12:00:01.000Z</sf:LastModifiedDate>", "", 1)), listenerSecret))
	require.ErrorContains(t, err, "add it to the Outbound Message's fields")

	// Without a Content-Type the body decides.
	req := delivery(good, listenerSecret)
	req.Header.Del("Content-Type")
	evs, err := a.ParseWebhook(context.Background(), req)
	require.NoError(t, err)
	require.Len(t, evs, 2)
}

func TestWebhookConfigIsNeededOnlyByTheReceiver(t *testing.T) {
	t.Parallel()
	a := receiver(t, nil, func(c *salesforce.Config) { c.Inbound = salesforce.InboundConfig{} })
	require.EqualError(t, a.CheckWebhookConfig(),
		"config: SALESFORCE_WEBHOOK_SECRET, SALESFORCE_ORG_ID and SALESFORCE_INTEGRATION_USER_ID are required")
	_, err := a.ParseWebhook(context.Background(), delivery(message(1), ""))
	require.Error(t, err)
	require.NotErrorIs(t, err, integrations.ErrUnauthenticated, "a missing secret is Tandem's fault, not the sender's")
	require.NoError(t, receiver(t, nil).CheckWebhookConfig())

	cfg, err := salesforce.ConfigFrom(settings(map[string]string{
		"instance_url": "https://acme.my.salesforce.com", "token_url": "https://acme.my.salesforce.com/services/oauth2/token",
		"client_id": "id", "client_secret": "secret", "metadata_field": "Tandem_Metadata__c",
		"webhook_secret": "0123456789abcdef", "org_id": "00D5g00000TndmQ", "integration_user_id": "0055g00000TndmI",
	}))
	require.NoError(t, err)
	require.Equal(t, salesforce.InboundConfig{WebhookSecret: "0123456789abcdef", OrgID: "00D5g00000TndmQ",
		IntegrationUserID: "0055g00000TndmI"}, cfg.Inbound)
	a, err = salesforce.FromSettings(config.NewSettings("salesforce", map[string]string{
		"instance_url": "https://acme.my.salesforce.com", "token_url": "https://acme.my.salesforce.com/services/oauth2/token",
		"client_id": "id", "client_secret": "secret", "org_id": "00D5g00000TndmQ",
	}), salesforce.Options{})
	require.NoError(t, err, "the worker builds the adapter without the inbound settings")
	require.EqualError(t, a.CheckWebhookConfig(), "config: SALESFORCE_WEBHOOK_SECRET and SALESFORCE_INTEGRATION_USER_ID are required")
}

func TestAckAndFaultAreSOAP(t *testing.T) {
	t.Parallel()
	a := receiver(t, nil)
	ct, body := a.Ack(nil)
	require.Equal(t, salesforce.AckContentType, ct)
	require.Equal(t, salesforce.AckResponse(), body)
	ct, body = a.Fault("try again")
	require.Equal(t, salesforce.AckContentType, ct)
	require.Equal(t, salesforce.FaultResponse("try again"), body)
}

func TestFetchReadsTheContactNow(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := receiver(t, fake, func(c *salesforce.Config) { c.MetadataField = metadataField })
	plain := receiver(t, fake)
	ctx := context.Background()

	c, err := fake.UICreate(salesforcefake.Contact{FirstName: "Ada", LastName: "Lovelace", Email: "f@example.com",
		Phone: "+44 1", TandemUserID: "u1", Custom: map[string]string{metadataField: `{"plan":"pro"}`}})
	require.NoError(t, err)
	got, found, err := a.Fetch(ctx, c.ID)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, integrations.RemoteObject{Customer: integrations.Customer{Email: "f@example.com", Name: "Ada Lovelace",
		Phone: "+44 1", Metadata: map[string]string{"plan": "pro"}}}, got)
	got, found, err = plain.Fetch(ctx, c.ID)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, integrations.RemoteObject{Customer: integrations.Customer{Email: "f@example.com", Name: "Ada Lovelace",
		Phone: "+44 1"}, WithoutMetadata: true}, got, "no metadata without a metadata field")
	for _, r := range apiRequests(fake) {
		require.Equal(t, http.MethodGet, r.Method, "Fetch only reads")
	}

	_, err = fake.UIUpdate(c.ID, func(c *salesforcefake.Contact) { c.Custom[metadataField] = "junk" })
	require.NoError(t, err)
	got, found, err = a.Fetch(ctx, c.ID)
	require.NoError(t, err, "junk in the metadata field does not go away by retrying")
	require.True(t, found)
	require.Equal(t, integrations.RemoteObject{Customer: integrations.Customer{Email: "f@example.com", Name: "Ada Lovelace",
		Phone: "+44 1"}, WithoutMetadata: true}, got, "read without its metadata")

	require.NoError(t, fake.UIDelete(c.ID))
	_, found, err = a.Fetch(ctx, c.ID)
	require.NoError(t, err)
	require.False(t, found, "a deleted contact")
	_, found, err = a.Fetch(ctx, "003000000000000AAA")
	require.NoError(t, err)
	require.False(t, found, "an unknown contact")

	fake.SetFaults(salesforcefake.Faults{ServerErrorRatio: 1})
	_, _, err = plain.Fetch(ctx, c.ID)
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err), "a 500 is transient")
}

// TestConformanceThroughFetch runs the suite reading contacts back with
// Fetch, so Fetch maps a contact the way Upsert wrote it.
func TestConformanceThroughFetch(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	mk := func(t *testing.T) *salesforce.Adapter {
		return receiver(t, fake, func(c *salesforce.Config) { c.MetadataField = metadataField })
	}
	reader := mk(t)
	conformance.Run(t, conformance.Harness{
		New:      func(t *testing.T) integrations.Provider { return mk(t) },
		Stateful: true,
		Lookup: func(ctx context.Context, id string) (integrations.Customer, bool, error) {
			obj, found, err := reader.Fetch(ctx, id)
			if found && obj.WithoutMetadata {
				return integrations.Customer{}, false, errors.New("metadata not read")
			}
			return obj.Customer, found, err
		},
	})
}
