package salesforcefake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

const contactPath = "/services/data/v60.0/sobjects/Contact/"

type client struct {
	t     *testing.T
	base  string
	token string
}

func start(t *testing.T, opts salesforcefake.Options) (*salesforcefake.Server, *client) {
	t.Helper()
	fake := salesforcefake.New(opts)
	t.Cleanup(fake.Close)
	base, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	return fake, &client{t: t, base: base, token: fake.IssueToken()}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errors(t *testing.T) []salesforce.ErrorItem {
	t.Helper()
	var items []salesforce.ErrorItem
	require.NoError(t, json.Unmarshal(a.body, &items), string(a.body))
	return items
}

func (a answer) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(a.body, &m), string(a.body))
	return m
}

func (c *client) do(method, path string, body any, header ...string) answer {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(c.t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	require.NoError(c.t, err)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	fake, _ := start(t, salesforcefake.Options{})
	post := func(form url.Values, basic bool) answer {
		req, err := http.NewRequest(http.MethodPost, fake.TokenURL(), strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			req.SetBasicAuth(salesforcefake.DefaultClientID, salesforcefake.DefaultClientSecret)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{status: resp.StatusCode, header: resp.Header, body: b}
	}
	good := url.Values{"grant_type": {"client_credentials"}, "client_id": {salesforcefake.DefaultClientID}, "client_secret": {salesforcefake.DefaultClientSecret}}
	a := post(good, false)
	require.Equal(t, http.StatusOK, a.status)
	tok := a.object(t)
	require.Equal(t, fake.URL(), tok["instance_url"])
	require.Equal(t, "Bearer", tok["token_type"])
	require.NotEmpty(t, tok["signature"])
	require.NotEmpty(t, tok["issued_at"])
	require.Equal(t, "https://login.salesforce.com/id/"+fake.OrgID()+"/"+fake.IntegrationUserID(), tok["id"])
	require.NotContains(t, tok, "expires_in", "Salesforce does not say")
	require.True(t, strings.HasPrefix(tok["access_token"].(string), fake.OrgID()[:15]+"!"))

	require.Equal(t, http.StatusOK, post(url.Values{"grant_type": {"client_credentials"}}, true).status, "Basic auth")

	for _, tc := range []struct {
		form url.Values
		code string
	}{
		{url.Values{"grant_type": {"password"}}, "unsupported_grant_type"},
		{url.Values{}, "invalid_request"},
		{url.Values{"grant_type": {"client_credentials"}, "client_id": {"nope"}, "client_secret": {salesforcefake.DefaultClientSecret}}, "invalid_client_id"},
		{url.Values{"grant_type": {"client_credentials"}, "client_id": {salesforcefake.DefaultClientID}, "client_secret": {"nope"}}, "invalid_client"},
	} {
		a := post(tc.form, false)
		require.Equal(t, http.StatusBadRequest, a.status)
		require.Equal(t, tc.code, a.object(t)["error"])
	}
	st := fake.Stats()
	require.Equal(t, 6, st.TokenRequests)
	require.Equal(t, 2, st.TokensIssued)
	require.Zero(t, st.Requests, "token requests are not API requests")

	api := &client{t: t, base: fake.URL(), token: tok["access_token"].(string)}
	require.Equal(t, http.StatusNotFound, api.do(http.MethodGet, contactPath+"003000000000000AAA", nil).status, "the token works")
}

func TestSessions(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	anon := &client{t: t, base: c.base}
	a := anon.do(http.MethodGet, contactPath+"003000000000000AAA", nil)
	require.Equal(t, http.StatusUnauthorized, a.status)
	require.Equal(t, []salesforce.ErrorItem{{Message: "Session expired or invalid", ErrorCode: "INVALID_SESSION_ID"}}, a.errors(t))

	require.Equal(t, http.StatusNotFound, c.do(http.MethodGet, contactPath+"003000000000000AAA", nil).status)
	fake.RevokeTokens()
	require.Equal(t, http.StatusUnauthorized, c.do(http.MethodGet, contactPath+"003000000000000AAA", nil).status)
	c.token = fake.IssueToken()
	require.Equal(t, http.StatusNotFound, c.do(http.MethodGet, contactPath+"003000000000000AAA", nil).status)
	fake.RefuseSessions(true)
	c.token = fake.IssueToken()
	require.Equal(t, http.StatusUnauthorized, c.do(http.MethodGet, contactPath+"003000000000000AAA", nil).status, "even a new token")
	require.Equal(t, 3, fake.Stats().Unauthorized)
}

func TestContactByExternalID(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	ext := contactPath + "Tandem_User_Id__c/u-1"
	a := c.do(http.MethodPatch, ext, map[string]any{"LastName": "Lovelace", "FirstName": "Ada", "Email": "ada@example.com", "Phone": nil},
		"Sforce-Call-Options", "client=tandem")
	require.Equal(t, http.StatusCreated, a.status, string(a.body))
	created := a.object(t)
	id := created["id"].(string)
	require.Equal(t, map[string]any{"id": id, "success": true, "errors": []any{}, "created": true}, created)
	require.Len(t, id, 18)
	require.True(t, strings.HasPrefix(id, "003"))

	a = c.do(http.MethodPatch, ext, map[string]any{"FirstName": "Augusta"})
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, map[string]any{"id": id, "success": true, "errors": []any{}, "created": false}, a.object(t))

	a = c.do(http.MethodGet, ext, nil)
	require.Equal(t, http.StatusOK, a.status)
	rec := a.object(t)
	require.Equal(t, "Augusta", rec["FirstName"])
	require.Equal(t, "Lovelace", rec["LastName"])
	require.Equal(t, "Augusta Lovelace", rec["Name"])
	require.Nil(t, rec["Phone"])
	require.Equal(t, "u-1", rec["Tandem_User_Id__c"])
	require.Equal(t, fake.IntegrationUserID(), rec["LastModifiedById"])
	require.Equal(t, map[string]any{"type": "Contact", "url": contactPath + id}, rec["attributes"])

	a = c.do(http.MethodGet, contactPath+id[:15]+"?fields=Id,lastname", nil)
	require.Equal(t, http.StatusOK, a.status, "15-character ids and case-insensitive field names")
	require.Equal(t, map[string]any{"attributes": map[string]any{"type": "Contact", "url": contactPath + id}, "Id": id, "LastName": "Lovelace"}, a.object(t))
	a = c.do(http.MethodGet, contactPath+id+"?fields=Nope", nil)
	require.Equal(t, "INVALID_FIELD", a.errors(t)[0].ErrorCode)

	require.Equal(t, http.StatusNoContent, c.do(http.MethodPatch, contactPath+id, map[string]any{"Phone": "+44 1"}).status)
	got, _ := fake.Contact(id)
	require.Equal(t, "+44 1", got.Phone)

	require.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, ext, nil, "Sforce-Call-Options", "client=tandem").status)
	a = c.do(http.MethodGet, ext, nil)
	require.Equal(t, http.StatusNotFound, a.status)
	require.Equal(t, "NOT_FOUND", a.errors(t)[0].ErrorCode)
	for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
		a = c.do(m, contactPath+id, map[string]any{"Phone": "x"})
		require.Equal(t, http.StatusNotFound, a.status, m)
		require.Equal(t, "ENTITY_IS_DELETED", a.errors(t)[0].ErrorCode, m)
	}
	require.Equal(t, http.StatusNotFound, c.do(http.MethodDelete, ext, nil).status)

	a = c.do(http.MethodPatch, ext, map[string]any{"LastName": "Again"})
	require.Equal(t, http.StatusCreated, a.status, "an upsert after a delete creates a new contact")
	require.NotEqual(t, id, a.object(t)["id"])

	require.Equal(t, http.StatusNotFound, c.do(http.MethodGet, contactPath+"Other_Id__c/u-1", nil).status)
	require.Equal(t, http.StatusNotFound, c.do(http.MethodGet, "/services/data/v60.0/sobjects/Account/"+id, nil).status)
	require.Equal(t, http.StatusMethodNotAllowed, c.do(http.MethodPost, ext, map[string]any{}).status)

	var opts []string
	for _, r := range fake.Requests() {
		if r.Method != http.MethodGet {
			opts = append(opts, r.CallOptions)
		}
	}
	require.Equal(t, "client=tandem", opts[0])
	require.Equal(t, "", opts[1])
	st := fake.Stats()
	require.Equal(t, 2, st.ContactsCreated)
	require.Equal(t, 2, st.ContactsUpdated)
	require.Equal(t, 1, st.ContactsDeleted)
}

func TestLegacyUpsertAnswer(t *testing.T) {
	t.Parallel()
	_, c := start(t, salesforcefake.Options{LegacyUpsertNoContent: true})
	ext := contactPath + "Tandem_User_Id__c/u-1"
	require.Equal(t, http.StatusCreated, c.do(http.MethodPatch, ext, map[string]any{"LastName": "L"}).status)
	a := c.do(http.MethodPatch, ext, map[string]any{"LastName": "M"})
	require.Equal(t, http.StatusNoContent, a.status)
	require.Empty(t, a.body)
}

func TestValidation(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	ext := contactPath + "Tandem_User_Id__c/u-1"
	for _, tc := range []struct {
		body   any
		code   string
		fields []string
	}{
		{map[string]any{"FirstName": "Ada"}, "REQUIRED_FIELD_MISSING", []string{"LastName"}},
		{map[string]any{"LastName": ""}, "REQUIRED_FIELD_MISSING", []string{"LastName"}},
		{map[string]any{"LastName": "L", "Email": "nope"}, "INVALID_EMAIL_ADDRESS", []string{"Email"}},
		{map[string]any{"LastName": "L", "Nickname__c": "x"}, "INVALID_FIELD", nil},
		{map[string]any{"LastName": "L", "Id": "003000000000000AAA"}, "INVALID_FIELD_FOR_INSERT_UPDATE", []string{"Id"}},
		{map[string]any{"LastName": strings.Repeat("x", 81)}, "STRING_TOO_LONG", []string{"LastName"}},
		{map[string]any{"LastName": 7}, "JSON_PARSER_ERROR", nil},
		{"not an object", "JSON_PARSER_ERROR", nil},
		{map[string]any{"LastName": "L", "Tandem_User_Id__c": "u-2"}, "INVALID_FIELD", []string{"Tandem_User_Id__c"}},
	} {
		a := c.do(http.MethodPatch, ext, tc.body)
		require.Equal(t, http.StatusBadRequest, a.status, "%v", tc.body)
		items := a.errors(t)
		require.Len(t, items, 1)
		require.Equal(t, tc.code, items[0].ErrorCode, "%v", tc.body)
		require.Equal(t, tc.fields, items[0].Fields, "%v", tc.body)
		require.NotEmpty(t, items[0].Message)
	}
	require.Empty(t, fake.Contacts())
	require.Equal(t, 9, fake.Stats().ValidationFailures)

	// An update cannot clear LastName either.
	a := c.do(http.MethodPatch, ext, map[string]any{"LastName": "L", "Tandem_User_Id__c": "u-1", "Tandem_Metadata__c": "{}"})
	require.Equal(t, http.StatusCreated, a.status, string(a.body))
	a = c.do(http.MethodPatch, contactPath+a.object(t)["id"].(string), map[string]any{"LastName": nil})
	require.Equal(t, "REQUIRED_FIELD_MISSING", a.errors(t)[0].ErrorCode)
}

func TestMultipleMatches(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	ext := contactPath + "Tandem_User_Id__c/u-1"
	a := c.do(http.MethodPatch, ext, map[string]any{"LastName": "Lovelace"})
	first := a.object(t)["id"].(string)
	dup, err := fake.DuplicateExternalID("U-1")
	require.NoError(t, err)
	require.Equal(t, "Lovelace", dup.LastName)
	require.Len(t, fake.ContactsByExternalID("u-1"), 2, "external ids match case-insensitively")

	for _, m := range []string{http.MethodPatch, http.MethodGet, http.MethodDelete} {
		a = c.do(m, ext, map[string]any{"LastName": "X"})
		require.Equal(t, http.StatusMultipleChoices, a.status, m)
		var urls []string
		require.NoError(t, json.Unmarshal(a.body, &urls))
		require.Equal(t, []string{contactPath + first, contactPath + dup.ID}, urls)
	}
	require.Equal(t, 3, fake.Stats().MultipleMatches)
	got, _ := fake.Contact(first)
	require.Equal(t, "Lovelace", got.LastName, "nothing changed")
}

func TestLimitInfoAndDailyLimit(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{APILimit: 3})
	for i := 1; i <= 3; i++ {
		a := c.do(http.MethodGet, contactPath+"003000000000000AAA", nil)
		require.Equal(t, "api-usage="+string(rune('0'+i))+"/3", a.header.Get("Sforce-Limit-Info"))
	}
	a := c.do(http.MethodGet, contactPath+"003000000000000AAA", nil)
	require.Equal(t, http.StatusForbidden, a.status)
	require.Equal(t, "REQUEST_LIMIT_EXCEEDED", a.errors(t)[0].ErrorCode)
	require.Equal(t, "api-usage=4/3", a.header.Get("Sforce-Limit-Info"))
	fake.SetAPIUsage(0)
	require.Equal(t, http.StatusNotFound, c.do(http.MethodGet, contactPath+"003000000000000AAA", nil).status)
	require.Equal(t, 1, fake.APIUsage())
	require.Equal(t, 1, fake.Stats().RequestLimits)
}

func TestFaults(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	ext := contactPath + "Tandem_User_Id__c/u-1"
	for _, tc := range []struct {
		f      salesforcefake.Faults
		status int
		code   string
		fault  salesforcefake.Fault
	}{
		{salesforcefake.Faults{RequestLimitRatio: 1}, 403, "REQUEST_LIMIT_EXCEEDED", salesforcefake.FaultRequestLimit},
		{salesforcefake.Faults{ServerErrorRatio: 1}, 500, "UNKNOWN_EXCEPTION", salesforcefake.FaultServerError},
		{salesforcefake.Faults{UnavailableRatio: 1}, 503, "SERVER_UNAVAILABLE", salesforcefake.FaultUnavailable},
	} {
		fake.SetFaults(tc.f)
		a := c.do(http.MethodPatch, ext, map[string]any{"LastName": "L"})
		require.Equal(t, tc.status, a.status)
		require.Equal(t, tc.code, a.errors(t)[0].ErrorCode)
		reqs := fake.Requests()
		require.Equal(t, tc.fault, reqs[len(reqs)-1].Fault)
		require.NotEmpty(t, a.header.Get("Sforce-Limit-Info"))
	}
	require.Empty(t, fake.Contacts(), "injected faults change nothing")
	require.Equal(t, 3, fake.Stats().InjectedFaults)

	// Latency: the request runs even though the client gave up.
	fake.SetFaults(salesforcefake.Faults{Latency: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, c.base+ext, strings.NewReader(`{"LastName":"Late"}`))
	req.Header.Set("Authorization", "Bearer "+c.token)
	_, err := http.DefaultClient.Do(req)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	fake.SetFaults(salesforcefake.Faults{})
	require.Eventually(t, func() bool { return len(fake.ContactsByExternalID("u-1")) == 1 }, 5*time.Second, 5*time.Millisecond)
}

func TestUIEdits(t *testing.T) {
	t.Parallel()
	fake, _ := start(t, salesforcefake.Options{})
	c, err := fake.UICreate(salesforcefake.Contact{FirstName: "Ada", LastName: "Lovelace", TandemUserID: "u-1"})
	require.NoError(t, err)
	require.Equal(t, fake.UIUserID(), c.LastModifiedByID)
	require.Equal(t, fake.UIUserID(), c.CreatedByID)

	upd, err := fake.UIUpdate(c.ID, func(ct *salesforcefake.Contact) {
		ct.Email = "ada@example.com"
		ct.ID = "ignored"
		ct.LastModifiedByID = "ignored"
	})
	require.NoError(t, err)
	require.Equal(t, c.ID, upd.ID)
	require.Equal(t, fake.UIUserID(), upd.LastModifiedByID)
	require.Equal(t, "ada@example.com", upd.Email)

	_, err = fake.UIUpdate(c.ID, func(ct *salesforcefake.Contact) { ct.Email = "bad" })
	require.ErrorContains(t, err, "INVALID_EMAIL_ADDRESS")
	_, err = fake.UIUpdate(c.ID, func(ct *salesforcefake.Contact) { ct.Custom = map[string]string{"Nope__c": "x"} })
	require.ErrorContains(t, err, "INVALID_FIELD")
	_, err = fake.UICreate(salesforcefake.Contact{FirstName: "Ada"})
	require.ErrorContains(t, err, "REQUIRED_FIELD_MISSING")

	require.NoError(t, fake.UIDelete(c.ID))
	require.ErrorIs(t, fake.UIDelete(c.ID), salesforcefake.ErrNotFound)
	_, err = fake.UIUpdate(c.ID, func(*salesforcefake.Contact) {})
	require.ErrorIs(t, err, salesforcefake.ErrNotFound)
	got, _ := fake.Contact(c.ID)
	require.True(t, got.IsDeleted)
	require.Empty(t, fake.Requests(), "UI edits bypass the API")
}

// receiver records the Outbound Messages it gets and answers with answer.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	messages []salesforce.OutboundMessage
	requests []*http.Request
	answer   func(n int) (int, []byte) // n: messages received before
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{answer: func(int) (int, []byte) { return http.StatusOK, salesforce.AckResponse() }}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		msg, err := salesforce.ParseOutboundMessage(body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			t.Errorf("unparsable outbound message: %v\n%s", err, body)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		status, b := r.answer(len(r.messages))
		r.messages = append(r.messages, msg)
		r.requests = append(r.requests, req)
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() ([]salesforce.OutboundMessage, []*http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]salesforce.OutboundMessage(nil), r.messages...), append([]*http.Request(nil), r.requests...)
}

func wait(t *testing.T, fake *salesforcefake.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, fake.WaitDelivered(ctx))
}

func TestOutboundMessages(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	fake, c := start(t, salesforcefake.Options{OutboundURL: rcv.srv.URL + "/sf?x=1", OutboundToken: "tok en", RetryBackoff: time.Millisecond})
	a := c.do(http.MethodPatch, contactPath+"Tandem_User_Id__c/u-1", map[string]any{"LastName": "Lovelace", "Email": "ada@example.com"})
	id := a.object(t)["id"].(string)
	wait(t, fake)

	msgs, reqs := rcv.got()
	require.Len(t, msgs, 1)
	require.Equal(t, "tok en", reqs[0].URL.Query().Get("token"))
	require.Equal(t, "1", reqs[0].URL.Query().Get("x"))
	require.Equal(t, "text/xml; charset=utf-8", reqs[0].Header.Get("Content-Type"))
	require.Equal(t, `""`, reqs[0].Header.Get("SOAPAction"))
	m := msgs[0]
	require.Equal(t, fake.OrgID(), m.OrganizationID)
	require.Equal(t, salesforcefake.DefaultActionID, m.ActionID)
	require.True(t, strings.HasPrefix(m.EnterpriseURL, fake.URL()+"/services/Soap/c/"))
	n := m.Notifications[0]
	require.True(t, strings.HasPrefix(n.ID, "04l"))
	require.Equal(t, id, n.ContactID)
	require.Equal(t, "u-1", n.TandemUserID)
	require.Equal(t, "Lovelace", n.LastName)
	require.Equal(t, "ada@example.com", n.Email)
	require.Equal(t, fake.IntegrationUserID(), n.LastModifiedByID)
	stored, _ := fake.Contact(id)
	require.Equal(t, stored.LastModifiedDate, n.LastModifiedDate)
	require.Zero(t, n.LastModifiedDate.Nanosecond(), "whole seconds, like Salesforce")
	require.NotContains(t, n.Fields, "Phone", "null fields are left out")

	// Queued notifications carry the latest data when sent, and batch.
	fake.PauseDelivery()
	fake.SetBatchSize(10)
	_, err := fake.UIUpdate(id, func(ct *salesforcefake.Contact) { ct.LastName = "King" })
	require.NoError(t, err)
	_, err = fake.UIUpdate(id, func(ct *salesforcefake.Contact) { ct.LastName = "Byron" })
	require.NoError(t, err)
	fake.ResumeDelivery()
	wait(t, fake)
	msgs, _ = rcv.got()
	require.Len(t, msgs, 2)
	require.Len(t, msgs[1].Notifications, 2)
	for _, n := range msgs[1].Notifications {
		require.Equal(t, "Byron", n.LastName)
		require.Equal(t, fake.UIUserID(), n.LastModifiedByID)
	}
	require.NotEqual(t, msgs[1].Notifications[0].ID, msgs[1].Notifications[1].ID)

	// Deletes send nothing (workflow rules do not fire on delete).
	require.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, contactPath+id, nil).status)
	wait(t, fake)
	msgs, _ = rcv.got()
	require.Len(t, msgs, 2)
	st := fake.DeliveryStats()
	require.Equal(t, salesforcefake.DeliveryStats{Queued: 3, Messages: 2, Acked: 3}, st)
}

func TestOutboundMessagesNeedAnAck(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	rcv.answer = func(n int) (int, []byte) {
		switch n {
		case 0:
			return http.StatusOK, nil // 200 without an Ack is no acknowledgement
		case 1:
			return http.StatusOK, []byte(strings.Replace(string(salesforce.AckResponse()), "true", "false", 1))
		case 2:
			return http.StatusInternalServerError, salesforce.FaultResponse("later")
		}
		return http.StatusOK, salesforce.AckResponse()
	}
	fake, _ := start(t, salesforcefake.Options{OutboundURL: rcv.srv.URL, RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond})
	_, err := fake.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	wait(t, fake)
	msgs, _ := rcv.got()
	require.Len(t, msgs, 4)
	for _, m := range msgs {
		require.Equal(t, msgs[0].Notifications[0].ID, m.Notifications[0].ID, "the same notification id on every retry")
	}
	var attempts []int
	for _, d := range fake.Deliveries() {
		attempts = append(attempts, d.Attempt)
	}
	require.Equal(t, []int{1, 2, 3, 4}, attempts)
	require.Equal(t, 3, fake.DeliveryStats().FailedAttempts)
}

func TestOutboundMessagesAbandonDropAndDeletes(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	rcv.answer = func(int) (int, []byte) { return http.StatusServiceUnavailable, nil }
	fake, _ := start(t, salesforcefake.Options{OutboundURL: rcv.srv.URL, DeliveryAttempts: 2, RetryBackoff: time.Millisecond, NotifyDeletes: true})
	c, err := fake.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	wait(t, fake)
	require.Equal(t, 1, fake.DeliveryStats().Abandoned)

	rcv.mu.Lock()
	rcv.answer = func(int) (int, []byte) { return http.StatusOK, salesforce.AckResponse() }
	rcv.mu.Unlock()
	require.NoError(t, fake.UIDelete(c.ID))
	wait(t, fake)
	msgs, _ := rcv.got()
	last := msgs[len(msgs)-1].Notifications[0]
	require.True(t, last.IsDeleted, "NotifyDeletes")

	// Without NotifyDeletes, a queued update of a contact deleted before
	// it was sent is dropped.
	quiet, _ := start(t, salesforcefake.Options{OutboundURL: rcv.srv.URL})
	quiet.PauseDelivery()
	c, err = quiet.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	require.NoError(t, quiet.UIDelete(c.ID))
	quiet.ResumeDelivery()
	wait(t, quiet)
	require.Equal(t, salesforcefake.DeliveryStats{Queued: 1, Dropped: 1}, quiet.DeliveryStats())
}

func TestWaitDeliveredHonoursTheContext(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	fake, _ := start(t, salesforcefake.Options{OutboundURL: rcv.srv.URL})
	fake.PauseDelivery()
	_, err := fake.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = fake.WaitDelivered(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "1 outbound notifications still pending")
}

func TestNoListenerQueuesNothing(t *testing.T) {
	t.Parallel()
	fake, _ := start(t, salesforcefake.Options{})
	_, err := fake.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	wait(t, fake)
	require.Zero(t, fake.DeliveryStats().Queued)
}

func TestListenAndClose(t *testing.T) {
	t.Parallel()
	fake := salesforcefake.New(salesforcefake.Options{})
	require.Empty(t, fake.URL())
	_, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	_, err = fake.Listen("127.0.0.1:0")
	require.Error(t, err)
	fake.Close()
	fake.Close()
	_, err = fake.Listen("127.0.0.1:0")
	require.ErrorContains(t, err, "closed")
}

// TestCloseDuringADelivery closes the fake while a message is on its way to a
// listener that never answers: Close returns (it once spun for ever picking
// the abandoned batch again).
func TestCloseDuringADelivery(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case arrived <- struct{}{}:
		default:
		}
		select { // no answer until the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer listener.Close()
	defer close(release)
	fake := salesforcefake.New(salesforcefake.Options{OutboundURL: listener.URL, RetryBackoff: time.Millisecond})
	_, err := fake.UICreate(salesforcefake.Contact{LastName: "Pending", Email: "pending@example.com"})
	require.NoError(t, err)
	<-arrived
	closed := make(chan struct{})
	go func() {
		fake.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while a delivery was in flight")
	}
}

// TestFailedDeliveryDoesNotRecordTheToken: a delivery that fails in
// net/http (nobody listens) is recorded and logged without the ?token=
// secret of the Outbound Message URL.
func TestFailedDeliveryDoesNotRecordTheToken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String() + "/webhook/salesforce"
	ln.Close()
	fake, _ := start(t, salesforcefake.Options{OutboundURL: dead, OutboundToken: "sf-secret-token-123",
		DeliveryAttempts: 1, RetryBackoff: time.Millisecond})
	_, err = fake.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	wait(t, fake)
	ds := fake.Deliveries()
	require.NotEmpty(t, ds)
	for _, d := range ds {
		require.NotEmpty(t, d.Err)
		require.NotContains(t, d.Err, "sf-secret-token-123")
	}
}
