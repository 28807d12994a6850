package stripe_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
)

const whsec = "whsec_test_receiver"

func receiver(t *testing.T, apiBase string, mutate ...func(*stripe.Config)) *stripe.Adapter {
	t.Helper()
	cfg := stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: apiBase, RateLimit: 1000, WebhookSecret: whsec}
	for _, m := range mutate {
		m(&cfg)
	}
	a, err := stripe.New(cfg, stripe.Options{})
	require.NoError(t, err)
	return a
}

// eventJSON renders a Stripe event around a customer object.
func eventJSON(t *testing.T, id, typ, version string, created int64, idemKey *string, object any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": version, "created": created, "type": typ,
		"livemode": false, "pending_webhooks": 1,
		"request": map[string]any{"id": "req_1", "idempotency_key": idemKey},
		"data":    map[string]any{"object": object},
	})
	require.NoError(t, err)
	return b
}

func customerObject(id, email, name, phone string, md map[string]string) map[string]any {
	return map[string]any{"id": id, "object": "customer", "email": email, "name": name, "phone": phone, "metadata": md}
}

// signed returns the headers of a delivery of payload signed with secret at ts.
func signed(payload []byte, secret string, ts time.Time) http.Header {
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: ts})
	return http.Header{"Stripe-Signature": {sp.Header}, "Content-Type": {"application/json; charset=utf-8"}}
}

func TestParseWebhookMapsCustomerEvents(t *testing.T) {
	t.Parallel()
	a := receiver(t, "")
	ctx := context.Background()
	created := time.Now().Add(-time.Minute).Unix()
	body := eventJSON(t, "evt_1", "customer.updated", stripe.APIVersion, created, nil,
		customerObject("cus_1", "ada@example.com", "Ada", "+1 555", map[string]string{
			"tandem_user_id": "0193-user", "tandem_other": "x", "plan": "pro",
		}))
	evs, err := a.ParseWebhook(ctx, integrations.WebhookRequest{Header: signed(body, whsec, time.Now()), Body: body})
	require.NoError(t, err)
	require.Equal(t, []integrations.InboundEvent{{
		ID: "evt_1", Kind: integrations.InboundUpdated, RawType: "customer.updated", RemoteID: "cus_1",
		UserID: "0193-user", OccurredAt: time.Unix(created, 0).UTC(),
		Customer: integrations.Customer{Email: "ada@example.com", Name: "Ada", Phone: "+1 555", Metadata: map[string]string{"plan": "pro"}},
		Raw:      body,
	}}, evs)
	// The mapped state hashes like the push that would produce it.
	pushed := integrations.Customer{UserID: "0193-user", Email: "ada@example.com", Name: "Ada", Phone: "+1 555",
		Metadata: map[string]string{"plan": "pro"}, Version: 7}
	require.Equal(t, pushed.Hash(), evs[0].Customer.Hash())

	for typ, kind := range map[string]integrations.InboundKind{
		"customer.created": integrations.InboundCreated, "customer.deleted": integrations.InboundDeleted,
	} {
		body := eventJSON(t, "evt_"+typ, typ, stripe.APIVersion, created, nil, customerObject("cus_1", "", "", "", nil))
		evs, err := a.ParseWebhook(ctx, integrations.WebhookRequest{Header: signed(body, whsec, time.Now()), Body: body})
		require.NoError(t, err)
		require.Equal(t, kind, evs[0].Kind)
		require.Empty(t, evs[0].Customer.Email)
		require.Nil(t, evs[0].Customer.Metadata)
	}
}

func TestParseWebhookRecognisesTandemRequests(t *testing.T) {
	t.Parallel()
	a := receiver(t, "")
	for key, echo := range map[string]bool{"tandem-stripe-update-u-v2": true, "tandem-stripe-create-u": true, "dashboard-key": false} {
		body := eventJSON(t, "evt_"+key, "customer.updated", stripe.APIVersion, time.Now().Unix(), &key,
			customerObject("cus_1", "a@example.com", "A", "", nil))
		evs, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: signed(body, whsec, time.Now()), Body: body})
		require.NoError(t, err)
		require.Equal(t, echo, evs[0].Echo, key)
	}
}

func TestParseWebhookRefusesUnverifiedDeliveries(t *testing.T) {
	t.Parallel()
	a := receiver(t, "")
	body := eventJSON(t, "evt_1", "customer.updated", stripe.APIVersion, time.Now().Unix(), nil,
		customerObject("cus_1", "a@example.com", "A", "", nil))
	ok := signed(body, whsec, time.Now())
	for name, h := range map[string]http.Header{
		"missing":                       {"Content-Type": {"application/json"}},
		"garbage":                       {"Stripe-Signature": {"nonsense"}, "Content-Type": {"application/json"}},
		"wrong secret":                  signed(body, "whsec_other", time.Now()),
		"expired":                       signed(body, whsec, time.Now().Add(-stripe.WebhookTolerance-5*time.Second)),
		"an hour ahead":                 signed(body, whsec, time.Now().Add(time.Hour)),
		"ten years ahead":               signed(body, whsec, time.Now().AddDate(10, 0, 0)),
		"just past the tolerance ahead": signed(body, whsec, time.Now().Add(stripe.WebhookTolerance+5*time.Second)),
		"other body":                    ok.Clone(),
	} {
		payload := body
		if name == "other body" {
			payload = []byte(strings.Replace(string(body), `"A"`, `"B"`, 1))
		}
		_, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: h, Body: payload})
		require.ErrorIs(t, err, integrations.ErrUnverified, name)
	}
	// Within the tolerance either way (clocks differ): accepted.
	for _, at := range []time.Time{time.Now().Add(stripe.WebhookTolerance - 30*time.Second), time.Now().Add(-stripe.WebhookTolerance + 30*time.Second)} {
		_, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: signed(body, whsec, at), Body: body})
		require.NoError(t, err, at)
	}
}

func TestParseWebhookRefusesBadPayloads(t *testing.T) {
	t.Parallel()
	a := receiver(t, "")
	now := time.Now()
	good := eventJSON(t, "evt_1", "customer.updated", stripe.APIVersion, now.Unix(), nil,
		customerObject("cus_1", "a@example.com", "A", "", nil))
	for name, body := range map[string][]byte{
		"truncated":   good[:len(good)/2],
		"not json":    []byte("hello"),
		"old version": eventJSON(t, "evt_2", "customer.updated", "2020-08-27", now.Unix(), nil, customerObject("cus_1", "", "", "", nil)),
		"no customer": eventJSON(t, "evt_3", "customer.updated", stripe.APIVersion, now.Unix(), nil, map[string]any{"object": "customer"}),
		"no id":       eventJSON(t, "", "customer.updated", stripe.APIVersion, now.Unix(), nil, customerObject("cus_1", "", "", "", nil)),
		"no time":     eventJSON(t, "evt_4", "customer.updated", stripe.APIVersion, 0, nil, customerObject("cus_1", "", "", "", nil)),
	} {
		_, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: signed(body, whsec, now), Body: body})
		require.ErrorIs(t, err, integrations.ErrBadPayload, name)
	}
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/json;;"} {
		h := signed(good, whsec, now)
		h.Set("Content-Type", ct)
		_, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: h, Body: good})
		require.ErrorIs(t, err, integrations.ErrBadPayload, ct)
	}

	// Another API version is accepted only when configured.
	lenient := receiver(t, "", func(c *stripe.Config) { c.AcceptAPIVersionMismatch = true })
	old := eventJSON(t, "evt_5", "customer.updated", "2020-08-27", now.Unix(), nil, customerObject("cus_1", "a@example.com", "", "", nil))
	_, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: signed(old, whsec, now), Body: old})
	require.ErrorContains(t, err, "pin the webhook endpoint to "+stripe.APIVersion)
	evs, err := lenient.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: signed(old, whsec, now), Body: old})
	require.NoError(t, err)
	require.Equal(t, "a@example.com", evs[0].Customer.Email)
}

func TestParseWebhookIgnoresOtherEventTypes(t *testing.T) {
	t.Parallel()
	a := receiver(t, "")
	body := eventJSON(t, "evt_inv", "invoice.paid", stripe.APIVersion, time.Now().Unix(), nil, map[string]any{"id": "in_1", "object": "invoice"})
	evs, err := a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: signed(body, whsec, time.Now()), Body: body})
	require.NoError(t, err)
	require.Equal(t, []integrations.InboundEvent{{ID: "evt_inv", Kind: integrations.InboundIgnored, RawType: "invoice.paid", Raw: body}}, evs)
}

func TestWebhookSecretIsNeededOnlyByTheReceiver(t *testing.T) {
	t.Parallel()
	a := receiver(t, "", func(c *stripe.Config) { c.WebhookSecret = "" })
	err := a.CheckWebhookConfig()
	require.EqualError(t, err, "config: STRIPE_WEBHOOK_SECRET is required (the signing secret of the Stripe webhook endpoint, whsec_…)")
	_, err = a.ParseWebhook(context.Background(), integrations.WebhookRequest{Header: http.Header{}, Body: []byte("{}")})
	require.Error(t, err)
	require.False(t, errors.Is(err, integrations.ErrUnverified), "a missing secret is Tandem's fault, not the sender's")
	require.NoError(t, receiver(t, "").CheckWebhookConfig())

	cfg, err := stripe.ConfigFrom(config.NewSettings("stripe", map[string]string{
		"secret_key": "sk_test_1", "webhook_secret": "whsec_1", "accept_api_version_mismatch": "true",
	}))
	require.NoError(t, err)
	require.Equal(t, "whsec_1", cfg.WebhookSecret)
	require.True(t, cfg.AcceptAPIVersionMismatch)
	_, err = stripe.ConfigFrom(config.NewSettings("stripe", map[string]string{"secret_key": "sk_test_1", "accept_api_version_mismatch": "maybe"}))
	require.ErrorContains(t, err, "STRIPE_ACCEPT_API_VERSION_MISMATCH")
}

func TestFetchReadsTheCustomerNow(t *testing.T) {
	t.Parallel()
	fake := stripefake.New(stripefake.Options{})
	t.Cleanup(fake.Close)
	url, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	a := receiver(t, url)
	ctx := context.Background()

	c, err := fake.DashboardCreate(stripefake.Customer{Email: "f@example.com", Name: "F",
		Metadata: map[string]string{"tandem_user_id": "u1", "plan": "pro"}})
	require.NoError(t, err)
	got, found, err := a.Fetch(ctx, c.ID)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, integrations.RemoteObject{Customer: integrations.Customer{Email: "f@example.com", Name: "F",
		Metadata: map[string]string{"plan": "pro"}}}, got)

	require.NoError(t, fake.DashboardDelete(c.ID))
	_, found, err = a.Fetch(ctx, c.ID)
	require.NoError(t, err)
	require.False(t, found, "a deleted customer")
	_, found, err = a.Fetch(ctx, "cus_nope")
	require.NoError(t, err)
	require.False(t, found, "an unknown customer")

	fake.SetFaults(stripefake.Faults{ServerErrorRatio: 1})
	_, _, err = a.Fetch(ctx, c.ID)
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err), "a 500 is transient")
}

// TestParseWebhookAcceptsTheFakesDeliveries checks the receiver against the
// deliveries of the Stripe fake, which signs like Stripe.
func TestParseWebhookAcceptsTheFakesDeliveries(t *testing.T) {
	t.Parallel()
	a := receiver(t, "")
	var mu sync.Mutex
	var got []integrations.InboundEvent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		evs, err := a.ParseWebhook(r.Context(), integrations.WebhookRequest{Header: r.Header, Body: body})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, evs...)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	fake := stripefake.New(stripefake.Options{WebhookURL: srv.URL, WebhookSecret: whsec, RetryBackoff: time.Millisecond})
	t.Cleanup(fake.Close)
	c, err := fake.DashboardCreate(stripefake.Customer{Email: "d@example.com", Name: "D"})
	require.NoError(t, err)
	_, err = fake.DashboardUpdate(c.ID, func(c *stripefake.Customer) { c.Name = "D2" })
	require.NoError(t, err)
	require.NoError(t, fake.DashboardDelete(c.ID))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, fake.WaitDelivered(ctx))
	require.Equal(t, stripefake.DeliveryStats{Queued: 3, Attempts: 3, Delivered: 3}, fake.DeliveryStats())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 3)
	kinds := []integrations.InboundKind{got[0].Kind, got[1].Kind, got[2].Kind}
	require.Equal(t, []integrations.InboundKind{integrations.InboundCreated, integrations.InboundUpdated, integrations.InboundDeleted}, kinds)
	require.Equal(t, "D2", got[1].Customer.Name)
	for _, ev := range got {
		require.Equal(t, c.ID, ev.RemoteID)
		require.False(t, ev.Echo)
	}
}
