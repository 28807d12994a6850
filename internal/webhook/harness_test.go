package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	tandemwebhook "github.com/tandem-sync/tandem/internal/webhook"
)

const secret = "whsec_webhook_test"

// env is one webhook process on loopback over its own database, fed by a
// Stripe fake that delivers signed events to it.
type env struct {
	db
	fake    *stripefake.Server
	adapter *stripe.Adapter
	reg     *prometheus.Registry
	url     string // the Stripe route
	client  *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, dsn := testutil.NewStore(t)
	fake := stripefake.New(stripefake.Options{RetryBackoff: time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond})
	apiURL, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	adapter, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: apiURL, RateLimit: 1000,
		WebhookSecret: secret}, stripe.Options{})
	require.NoError(t, err)
	reg := ops.NewRegistry()
	app := tandemwebhook.New(map[string]integrations.WebhookReceiver{"stripe": adapter}, st,
		slog.New(slog.NewJSONHandler(io.Discard, nil)), reg, ops.Check{Name: "mysql", Fn: st.Ping})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	t.Cleanup(fake.Close) // runs first: no delivery outlives the app
	url := "http://" + ln.Addr().String() + "/webhook/stripe"
	fake.SetWebhookEndpoint(url, secret)
	return &env{db: db{t: t, st: st, dsn: dsn}, fake: fake, adapter: adapter, reg: reg, url: url,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, ExpectContinueTimeout: 10 * time.Second}}}
}

// wait blocks until the fake has delivered every event.
func (e *env) wait() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(e.t, e.fake.WaitDelivered(ctx))
	st := e.fake.DeliveryStats()
	require.Zero(e.t, st.FailedAttempts, "every delivery is answered 2xx at once: %+v", e.fake.Deliveries())
}

// reply is an answer of the webhook.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r reply) outcomes() []string {
	var v struct {
		Events []struct{ Outcome string }
	}
	_ = json.Unmarshal(r.Body, &v)
	var out []string
	for _, ev := range v.Events {
		out = append(out, ev.Outcome)
	}
	return out
}

// post sends body with header to the Stripe route.
func (e *env) post(body []byte, header http.Header) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
	require.NoError(e.t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// signedHeader signs payload like Stripe, now.
func signedHeader(payload []byte, sec string, at time.Time) http.Header {
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: sec, Timestamp: at})
	return http.Header{"Stripe-Signature": {sp.Header}, "Content-Type": {"application/json; charset=utf-8"}}
}

var evSeq atomic.Int64

// event renders a Stripe customer event (a fresh id unless id is set).
func event(t testing.TB, id, typ string, created time.Time, idemKey string, cust map[string]any) []byte {
	if id == "" {
		id = fmt.Sprintf("evt_test_%d", evSeq.Add(1))
	}
	var key any
	if idemKey != "" {
		key = idemKey
	}
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripego.APIVersion, "created": created.Unix(), "type": typ,
		"livemode": false, "pending_webhooks": 1, "request": map[string]any{"id": nil, "idempotency_key": key},
		"data": map[string]any{"object": cust},
	})
	require.NoError(t, err)
	return b
}

func customer(id, email, name string, md map[string]string) map[string]any {
	if md == nil {
		md = map[string]string{}
	}
	return map[string]any{"id": id, "object": "customer", "email": email, "name": name, "phone": nil, "metadata": md}
}

// push does what the worker does for u: Upsert under the link lock, and
// record the link (remote id, synced version, pushed hash, metadata keys).
func (e *env) push(userID string) { e.db.push(e.adapter, userID) }

// push does what the worker of p does for u.
func (d db) push(p integrations.Provider, userID string) {
	d.t.Helper()
	err := d.st.SyncLocked(context.Background(), userID, p.Name(), func(ctx context.Context, u store.User, l store.Link) (store.LinkUpdate, error) {
		c := integrations.Customer{UserID: u.ID, Email: u.Email, Name: u.Name, Phone: u.Phone, Metadata: u.Metadata, Version: u.Version}
		link := integrations.Link{MetadataKeys: l.MetadataKeyList()}
		if l.RemoteID != nil {
			link.RemoteID = *l.RemoteID
		}
		res, err := p.Upsert(ctx, c, link)
		if err != nil {
			return store.LinkUpdate{}, err
		}
		hash, version := c.Hash(), u.Version
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &res.RemoteID, SyncedVersion: &version,
			PushedHash: &hash, MetadataKeys: res.MetadataKeys, SetMetadataKeys: true}, nil
	})
	require.NoError(d.t, err)
}

// writes counts the write requests (POST, DELETE) the fake received.
func (e *env) writes() int {
	n := 0
	for _, r := range e.fake.Requests() {
		if r.Method != http.MethodGet {
			n++
		}
	}
	return n
}

// db reads a test's database; both webhook environments embed it.
type db struct {
	t   *testing.T
	st  *store.Store
	dsn string
}

func (d db) count(q string, args ...any) int64 {
	d.t.Helper()
	return testutil.QueryInt(d.t, d.dsn, q, args...)
}

func (d db) user(id string) store.User {
	d.t.Helper()
	u, err := d.st.GetUser(context.Background(), id)
	require.NoError(d.t, err)
	return u
}

func (d db) link(userID string) store.Link {
	d.t.Helper()
	links, err := d.st.Links(context.Background(), userID)
	require.NoError(d.t, err)
	require.Len(d.t, links[userID], 1)
	return links[userID][0]
}

// userByEmail finds the live user with email.
func (d db) userByEmail(email string) store.User {
	d.t.Helper()
	users, _, err := d.st.ListUsers(context.Background(), store.ListQuery{Email: email, Limit: 2})
	require.NoError(d.t, err)
	require.Len(d.t, users, 1, "users with email %s", email)
	return users[0]
}

// counter sums the samples of a counter whose labels include want.
func counter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// outcomes returns the recorded outcomes of inbound events, by event id.
func (e *env) outcomes() map[string]string {
	e.t.Helper()
	rows, err := e.st.InboundEvents(context.Background(), "stripe", "", 1000)
	require.NoError(e.t, err)
	out := map[string]string{}
	for _, r := range rows {
		out[r.EventID] = r.Outcome
	}
	return out
}
