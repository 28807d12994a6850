package salesforce_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

// message builds an Outbound Message with n contact notifications shaped
// like Salesforce's.
func message(n int) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D5g00000TndmQEAR</OrganizationId>
   <ActionId>04k5g00000TndmAAAR</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/60.0/00D5g00000TndmQ</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/60.0/00D5g00000TndmQ</PartnerUrl>
`)
	for i := range n {
		fmt.Fprintf(&b, `   <Notification>
    <Id>04l5g0000%09d</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0035g0000%09d</sf:Id>
     <sf:Email>ada%d@example.com</sf:Email>
     <sf:FirstName>Ada</sf:FirstName>
     <sf:IsDeleted>false</sf:IsDeleted>
     <sf:LastModifiedById>0055g00000TndmUAAR</sf:LastModifiedById>
     <sf:LastModifiedDate>2024-03-01T12:00:%02d.000Z</sf:LastModifiedDate>
     <sf:LastName>King &amp; Lovelace</sf:LastName>
     <sf:Phone xsi:nil="true"/>
     <sf:Tandem_User_Id__c>0190a5d2-7c3e-7b1a-9f00-%012d</sf:Tandem_User_Id__c>
    </sObject>
   </Notification>
`, i, i, i, i%60, i)
	}
	b.WriteString("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n")
	return []byte(b.String())
}

func TestParseOutboundMessage(t *testing.T) {
	t.Parallel()
	msg, err := salesforce.ParseOutboundMessage(message(1))
	require.NoError(t, err)
	require.Equal(t, "00D5g00000TndmQEAR", msg.OrganizationID)
	require.Equal(t, "04k5g00000TndmAAAR", msg.ActionID)
	require.Equal(t, "https://acme.my.salesforce.com/services/Soap/c/60.0/00D5g00000TndmQ", msg.EnterpriseURL)
	require.Equal(t, "https://acme.my.salesforce.com/services/Soap/u/60.0/00D5g00000TndmQ", msg.PartnerURL)
	require.Len(t, msg.Notifications, 1)
	n := msg.Notifications[0]
	require.Equal(t, "04l5g0000000000000", n.ID)
	require.Equal(t, "0035g0000000000000", n.ContactID)
	require.Equal(t, "0190a5d2-7c3e-7b1a-9f00-000000000000", n.TandemUserID)
	require.Equal(t, "ada0@example.com", n.Email)
	require.Equal(t, "Ada", n.FirstName)
	require.Equal(t, "King & Lovelace", n.LastName)
	require.Empty(t, n.Phone, "xsi:nil")
	require.Equal(t, time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC), n.LastModifiedDate)
	require.Equal(t, "0055g00000TndmUAAR", n.LastModifiedByID)
	require.False(t, n.IsDeleted)
	require.Equal(t, "ada0@example.com", n.Fields["Email"])
	require.Contains(t, n.Fields, "Phone")

	c, err := salesforce.CustomerFrom(n, "")
	require.NoError(t, err)
	require.Equal(t, integrations.Customer{
		UserID: "0190a5d2-7c3e-7b1a-9f00-000000000000", Email: "ada0@example.com", Name: "Ada King & Lovelace",
	}, c)
}

func TestParseOutboundMessageBatch(t *testing.T) {
	t.Parallel()
	msg, err := salesforce.ParseOutboundMessage(message(salesforce.MaxNotifications))
	require.NoError(t, err)
	require.Len(t, msg.Notifications, 100)
	for i, n := range msg.Notifications {
		require.Equal(t, fmt.Sprintf("04l5g0000%09d", i), n.ID, "message order")
	}

	_, err = salesforce.ParseOutboundMessage(message(salesforce.MaxNotifications + 1))
	require.ErrorIs(t, err, salesforce.ErrTooManyNotifications)
	require.ErrorIs(t, err, salesforce.ErrInvalidMessage)
}

func TestParseOutboundMessageRefuses(t *testing.T) {
	t.Parallel()
	valid := string(message(1))
	replace := func(old, new string) string {
		require.Contains(t, valid, old)
		return strings.Replace(valid, old, new, 1)
	}
	cases := map[string]struct {
		body string
		want string
	}{
		"empty":     {"", "empty body"},
		"blank":     {" \n\t", "empty body"},
		"not XML":   {"{\"hello\":1}", "text outside the root element"},
		"comment":   {"<!-- nothing -->", "no root element"},
		"malformed": {valid[:len(valid)/2], "unexpected EOF"},
		"unclosed":  {replace("</sf:Email>", "</sf:Emil>"), "element <Email> closed by </Emil>"},
		"doctype": {`<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` +
			strings.TrimPrefix(valid, `<?xml version="1.0" encoding="UTF-8"?>`), "document type declarations"},
		"entity reference": {replace("<sf:FirstName>Ada", "<sf:FirstName>&xxe;"), "invalid character entity &xxe;"},
		"two roots":        {valid + "<extra/>", "more than one root element"},
		"trailing text":    {valid + "garbage", "text outside the root element"},
		"not SOAP":         {`<notifications xmlns="http://soap.sforce.com/2005/09/outbound"/>`, "expected element type <Envelope>"},
		"fault": {`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault>` +
			`<faultcode>soapenv:Client</faultcode><faultstring>nope</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>`, "SOAP fault (soapenv:Client: nope)"},
		"wrong namespace":    {replace(`<notifications xmlns="http://soap.sforce.com/2005/09/outbound">`, `<notifications xmlns="urn:other">`), "no <notifications> element"},
		"no org":             {replace("<OrganizationId>00D5g00000TndmQEAR</OrganizationId>", ""), "no OrganizationId"},
		"no notification":    {string(message(0)), "no Notification"},
		"no notification id": {replace("<Id>04l5g0000000000000</Id>", ""), "notification 1: no Id"},
		"no sObject id":      {replace("<sf:Id>0035g0000000000000</sf:Id>", ""), "sObject without Id"},
		"not a contact":      {replace(`xsi:type="sf:Contact"`, `xsi:type="sf:Account"`), `sObject of type "sf:Account", not a Contact`},
		"bad date":           {replace("2024-03-01T12:00:00.000Z", "yesterday"), `LastModifiedDate "yesterday"`},
		"bad IsDeleted":      {replace("<sf:IsDeleted>false", "<sf:IsDeleted>maybe"), `IsDeleted "maybe"`},
		"other encoding":     {strings.Replace(valid, `encoding="UTF-8"`, `encoding="ISO-8859-1"`, 1), "ISO-8859-1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := salesforce.ParseOutboundMessage([]byte(tc.body))
			require.ErrorIs(t, err, salesforce.ErrInvalidMessage)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := salesforce.ParseOutboundMessage([]byte(cases["doctype"].body))
	require.ErrorIs(t, err, salesforce.ErrDTD)

	huge := bytes.Repeat([]byte(" "), salesforce.MaxMessageBytes+1)
	huge[0] = '<'
	_, err = salesforce.ParseOutboundMessage(huge)
	require.ErrorContains(t, err, "more than")
}

func TestParseOutboundMessageDeletedAndMetadata(t *testing.T) {
	t.Parallel()
	body := strings.Replace(string(message(1)), "<sf:IsDeleted>false</sf:IsDeleted>",
		`<sf:IsDeleted>true</sf:IsDeleted><sf:Tandem_Metadata__c>{"plan":"pro","team":"core"}</sf:Tandem_Metadata__c>`, 1)
	msg, err := salesforce.ParseOutboundMessage([]byte(body))
	require.NoError(t, err)
	n := msg.Notifications[0]
	require.True(t, n.IsDeleted)
	c, err := salesforce.CustomerFrom(n, "Tandem_Metadata__c")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"plan": "pro", "team": "core"}, c.Metadata)

	n.Fields["Tandem_Metadata__c"] = "not json"
	_, err = salesforce.CustomerFrom(n, "Tandem_Metadata__c")
	require.ErrorContains(t, err, "not a JSON object of strings")
	n.Fields["Tandem_Metadata__c"] = ""
	c, err = salesforce.CustomerFrom(n, "Tandem_Metadata__c")
	require.NoError(t, err)
	require.Nil(t, c.Metadata)
}

func TestAckAndFaultResponses(t *testing.T) {
	t.Parallel()
	var ack struct {
		XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
		Body    struct {
			Response struct {
				Ack string `xml:"http://soap.sforce.com/2005/09/outbound Ack"`
			} `xml:"http://soap.sforce.com/2005/09/outbound notificationsResponse"`
		} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
	}
	require.NoError(t, xml.Unmarshal(salesforce.AckResponse(), &ack))
	require.Equal(t, "true", ack.Body.Response.Ack)
	a := salesforce.AckResponse()
	a[0] = 'X'
	require.Equal(t, byte('<'), salesforce.AckResponse()[0], "each call returns a new slice")

	var fault struct {
		Code   string `xml:"Body>Fault>faultcode"`
		String string `xml:"Body>Fault>faultstring"`
	}
	require.NoError(t, xml.Unmarshal(salesforce.FaultResponse("db <down> & "+strings.Repeat("x", 300)), &fault))
	require.Equal(t, "soapenv:Server", fault.Code)
	require.True(t, strings.HasPrefix(fault.String, "db <down> & xxx"))
	require.LessOrEqual(t, len(fault.String), 203)
}

// listener is an Outbound Message endpoint that works like the webhook
// should: check the token, parse, de-duplicate by notification id,
// acknowledge.
type listener struct {
	srv *httptest.Server
	cfg salesforce.InboundConfig

	mu       sync.Mutex
	applied  []salesforce.Notification // first delivery of each notification id
	seen     map[string]int            // deliveries per notification id
	messages []int                     // notifications per accepted message
	failNext int                       // answer that many messages with a fault
	refused  int                       // requests refused (token, org, parse)
}

func newListener(t *testing.T, cfg salesforce.InboundConfig) *listener {
	t.Helper()
	l := &listener{cfg: cfg, seen: map[string]int{}}
	l.srv = httptest.NewServer(http.HandlerFunc(l.serve))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *listener) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, salesforce.MaxMessageBytes))
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil || !l.cfg.CheckToken(r.URL.Query().Get("token")) {
		l.refused++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	msg, err := salesforce.ParseOutboundMessage(body)
	if err != nil || !l.cfg.FromOrg(msg) {
		l.refused++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", salesforce.AckContentType)
	if l.failNext > 0 {
		l.failNext--
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(salesforce.FaultResponse("database unavailable"))
		return
	}
	for _, n := range msg.Notifications {
		if l.seen[n.ID]++; l.seen[n.ID] == 1 {
			l.applied = append(l.applied, n)
		}
	}
	l.messages = append(l.messages, len(msg.Notifications))
	_, _ = w.Write(salesforce.AckResponse())
}

func (l *listener) snapshot() ([]salesforce.Notification, map[string]int, []int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]int{}
	for k, v := range l.seen {
		seen[k] = v
	}
	return append([]salesforce.Notification(nil), l.applied...), seen, append([]int(nil), l.messages...), l.refused
}

const listenerSecret = "s3cret-token-0123456789"

func inboundConfig(fake *salesforcefake.Server) salesforce.InboundConfig {
	return salesforce.InboundConfig{
		WebhookSecret: listenerSecret, OrgID: fake.OrgID(), IntegrationUserID: fake.IntegrationUserID(),
		MetadataField: metadataField,
	}
}

func waitDelivered(t *testing.T, fake *salesforcefake.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, fake.WaitDelivered(ctx))
}

// TestOutboundMessagesEndToEnd pushes through the adapter, edits in the
// "UI", and checks what a listener built on ParseOutboundMessage sees: echoes
// of Tandem's writes are recognisable, UI edits map back to the customer.
func TestOutboundMessagesEndToEnd(t *testing.T) {
	t.Parallel()
	fake := salesforcefake.New(salesforcefake.Options{OutboundToken: listenerSecret, RetryBackoff: time.Millisecond})
	t.Cleanup(fake.Close)
	_, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	in := inboundConfig(fake)
	l := newListener(t, in)
	fake.SetOutboundEndpoint(l.srv.URL, listenerSecret)

	cfg := fakeConfig(fake)
	cfg.MetadataField = metadataField
	a, ctx := newAdapter(t, cfg, nil), context.Background()
	c := testCustomer()
	c.Metadata = map[string]string{"plan": "pro"}
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	waitDelivered(t, fake)

	applied, _, _, refused := l.snapshot()
	require.Zero(t, refused)
	require.Len(t, applied, 1)
	echo := applied[0]
	require.True(t, in.IsEcho(echo), "a write through the API carries the integration user")
	require.Equal(t, res.RemoteID, echo.ContactID)
	mapped, err := salesforce.CustomerFrom(echo, in.MetadataField)
	require.NoError(t, err)
	require.Equal(t, c.Hash(), mapped.Hash(), "the echo maps back to the pushed state")

	_, err = fake.UIUpdate(res.RemoteID, func(ct *salesforcefake.Contact) {
		ct.FirstName, ct.LastName, ct.Phone = "Augusta", "Ada King", "+44 1"
	})
	require.NoError(t, err)
	waitDelivered(t, fake)
	applied, _, _, _ = l.snapshot()
	require.Len(t, applied, 2)
	edit := applied[1]
	require.False(t, in.IsEcho(edit), "a person's edit is not an echo")
	require.Equal(t, salesforcefake.DefaultUIUserID, edit.LastModifiedByID)
	require.False(t, edit.LastModifiedDate.Before(echo.LastModifiedDate))
	mapped, err = salesforce.CustomerFrom(edit, in.MetadataField)
	require.NoError(t, err)
	require.Equal(t, integrations.Customer{
		UserID: c.UserID, Email: c.Email, Name: "Augusta Ada King", Phone: "+44 1",
		Metadata: map[string]string{"plan": "pro"},
	}, mapped)
}

func TestOutboundMessagesBatchedDuplicatedAndRetried(t *testing.T) {
	t.Parallel()
	fake := salesforcefake.New(salesforcefake.Options{
		OutboundToken: listenerSecret, BatchSize: 100, DuplicateDeliveries: 1, RetryBackoff: time.Millisecond,
	})
	t.Cleanup(fake.Close)
	_, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	l := newListener(t, inboundConfig(fake))
	l.failNext = 1
	fake.PauseDelivery()
	fake.SetOutboundEndpoint(l.srv.URL, listenerSecret)
	for i := range 150 {
		_, err := fake.UICreate(salesforcefake.Contact{LastName: fmt.Sprintf("Person%d", i), Email: fmt.Sprintf("p%d@example.com", i)})
		require.NoError(t, err)
	}
	fake.ResumeDelivery()
	waitDelivered(t, fake)

	applied, seen, messages, refused := l.snapshot()
	require.Zero(t, refused)
	require.Len(t, applied, 150, "each notification applied once")
	for id, n := range seen {
		require.Equal(t, 2, n, "notification %s: the original and its duplicate", id)
	}
	slices.Sort(messages) // the failed 100 wait out a backoff while the 50 go
	require.Equal(t, []int{50, 50, 100, 100}, messages, "100 failed once, then acked; each message duplicated")
	st := fake.DeliveryStats()
	require.Equal(t, 150, st.Acked)
	require.Equal(t, 1, st.FailedAttempts)
	require.Zero(t, st.Pending)
}

func TestOutboundMessageWithoutTheTokenIsNotAcknowledged(t *testing.T) {
	t.Parallel()
	fake := salesforcefake.New(salesforcefake.Options{DeliveryAttempts: 2, RetryBackoff: time.Millisecond})
	t.Cleanup(fake.Close)
	l := newListener(t, salesforce.InboundConfig{WebhookSecret: listenerSecret, OrgID: fake.OrgID()})
	fake.SetOutboundEndpoint(l.srv.URL, "wrong-token")
	_, err := fake.UICreate(salesforcefake.Contact{LastName: "Lovelace"})
	require.NoError(t, err)
	waitDelivered(t, fake)
	applied, _, _, refused := l.snapshot()
	require.Empty(t, applied)
	require.Equal(t, 2, refused)
	require.Equal(t, 1, fake.DeliveryStats().Abandoned)
}

// FuzzParseOutboundMessage checks that no input panics the parser and that
// whatever it accepts meets its documented guarantees.
func FuzzParseOutboundMessage(f *testing.F) {
	f.Add(message(1))
	f.Add(message(3))
	f.Add(salesforce.AckResponse())
	f.Add(salesforce.FaultResponse("x"))
	f.Add([]byte(`<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>`))
	f.Add([]byte(`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body/></soapenv:Envelope>`))
	f.Add([]byte(strings.Replace(string(message(1)), "<sf:Phone xsi:nil=\"true\"/>", "<sf:Phone><![CDATA[<+44>]]></sf:Phone>", 1)))
	f.Add([]byte(""))
	f.Add([]byte("<"))
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := salesforce.ParseOutboundMessage(body)
		if err != nil {
			require.ErrorIs(t, err, salesforce.ErrInvalidMessage)
			return
		}
		require.NotEmpty(t, msg.OrganizationID)
		require.NotEmpty(t, msg.Notifications)
		require.LessOrEqual(t, len(msg.Notifications), salesforce.MaxNotifications)
		for _, n := range msg.Notifications {
			require.NotEmpty(t, n.ID)
			require.NotEmpty(t, n.ContactID)
			_, _ = salesforce.CustomerFrom(n, "Tandem_Metadata__c")
		}
	})
}
