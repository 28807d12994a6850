package salesforce_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/conformance"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

const metadataField = salesforcefake.DefaultCustomField

// startFake runs a fake Salesforce on a loopback port.
func startFake(t *testing.T, opts salesforcefake.Options) *salesforcefake.Server {
	t.Helper()
	fake := salesforcefake.New(opts)
	t.Cleanup(fake.Close)
	_, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	return fake
}

// fakeConfig is the adapter's configuration for fake.
func fakeConfig(fake *salesforcefake.Server) salesforce.Config {
	return salesforce.Config{
		InstanceURL:  fake.URL(),
		TokenURL:     fake.TokenURL(),
		ClientID:     salesforcefake.DefaultClientID,
		ClientSecret: salesforcefake.DefaultClientSecret,
	}
}

func newAdapter(t *testing.T, cfg salesforce.Config, reg prometheus.Registerer) *salesforce.Adapter {
	t.Helper()
	a, err := salesforce.New(cfg, salesforce.Options{Registerer: reg})
	require.NoError(t, err)
	return a
}

// lookup reads a contact back from the fake as a Customer, the way
// CustomerFrom maps a notification.
func lookup(fake *salesforcefake.Server, field string) func(context.Context, string) (integrations.Customer, bool, error) {
	return func(_ context.Context, id string) (integrations.Customer, bool, error) {
		c, ok := fake.Contact(id)
		if !ok || c.IsDeleted {
			return integrations.Customer{}, false, nil
		}
		n := salesforce.Notification{
			ContactID: c.ID, TandemUserID: c.TandemUserID, Email: c.Email,
			FirstName: c.FirstName, LastName: c.LastName, Phone: c.Phone,
			Fields: map[string]string{field: c.Custom[field]},
		}
		cust, err := salesforce.CustomerFrom(n, field)
		return cust, true, err
	}
}

// The suite compares the metadata the contact holds, so it runs with
// SALESFORCE_METADATA_FIELD set; TestMetadataNotCarriedByDefault covers the
// default.
func TestConformance(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	cfg := fakeConfig(fake)
	cfg.MetadataField = metadataField
	conformance.Run(t, conformance.Harness{
		New:      func(t *testing.T) integrations.Provider { return newAdapter(t, cfg, nil) },
		Stateful: true,
		Lookup:   lookup(fake, metadataField),
		NewDown: func(t *testing.T) integrations.Provider {
			down := startFake(t, salesforcefake.Options{})
			down.SetFaults(salesforcefake.Faults{ServerErrorRatio: 1})
			c := fakeConfig(down)
			c.MetadataField = metadataField
			return newAdapter(t, c, nil)
		},
	})
}

func TestConformanceLegacyUpsertAnswers(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{LegacyUpsertNoContent: true})
	cfg := fakeConfig(fake)
	cfg.MetadataField = metadataField
	conformance.Run(t, conformance.Harness{
		New:      func(t *testing.T) integrations.Provider { return newAdapter(t, cfg, nil) },
		Stateful: true,
		Lookup:   lookup(fake, metadataField),
	})
}

func testCustomer() integrations.Customer {
	c := conformance.NewCustomer()
	c.Metadata = nil
	return c
}

// bodyOf decodes a recorded JSON request body.
func bodyOf(t *testing.T, r salesforcefake.Request) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.Body), &m), r.Body)
	return m
}

// apiRequests drops the token requests.
func apiRequests(fake *salesforcefake.Server) []salesforcefake.Request {
	var out []salesforcefake.Request
	for _, r := range fake.Requests() {
		if strings.HasPrefix(r.Path, "/services/data/") {
			out = append(out, r)
		}
	}
	return out
}

func TestUpsertRequests(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a, ctx := newAdapter(t, fakeConfig(fake), nil), context.Background()
	c := testCustomer()

	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	require.Equal(t, integrations.Result{RemoteID: res.RemoteID, MetadataKeys: []string{}}, res)
	got, ok := fake.Contact(res.RemoteID)
	require.True(t, ok)
	require.Equal(t, "Ada", got.FirstName)
	require.Equal(t, "Lovelace", got.LastName)
	require.Equal(t, c.Email, got.Email)
	require.Equal(t, c.Phone, got.Phone)
	require.Equal(t, c.UserID, got.TandemUserID)
	require.Equal(t, salesforcefake.DefaultIntegrationUserID, got.LastModifiedByID)

	c.Version, c.Phone = 2, ""
	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID})
	require.NoError(t, err)
	got, _ = fake.Contact(res.RemoteID)
	require.Empty(t, got.Phone, "an empty field is sent as null and clears it")

	require.NoError(t, a.Delete(ctx, c, integrations.Link{RemoteID: res.RemoteID}))

	reqs := apiRequests(fake)
	require.Len(t, reqs, 3)
	create, update, del := reqs[0], reqs[1], reqs[2]
	require.Equal(t, "PATCH /services/data/v60.0/sobjects/Contact/Tandem_User_Id__c/"+c.UserID, create.Method+" "+create.Path)
	require.Equal(t, http.StatusCreated, create.Status)
	require.Equal(t, map[string]any{"FirstName": "Ada", "LastName": "Lovelace", "Email": c.Email, "Phone": "+44 20 7946 0000"}, bodyOf(t, create),
		"the external id is in the URL, not the body")

	require.Equal(t, "PATCH /services/data/v60.0/sobjects/Contact/"+res.RemoteID, update.Method+" "+update.Path)
	require.Equal(t, http.StatusNoContent, update.Status)
	require.Equal(t, map[string]any{"FirstName": "Ada", "LastName": "Lovelace", "Email": c.Email, "Phone": nil, "Tandem_User_Id__c": c.UserID}, bodyOf(t, update))

	require.Equal(t, "DELETE /services/data/v60.0/sobjects/Contact/"+res.RemoteID, del.Method+" "+del.Path)
	for _, r := range reqs {
		require.Equal(t, "client=tandem", r.CallOptions, "%s %s", r.Method, r.Path)
	}
}

func TestRepeatedCreateUpdatesTheSameContact(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a, ctx := newAdapter(t, fakeConfig(fake), nil), context.Background()
	c := testCustomer()
	first, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	c.Version, c.Name = 2, "Ada King"
	again, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	require.Equal(t, first.RemoteID, again.RemoteID, "the id comes from the 200 answer")
	require.Len(t, fake.ContactsByExternalID(c.UserID), 1)
	require.Equal(t, 1, fake.Stats().ContactsCreated)
	reqs := apiRequests(fake)
	require.Len(t, reqs, 2, "no read: API 60.0 answers 200 with the id")
	require.Equal(t, http.StatusOK, reqs[1].Status)
}

func TestUpsertAnswered204ReadsTheID(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{LegacyUpsertNoContent: true})
	a, ctx := newAdapter(t, fakeConfig(fake), nil), context.Background()
	c := testCustomer()
	first, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	again, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	require.Equal(t, first.RemoteID, again.RemoteID)

	reqs := apiRequests(fake)
	require.Len(t, reqs, 3)
	require.Equal(t, http.StatusNoContent, reqs[1].Status)
	read := reqs[2]
	require.Equal(t, "GET /services/data/v60.0/sobjects/Contact/Tandem_User_Id__c/"+c.UserID+"?fields=Id",
		read.Method+" "+read.Path+"?"+read.RawQuery)
	require.Empty(t, read.CallOptions, "Sforce-Call-Options goes on writes")

	// With the id known, an update addresses it and reads nothing.
	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: first.RemoteID})
	require.NoError(t, err)
	require.Len(t, apiRequests(fake), 4)
}

func TestOneWordNameGoesToLastName(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	c := testCustomer()
	c.Name = "Cher"
	res, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.NoError(t, err)
	require.Empty(t, res.Warnings)
	got, _ := fake.Contact(res.RemoteID)
	require.Empty(t, got.FirstName)
	require.Equal(t, "Cher", got.LastName)
	body := bodyOf(t, apiRequests(fake)[0])
	require.Nil(t, body["FirstName"])
	require.Contains(t, body, "FirstName", "sent as null, so an old first name is cleared")
}

func TestNameThatDoesNotRoundTripWarns(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	c := testCustomer()
	c.Name = "Ada   Lovelace"
	res, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.NoError(t, err)
	require.Len(t, res.Warnings, 1)
	require.Contains(t, res.Warnings[0], `read back as "Ada Lovelace"`)
}

func TestNoNameIsPermanentBeforeAnyRequest(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	c := testCustomer()
	c.Name = "  "
	_, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.Error(t, err)
	require.True(t, integrations.IsPermanent(err))
	require.Contains(t, err.Error(), "LastName")

	_, err = a.Upsert(context.Background(), integrations.Customer{Name: "Ada"}, integrations.Link{})
	require.True(t, integrations.IsPermanent(err), "no user id")
	require.Empty(t, fake.Requests(), "not even a token")
}

func TestMetadataNotCarriedByDefault(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	c := conformance.NewCustomer() // metadata plan, team
	res, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.NoError(t, err, "metadata Salesforce cannot hold is a warning, not an error")
	require.NotNil(t, res.MetadataKeys)
	require.Empty(t, res.MetadataKeys, "the contact carries no metadata keys")
	require.Len(t, res.Warnings, 1)
	require.Contains(t, res.Warnings[0], "keys plan, team not pushed")
	require.NotContains(t, bodyOf(t, apiRequests(fake)[0]), metadataField)
	got, _ := fake.Contact(res.RemoteID)
	require.Empty(t, got.Custom)

	c.Metadata = nil
	res, err = a.Upsert(context.Background(), c, integrations.Link{RemoteID: res.RemoteID})
	require.NoError(t, err)
	require.Nil(t, res.Warnings, "no metadata, nothing left out")
}

func TestMetadataField(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	cfg := fakeConfig(fake)
	cfg.MetadataField = metadataField
	a := newAdapter(t, cfg, nil)
	c := conformance.NewCustomer()
	res, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.NoError(t, err)
	require.Nil(t, res.Warnings)
	require.Equal(t, []string{"plan", "team"}, res.MetadataKeys)
	require.Equal(t, `{"plan":"pro","team":"core"}`, bodyOf(t, apiRequests(fake)[0])[metadataField])

	c.Metadata = map[string]string{}
	res, err = a.Upsert(context.Background(), c, integrations.Link{RemoteID: res.RemoteID})
	require.NoError(t, err)
	require.Equal(t, []string{}, res.MetadataKeys)
	require.Contains(t, bodyOf(t, apiRequests(fake)[1]), metadataField)
	require.Nil(t, bodyOf(t, apiRequests(fake)[1])[metadataField], "no metadata clears the field")
}

func TestTokenFetchedOnceAndCached(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, fake.Stats().TokenRequests, "concurrent first calls share one token request")
	require.Len(t, fake.Contacts(), 20)
}

func TestTokenRenewedOnceOn401(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	reg := prometheus.NewRegistry()
	a, ctx := newAdapter(t, fakeConfig(fake), reg), context.Background()
	c := testCustomer()
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)

	fake.RevokeTokens() // the session expired
	c.Version, c.Name = 2, "Ada King"
	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID})
	require.NoError(t, err)
	got, _ := fake.Contact(res.RemoteID)
	require.Equal(t, "King", got.LastName)

	st := fake.Stats()
	require.Equal(t, 2, st.TokenRequests)
	require.Equal(t, 1, st.Unauthorized)
	var statuses []int
	for _, r := range fake.Requests() {
		statuses = append(statuses, r.Status)
	}
	require.Equal(t, []int{200, 201, 401, 200, 204}, statuses, "token, create, refused update, new token, update")
	require.Equal(t, 2.0, gauge(t, reg, "tandem_provider_token_requests_total"))

	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID})
	require.NoError(t, err)
	require.Equal(t, 2, fake.Stats().TokenRequests, "the new token is cached")
}

func TestSecond401InARowIsPermanent(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	fake.RefuseSessions(true)
	_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.Error(t, err)
	require.True(t, integrations.IsPermanent(err), "%v", err)
	require.Contains(t, err.Error(), "salesforce 401 INVALID_SESSION_ID: Session expired or invalid")
	st := fake.Stats()
	require.Equal(t, 2, st.TokenRequests, "one renewal, no loop")
	require.Equal(t, 2, st.Requests)

	fake.RefuseSessions(false)
	_, err = a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.NoError(t, err)
}

func TestTokenEndpointRefusingCredentialsIsPermanent(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	cfg := fakeConfig(fake)
	cfg.ClientSecret = "wrong"
	a := newAdapter(t, cfg, nil)
	_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.Error(t, err)
	require.True(t, integrations.IsPermanent(err), "%v", err)
	require.Contains(t, err.Error(), "invalid_client")
	require.NotContains(t, err.Error(), "wrong", "the secret is not echoed")
	require.Zero(t, fake.Stats().Requests)
}

func TestMultipleMatchesIsPermanent(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a, ctx := newAdapter(t, fakeConfig(fake), nil), context.Background()
	c := testCustomer()
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	dup, err := fake.DuplicateExternalID(c.UserID)
	require.NoError(t, err)

	_, err = a.Upsert(ctx, c, integrations.Link{})
	require.Error(t, err)
	require.ErrorIs(t, err, salesforce.ErrMultipleMatches)
	require.True(t, integrations.IsPermanent(err))
	require.Contains(t, err.Error(), res.RemoteID)
	require.Contains(t, err.Error(), dup.ID)

	err = a.Delete(ctx, c, integrations.Link{})
	require.ErrorIs(t, err, salesforce.ErrMultipleMatches)
	require.True(t, integrations.IsPermanent(err))

	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID})
	require.NoError(t, err, "with the id known, duplicates do not matter")
}

func TestValidationErrorIsPermanentWithSalesforcesMessage(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	c := testCustomer()
	c.Email = "not-an-email"
	_, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.Error(t, err)
	require.True(t, integrations.IsPermanent(err))
	require.Contains(t, err.Error(), "salesforce 400 INVALID_EMAIL_ADDRESS: Email: invalid email address: [redacted] (fields Email)")
	var ae *salesforce.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusBadRequest, ae.StatusCode)
	require.True(t, ae.Has("INVALID_EMAIL_ADDRESS"))
	_, limited := integrations.RetryAfter(err)
	require.False(t, limited)
	require.Empty(t, fake.Contacts())
}

func TestRequestLimitIsTransientWithALongWait(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)

	fake.SetFaults(salesforcefake.Faults{RequestLimitRatio: 1})
	_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err))
	wait, limited := integrations.RetryAfter(err)
	require.True(t, limited)
	require.Equal(t, salesforce.LimitBackoff, wait)
	require.Contains(t, err.Error(), "REQUEST_LIMIT_EXCEEDED")

	// The real daily limit answers the same.
	fake.SetFaults(salesforcefake.Faults{})
	fake.SetAPIUsage(salesforcefake.DefaultAPILimit)
	err = a.Delete(context.Background(), testCustomer(), integrations.Link{})
	wait, limited = integrations.RetryAfter(err)
	require.True(t, limited, "%v", err)
	require.Equal(t, salesforce.LimitBackoff, wait)
	require.Empty(t, fake.Contacts())
}

// TestServerErrorsAreTransient: a 5xx may have executed, so it is an
// ordinary transient failure (counted by the worker), not a rate limit.
func TestServerErrorsAreTransient(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	for _, f := range []salesforcefake.Faults{{ServerErrorRatio: 1}, {UnavailableRatio: 1}} {
		fake.SetFaults(f)
		_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
		require.Error(t, err)
		require.False(t, integrations.IsPermanent(err))
		_, limited := integrations.RetryAfter(err)
		require.False(t, limited)
	}
	fake.SetFaults(salesforcefake.Faults{})
	_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.NoError(t, err)
}

func TestUpdateOfContactDeletedInSalesforceIsNotFound(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a, ctx := newAdapter(t, fakeConfig(fake), nil), context.Background()
	c := testCustomer()
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	require.NoError(t, fake.UIDelete(res.RemoteID))

	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID})
	require.ErrorIs(t, err, integrations.ErrNotFound)
	require.True(t, integrations.IsPermanent(err))
	require.Contains(t, err.Error(), "ENTITY_IS_DELETED")
	require.Empty(t, fake.ContactsByExternalID(c.UserID), "not re-created")

	require.NoError(t, a.Delete(ctx, c, integrations.Link{RemoteID: res.RemoteID}), "already gone is deleted")
	require.NoError(t, a.Delete(ctx, c, integrations.Link{RemoteID: "003000000000000AAA"}), "never there is deleted")
}

func TestDeleteWithoutRemoteIDUsesTheExternalID(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a, ctx := newAdapter(t, fakeConfig(fake), nil), context.Background()
	c := testCustomer()
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)

	// The id was never stored (say the answer to the create was lost).
	require.NoError(t, a.Delete(ctx, c, integrations.Link{}))
	got, _ := fake.Contact(res.RemoteID)
	require.True(t, got.IsDeleted)
	last := apiRequests(fake)[1]
	require.Equal(t, "DELETE /services/data/v60.0/sobjects/Contact/Tandem_User_Id__c/"+c.UserID, last.Method+" "+last.Path)
	require.Equal(t, "client=tandem", last.CallOptions)

	require.NoError(t, a.Delete(ctx, c, integrations.Link{}), "404 is done")
	require.NoError(t, a.Delete(ctx, integrations.Customer{}, integrations.Link{}), "nothing to address")
	require.Len(t, apiRequests(fake), 3)
}

func TestAPIUsageMetric(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{APILimit: 5000})
	reg := prometheus.NewRegistry()
	a := newAdapter(t, fakeConfig(fake), reg)
	fake.SetAPIUsage(17)
	_, err := a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.NoError(t, err)
	require.Equal(t, 18.0, gauge(t, reg, "tandem_provider_api_usage"))
	require.Equal(t, 5000.0, gauge(t, reg, "tandem_provider_api_limit"))

	// Error answers carry the header too.
	fake.SetFaults(salesforcefake.Faults{ServerErrorRatio: 1})
	_, err = a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.Error(t, err)
	require.Equal(t, 19.0, gauge(t, reg, "tandem_provider_api_usage"))

	// A second adapter in the process shares the collectors.
	_, err = salesforce.New(fakeConfig(fake), salesforce.Options{Registerer: reg})
	require.NoError(t, err)
}

// gauge returns the value of the salesforce series of a gauge or counter.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "provider" && l.GetValue() == "salesforce" {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{provider=salesforce}", name)
	return 0
}

func TestNetworkErrorIsTransient(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	a := newAdapter(t, salesforce.Config{
		InstanceURL: "http://" + addr, TokenURL: "http://" + addr + "/services/oauth2/token",
		ClientID: "id", ClientSecret: "secret",
	}, nil)
	_, err = a.Upsert(context.Background(), testCustomer(), integrations.Link{})
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err), "%v", err)
	_, limited := integrations.RetryAfter(err)
	require.False(t, limited)
}

func TestCanceledWhileWaitingForTheToken(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := a.Delete(ctx, testCustomer(), integrations.Link{RemoteID: "003000000000000AAA"})
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, integrations.IsPermanent(err))
}

func TestConcurrentUseAcrossTokenRevocation(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	customers := make([]integrations.Customer, 16)
	links := make([]integrations.Link, 16)
	for i := range customers {
		customers[i] = testCustomer()
		res, err := a.Upsert(context.Background(), customers[i], integrations.Link{})
		require.NoError(t, err)
		links[i] = integrations.Link{RemoteID: res.RemoteID}
	}
	fake.RevokeTokens()
	var wg sync.WaitGroup
	errs := make([]error, len(customers))
	for i := range customers {
		wg.Go(func() {
			c := customers[i]
			c.Version, c.Name = 2, fmt.Sprintf("Ada Number%d", i)
			_, errs[i] = a.Upsert(context.Background(), c, links[i])
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	// Every refused request renews only the token it was refused with, so
	// concurrent 401s share the new token.
	require.Equal(t, 2, fake.Stats().TokenRequests)
	for i, l := range links {
		got, _ := fake.Contact(l.RemoteID)
		require.Equal(t, fmt.Sprintf("Number%d", i), got.LastName)
	}
}

// TestErrorsMaskTheCustomersValues: Salesforce quotes a refused value back
// ("Email: invalid email address: <it>"); the worker logs the error and
// keeps it as last_error, so the adapter masks what it sent.
func TestErrorsMaskTheCustomersValues(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), prometheus.NewRegistry())
	c := integrations.Customer{UserID: "0193a000-0000-7000-8000-0000000000aa", Email: "not-an-email-privately",
		Name: "Ada Privatelace", Version: 1}
	_, err := a.Upsert(context.Background(), c, integrations.Link{})
	require.ErrorContains(t, err, "INVALID_EMAIL_ADDRESS")
	require.NotContains(t, err.Error(), "not-an-email-privately")
	var apiErr *salesforce.APIError
	require.ErrorAs(t, err, &apiErr, "the API error is still found")
}
