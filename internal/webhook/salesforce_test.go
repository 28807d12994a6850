package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

const sfToken = "sf-webhook-token-0123456789"

// sfEnv is one webhook process serving /webhook/salesforce over its own
// database, fed by a Salesforce fake that delivers Outbound Messages to it.
type sfEnv struct {
	db
	fake    *salesforcefake.Server
	adapter *salesforce.Adapter
	reg     *prometheus.Registry
	url     string // the Salesforce route, without the token
	client  *http.Client
	skew    *atomic.Int64 // added to the fake's clock (nanoseconds)
}

func newSFEnv(t *testing.T, mutate ...func(*salesforce.Config)) *sfEnv {
	t.Helper()
	st, dsn := testutil.NewStore(t)
	skew := new(atomic.Int64)
	fake := salesforcefake.New(salesforcefake.Options{RetryBackoff: time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond,
		Clock: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	_, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	cfg := salesforce.Config{
		InstanceURL: fake.URL(), TokenURL: fake.TokenURL(),
		ClientID: salesforcefake.DefaultClientID, ClientSecret: salesforcefake.DefaultClientSecret,
		Inbound: salesforce.InboundConfig{WebhookSecret: sfToken, OrgID: fake.OrgID(), IntegrationUserID: fake.IntegrationUserID()},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	adapter, err := salesforce.New(cfg, salesforce.Options{})
	require.NoError(t, err)
	receivers, _, err := tandemwebhook.Receivers(adapter)
	require.NoError(t, err)
	reg := ops.NewRegistry()
	app := tandemwebhook.New(receivers, st, slog.New(slog.NewJSONHandler(io.Discard, nil)), reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	t.Cleanup(fake.Close) // runs first: no delivery outlives the app
	url := "http://" + ln.Addr().String() + "/webhook/salesforce"
	fake.SetOutboundEndpoint(url, sfToken)
	return &sfEnv{db: db{t: t, st: st, dsn: dsn}, fake: fake, adapter: adapter, reg: reg, url: url,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}, skew: skew}
}

// wait blocks until the fake has delivered every notification, each
// acknowledged at the first attempt.
func (e *sfEnv) wait() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(e.t, e.fake.WaitDelivered(ctx))
	require.Zero(e.t, e.fake.DeliveryStats().FailedAttempts, "every message is acknowledged at once")
}

// post sends body to the Salesforce route with query (e.g. "?token=…").
func (e *sfEnv) post(body []byte, query string) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+query, bytes.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.Header.Set("SOAPAction", `""`)
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// push does what the Salesforce worker does for a user.
func (e *sfEnv) push(userID string) { e.db.push(e.adapter, userID) }

// writes counts the contact writes (anything but GET) the fake received.
func (e *sfEnv) writes() int {
	n := 0
	for _, r := range e.fake.Requests() {
		if strings.HasPrefix(r.Path, "/services/data/") && r.Method != http.MethodGet {
			n++
		}
	}
	return n
}

func (e *sfEnv) outcomes() map[string]string {
	e.t.Helper()
	rows, err := e.st.InboundEvents(context.Background(), salesforce.Name, "", 1000)
	require.NoError(e.t, err)
	out := map[string]string{}
	for _, r := range rows {
		out[r.EventID] = r.Outcome
	}
	return out
}

// sfNote is one notification of an Outbound Message built by sfMessage.
type sfNote struct {
	ID, ContactID, UserID   string
	Email, First, Last, Tel string
	Modified                time.Time
	By                      string // LastModifiedById; default the UI user
	Deleted                 bool
}

var sfNoteSeq struct {
	sync.Mutex
	n int
}

// sfNoteID returns a new notification id.
func sfNoteID() string {
	sfNoteSeq.Lock()
	defer sfNoteSeq.Unlock()
	sfNoteSeq.n++
	return fmt.Sprintf("04l5g%013d", sfNoteSeq.n)
}

// sfMessage renders an Outbound Message from org like Salesforce's.
func sfMessage(org string, notes ...sfNote) []byte {
	var b bytes.Buffer
	elem := func(name, v string) {
		if v == "" {
			return
		}
		b.WriteString("<" + name + ">")
		_ = xml.EscapeText(&b, []byte(v))
		b.WriteString("</" + name + ">")
	}
	b.WriteString(xml.Header + `<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`)
	b.WriteString(`<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">`)
	elem("OrganizationId", org)
	elem("ActionId", salesforcefake.DefaultActionID)
	b.WriteString(`<SessionId xsi:nil="true"/>`)
	elem("EnterpriseUrl", "https://acme.my.salesforce.com/services/Soap/c/60.0/"+org[:15])
	elem("PartnerUrl", "https://acme.my.salesforce.com/services/Soap/u/60.0/"+org[:15])
	for _, n := range notes {
		if n.By == "" {
			n.By = salesforcefake.DefaultUIUserID
		}
		b.WriteString("<Notification>")
		elem("Id", n.ID)
		b.WriteString(`<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">`)
		elem("sf:Id", n.ContactID)
		elem("sf:Email", n.Email)
		elem("sf:FirstName", n.First)
		elem("sf:IsDeleted", fmt.Sprint(n.Deleted))
		elem("sf:LastModifiedById", n.By)
		elem("sf:LastModifiedDate", n.Modified.UTC().Format("2006-01-02T15:04:05.000Z"))
		elem("sf:LastName", n.Last)
		elem("sf:Phone", n.Tel)
		elem("sf:Tandem_User_Id__c", n.UserID)
		b.WriteString("</sObject></Notification>")
	}
	b.WriteString("</notifications></soapenv:Body></soapenv:Envelope>")
	return b.Bytes()
}

// isAck reports whether r is a SOAP acknowledgement.
func isAck(r reply) bool {
	var env struct {
		Ack string `xml:"Body>notificationsResponse>Ack"`
	}
	return r.Status == http.StatusOK && r.Header.Get("Content-Type") == salesforce.AckContentType &&
		xml.Unmarshal(r.Body, &env) == nil && env.Ack == "true"
}

func TestSalesforceUIChangesFlowIntoMySQL(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "ada@example.com", Name: "Ada Lovelace", Metadata: map[string]string{"plan": "pro"}}, nil)
	require.NoError(t, err)
	other, err := e.st.CreateUser(ctx, store.NewUser{Email: "grace@example.com", Name: "Grace Hopper"}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	require.Equal(t, map[string]string{}, nonOutcomes(e.outcomes(), "echo"), "the push comes back as an echo")
	require.EqualValues(t, 1, e.user(u.ID).Version)
	remote := *e.link(u.ID).RemoteID
	writes, outbox := e.writes(), e.count("SELECT COUNT(*) FROM outbox")

	// Edited in Salesforce: applied, the metadata Salesforce does not hold
	// is kept.
	_, err = e.fake.UIUpdate(remote, func(c *salesforcefake.Contact) { c.FirstName, c.LastName, c.Phone = "Augusta Ada", "King", "+44 1" })
	require.NoError(t, err)
	e.wait()
	got := e.user(u.ID)
	require.Equal(t, "Augusta Ada King", got.Name)
	require.Equal(t, "+44 1", got.Phone)
	require.Equal(t, map[string]string{"plan": "pro"}, got.Metadata, "contacts carry no metadata: the user keeps it")
	require.EqualValues(t, 2, got.Version)
	l := e.link(u.ID)
	require.Equal(t, store.LinkSynced, l.Status)
	require.EqualValues(t, 2, l.SyncedVersion, "Salesforce already holds version 2")
	require.Equal(t, []string{}, l.MetadataKeyList(), "the contact still carries no metadata keys")
	require.Equal(t, integrations.Customer{Email: got.Email, Name: got.Name, Phone: got.Phone, Metadata: got.Metadata}.Hash(), *l.PushedHash,
		"the state Salesforce holds, as the worker hashes it: its next push of version 2 is skipped")

	// Saved in Salesforce without a change to a synced field: nothing.
	_, err = e.fake.UIUpdate(remote, func(*salesforcefake.Contact) {})
	require.NoError(t, err)
	e.wait()
	require.EqualValues(t, 2, e.user(u.ID).Version)

	// Created in Salesforce (Outbound Messages cannot tell creates from
	// updates): a new user; with a local user's email: linked to them.
	c, err := e.fake.UICreate(salesforcefake.Contact{FirstName: "Alan", LastName: "Turing", Email: "alan@example.com"})
	require.NoError(t, err)
	e.wait()
	alan := e.userByEmail("alan@example.com")
	require.Equal(t, "Alan Turing", alan.Name)
	require.EqualValues(t, 1, alan.Version)
	require.Equal(t, c.ID, *e.link(alan.ID).RemoteID)
	before := e.user(other.ID)
	g, err := e.fake.UICreate(salesforcefake.Contact{FirstName: "Grace", LastName: "Brewster Hopper", Email: "GRACE@example.com"})
	require.NoError(t, err)
	e.wait()
	got = e.user(other.ID)
	require.Equal(t, before.Name, got.Name, "linking never copies the contact's fields")
	require.Equal(t, before.Version, got.Version)
	require.Equal(t, g.ID, *e.link(other.ID).RemoteID)

	require.Equal(t, writes, e.writes(), "inbound handling never writes to Salesforce (it may read)")
	require.Equal(t, outbox+1, e.count("SELECT COUNT(*) FROM outbox"),
		"inbound changes write no outbox row; only the link whose contact holds another state than the user asks for a push")
	require.Equal(t, map[string]string{}, nonOutcomes(e.outcomes(), "echo", "applied", "unchanged", "created", "linked"))
	// The UI edit, the save without a change (recorded as an echo: a state
	// Tandem pushed), the two creates; the echo of the push is recorded only
	// if it arrived while the push was in flight (issue 15).
	counts := map[string]int{}
	for _, o := range e.outcomes() {
		counts[o]++
	}
	require.Equal(t, 1, counts["applied"], "%v", counts)
	require.Equal(t, 1, counts["created"], "%v", counts)
	require.Equal(t, 1, counts["linked"], "%v", counts)
	require.Contains(t, []int{1, 2}, counts["echo"], "%v", counts)
}

func TestSalesforceMetadataFieldFlowsBothWays(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t, func(c *salesforce.Config) { c.MetadataField = salesforcefake.DefaultCustomField })
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "md@example.com", Name: "Meta Data", Metadata: map[string]string{"plan": "pro"}}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	remote := *e.link(u.ID).RemoteID
	_, err = e.fake.UIUpdate(remote, func(c *salesforcefake.Contact) {
		c.Custom[salesforcefake.DefaultCustomField] = `{"plan":"team","seats":"5"}`
	})
	require.NoError(t, err)
	e.wait()
	got := e.user(u.ID)
	require.Equal(t, map[string]string{"plan": "team", "seats": "5"}, got.Metadata)
	require.EqualValues(t, 2, got.Version)
	require.Equal(t, []string{"plan", "seats"}, e.link(u.ID).MetadataKeyList())

	// Junk typed into the field: the rest applies, the metadata stays.
	_, err = e.fake.UIUpdate(remote, func(c *salesforcefake.Contact) {
		c.Phone = "+1 555"
		c.Custom[salesforcefake.DefaultCustomField] = "plan=enterprise"
	})
	require.NoError(t, err)
	e.wait()
	got = e.user(u.ID)
	require.Equal(t, "+1 555", got.Phone)
	require.Equal(t, map[string]string{"plan": "team", "seats": "5"}, got.Metadata)
}

// users makes n users linked to contacts the fake holds (as pushed), with
// the fake's own echoes delivered.
func (e *sfEnv) users(n int) []store.User {
	e.t.Helper()
	out := make([]store.User, n)
	for i := range n {
		u, err := e.st.CreateUser(context.Background(), store.NewUser{Email: fmt.Sprintf("batch%d@example.com", i), Name: fmt.Sprintf("Batch %d", i)}, nil)
		require.NoError(e.t, err)
		e.push(u.ID)
		out[i] = u
	}
	e.wait()
	return out
}

func TestSalesforceBatchOf100AppliedOnceEvenWhenDeliveredTwice(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t)
	users := e.users(100)
	events := e.count("SELECT COUNT(*) FROM inbound_events")
	at := time.Now().Add(time.Minute)
	notes := make([]sfNote, len(users))
	for i, u := range users {
		notes[i] = sfNote{ID: sfNoteID(), ContactID: *e.link(u.ID).RemoteID, UserID: u.ID, Email: u.Email,
			First: "Renamed", Last: fmt.Sprint(i), Modified: at}
	}
	body := sfMessage(e.fake.OrgID(), notes...)

	// Delivered four times at once, then once more.
	var wg sync.WaitGroup
	replies := make(chan reply, 4)
	for range 4 {
		wg.Go(func() { replies <- e.post(body, "?token="+sfToken) })
	}
	wg.Wait()
	close(replies)
	for r := range replies {
		require.True(t, isAck(r), "%d %s", r.Status, r.Body)
	}
	require.True(t, isAck(e.post(body, "?token="+sfToken)))

	for i, u := range users {
		got := e.user(u.ID)
		require.Equal(t, fmt.Sprintf("Renamed %d", i), got.Name)
		require.EqualValues(t, 2, got.Version, "applied once")
	}
	require.EqualValues(t, events+100, e.count("SELECT COUNT(*) FROM inbound_events"))
	outcomes := e.outcomes()
	for _, n := range notes {
		require.Equal(t, "applied", outcomes[n.ID])
	}
	require.EqualValues(t, 400, counter(t, e.reg, "tandem_webhook_events_total", map[string]string{"provider": "salesforce", "outcome": "duplicate"}))

	// The fake's own batch of 100, sent twice (Salesforce may), applies
	// once too. Its clock moves past the changes above.
	e.skew.Store(int64(2 * time.Minute))
	e.fake.PauseDelivery()
	e.fake.SetBatchSize(100)
	e.fake.SetDuplicateDeliveries(1)
	for i, u := range users {
		_, err := e.fake.UIUpdate(*e.link(u.ID).RemoteID, func(c *salesforcefake.Contact) { c.FirstName = "Again" })
		require.NoError(t, err, "user %d", i)
	}
	e.fake.ResumeDelivery()
	e.wait()
	var sizes []int
	for _, d := range e.fake.Deliveries() {
		if len(d.NotificationIDs) == 100 {
			sizes = append(sizes, d.Copy)
			require.True(t, d.Acked)
		}
	}
	require.Equal(t, []int{0, 1}, sizes, "one message of 100 and its copy")
	for i, u := range users {
		got := e.user(u.ID)
		require.Equal(t, fmt.Sprintf("Again %d", i), got.Name)
		require.EqualValues(t, 3, got.Version)
	}
}

func TestSalesforceRefusalsStoreNothing(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t)
	u := e.users(1)[0]
	remote := *e.link(u.ID).RemoteID
	events := e.count("SELECT COUNT(*) FROM inbound_events")
	good := sfMessage(e.fake.OrgID(), sfNote{ID: sfNoteID(), ContactID: remote, UserID: u.ID, Email: u.Email,
		First: "Changed", Last: "Name", Modified: time.Now().Add(time.Minute)})
	for _, tc := range []struct {
		name   string
		body   []byte
		query  string
		status int
		slug   string
	}{
		{"no token", good, "", 401, "unauthenticated"},
		{"empty token", good, "?token=", 401, "unauthenticated"},
		{"wrong token", good, "?token=" + sfToken + "x", 401, "unauthenticated"},
		{"token in another parameter", good, "?secret=" + sfToken, 401, "unauthenticated"},
		{"wrong org", sfMessage("00D5g00000OtherQEAR", sfNote{ID: sfNoteID(), ContactID: remote, UserID: u.ID, Email: u.Email,
			Last: "Other", Modified: time.Now().Add(time.Minute)}), "?token=" + sfToken, 403, "forbidden"},
		{"malformed XML", good[:len(good)-40], "?token=" + sfToken, 400, "bad-payload"},
		{"entity", []byte(`<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>`), "?token=" + sfToken, 400, "bad-payload"},
		{"not SOAP", []byte(`{"hello":"world"}`), "?token=" + sfToken, 400, "bad-payload"},
	} {
		r := e.post(tc.body, tc.query)
		require.Equal(t, tc.status, r.Status, "%s: %s", tc.name, r.Body)
		require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"), tc.name)
		var p map[string]any
		require.NoError(t, json.Unmarshal(r.Body, &p), tc.name)
		require.Equal(t, "https://tandem-sync.dev/problems/"+tc.slug, p["type"], tc.name)
		require.NotContains(t, string(r.Body), sfToken, tc.name)
	}
	require.Equal(t, events, e.count("SELECT COUNT(*) FROM inbound_events"), "nothing stored")
	got := e.user(u.ID)
	require.Equal(t, u.Name, got.Name)
	require.EqualValues(t, 1, got.Version)
	require.EqualValues(t, 4, counter(t, e.reg, "tandem_webhook_rejected_total", map[string]string{"reason": "unauthenticated"}))
	require.EqualValues(t, 1, counter(t, e.reg, "tandem_webhook_rejected_total", map[string]string{"reason": "forbidden"}))
	require.EqualValues(t, 3, counter(t, e.reg, "tandem_webhook_rejected_total", map[string]string{"reason": "bad_payload"}))

	// The fake, pointed at the route with a wrong token, is never
	// acknowledged.
	e.fake.SetOutboundEndpoint(e.url, "wrong-token")
	_, err := e.fake.UIUpdate(remote, func(c *salesforcefake.Contact) { c.FirstName = "Sneaky" })
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.fake.DeliveryStats().FailedAttempts >= 2 }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, e.fake.DeliveryStats().Acked-1, "only the echo of the push was acknowledged")
	require.Equal(t, u.Name, e.user(u.ID).Name)

	// With the right token the same message applies.
	r := e.post(good, "?token="+sfToken)
	require.True(t, isAck(r), "%d %s", r.Status, r.Body)
	require.Equal(t, "Changed Name", e.user(u.ID).Name)
}

func TestSalesforceAckOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t)
	users := e.users(2)
	fine, boom := users[0], users[1]
	at := time.Now().Add(time.Minute)
	notes := []sfNote{
		{ID: sfNoteID(), ContactID: *e.link(fine.ID).RemoteID, UserID: fine.ID, Email: fine.Email, Last: "Fine", Modified: at},
		{ID: sfNoteID(), ContactID: *e.link(boom.ID).RemoteID, UserID: boom.ID, Email: boom.Email, Last: "Boom", Modified: at.Add(time.Second)},
	}
	body := sfMessage(e.fake.OrgID(), notes...)
	testutil.Exec(t, e.dsn, `CREATE TRIGGER boom BEFORE UPDATE ON users FOR EACH ROW
		IF NEW.name = 'Boom' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF`)

	r := e.post(body, "?token="+sfToken)
	require.Equal(t, http.StatusInternalServerError, r.Status, "%s", r.Body)
	require.Equal(t, salesforce.AckContentType, r.Header.Get("Content-Type"))
	require.False(t, isAck(r))
	var fault struct {
		Code string `xml:"Body>Fault>faultcode"`
	}
	require.NoError(t, xml.Unmarshal(r.Body, &fault), "%s", r.Body)
	require.Equal(t, "soapenv:Server", fault.Code)
	require.NotContains(t, string(r.Body), "boom", "no internal detail goes back to Salesforce")

	require.Equal(t, "Fine", e.user(fine.ID).Name, "the first notification committed on its own")
	got := e.user(boom.ID)
	require.Equal(t, boom.Name, got.Name)
	require.EqualValues(t, 1, got.Version, "nothing of the failed one")
	require.Zero(t, e.count("SELECT COUNT(*) FROM inbound_events WHERE event_id = ?", notes[1].ID), "not even its record")
	require.EqualValues(t, 1, counter(t, e.reg, "tandem_webhook_events_total", map[string]string{"outcome": "error"}))

	// Salesforce delivers the message again: the first is a duplicate.
	testutil.Exec(t, e.dsn, "DROP TRIGGER boom")
	r = e.post(body, "?token="+sfToken)
	require.True(t, isAck(r), "%d %s", r.Status, r.Body)
	require.Equal(t, "Boom", e.user(boom.ID).Name)
	require.EqualValues(t, 2, e.user(fine.ID).Version)
	require.EqualValues(t, 2, e.user(boom.ID).Version)
	outcomes := e.outcomes()
	require.Equal(t, "applied", outcomes[notes[0].ID])
	require.Equal(t, "applied", outcomes[notes[1].ID])
	require.EqualValues(t, 1, counter(t, e.reg, "tandem_webhook_events_total", map[string]string{"provider": "salesforce", "outcome": "duplicate"}))
}

func TestSalesforceEchoesAndOlderChangesAreIgnored(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t)
	u := e.users(1)[0]
	remote := *e.link(u.ID).RemoteID
	at := time.Now().Add(time.Minute)
	note := func(last string, modified time.Time, by string) sfNote {
		return sfNote{ID: sfNoteID(), ContactID: remote, UserID: u.ID, Email: u.Email, First: "Ada", Last: last, Modified: modified, By: by}
	}
	post := func(n sfNote) {
		t.Helper()
		r := e.post(sfMessage(e.fake.OrgID(), n), "?token="+sfToken)
		require.True(t, isAck(r), "%d %s", r.Status, r.Body)
	}

	// Changed by the integration user (15-character id): Tandem's own
	// write, whatever it carries.
	echo := note("Echo", at, e.fake.IntegrationUserID()[:15])
	post(echo)
	newer := note("Newer", at.Add(30*time.Second), "")
	post(newer)
	older := note("Older", at.Add(10*time.Second), "")
	post(older)
	got := e.user(u.ID)
	require.Equal(t, "Ada Newer", got.Name)
	require.EqualValues(t, 2, got.Version)
	outcomes := e.outcomes()
	require.Equal(t, "echo", outcomes[echo.ID])
	require.Equal(t, "applied", outcomes[newer.ID])
	require.Equal(t, "stale", outcomes[older.ID])

	// One message, newest first: applied in LastModifiedDate order, so
	// neither is stale and the newest wins.
	second, first := note("Second", at.Add(50*time.Second), ""), note("First", at.Add(40*time.Second), "")
	r := e.post(sfMessage(e.fake.OrgID(), second, first), "?token="+sfToken)
	require.True(t, isAck(r), "%d %s", r.Status, r.Body)
	got = e.user(u.ID)
	require.Equal(t, "Ada Second", got.Name)
	require.EqualValues(t, 4, got.Version)
	outcomes = e.outcomes()
	require.Equal(t, "applied", outcomes[first.ID])
	require.Equal(t, "applied", outcomes[second.ID])
}

// TestBodyLimitsArePerRoute serves both routes from one app: an Outbound
// Message may be larger than 1 MiB (up to 100 notifications; Salesforce
// would retry a refused one for a day and then drop it), while Stripe
// deliveries stay limited to 1 MiB.
func TestBodyLimitsArePerRoute(t *testing.T) {
	t.Parallel()
	e := newSFEnv(t)
	stripeSide := newEnv(t)
	app := tandemwebhook.New(map[string]integrations.WebhookReceiver{"stripe": stripeSide.adapter, "salesforce": e.adapter},
		e.st, slog.New(slog.DiscardHandler), ops.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	base := "http://" + ln.Addr().String()
	post := func(path string, body []byte, header http.Header) reply {
		req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header = header
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}
	pad := strings.Repeat(" ", tandemwebhook.BodyLimit/2*3)

	msg := sfMessage(e.fake.OrgID(), sfNote{ID: sfNoteID(), ContactID: "0035g00000BigMsgAAA", Email: "big@example.com",
		First: "Big", Last: "Message", Modified: time.Now()})
	msg = bytes.Replace(msg, []byte("</soapenv:Envelope>"), []byte(pad+"</soapenv:Envelope>"), 1)
	require.Greater(t, len(msg), tandemwebhook.BodyLimit)
	r := post("/webhook/salesforce?token="+sfToken, msg, http.Header{"Content-Type": {"text/xml; charset=utf-8"}, "Soapaction": {`""`}})
	require.True(t, isAck(r), "a 1.5 MiB Outbound Message is applied: %d %s", r.Status, r.Body)
	require.Equal(t, "Big Message", e.userByEmail("big@example.com").Name)

	huge := []byte(`{"id":"evt_big","object":"event","pad":"` + pad + `"}`)
	r = post("/webhook/stripe", huge, signedHeader(huge, secret, time.Now()))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status, "%s", r.Body)
	require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"))
	require.Zero(t, e.count("SELECT COUNT(*) FROM inbound_events WHERE provider = 'stripe'"))
}
