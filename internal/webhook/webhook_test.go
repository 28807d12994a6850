package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
)

func TestDashboardChangesFlowIntoMySQL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	local, err := e.st.CreateUser(ctx, store.NewUser{Email: "local@example.com", Name: "Local"}, nil)
	require.NoError(t, err)
	outbox := e.count("SELECT COUNT(*) FROM outbox")

	// Created in the dashboard: a new user.
	c, err := e.fake.DashboardCreate(stripefake.Customer{Email: "dash@example.com", Name: "Dash", Phone: "+1 555 0100",
		Metadata: map[string]string{"plan": "pro"}})
	require.NoError(t, err)
	e.wait()
	u := e.userByEmail("dash@example.com")
	require.Equal(t, "Dash", u.Name)
	require.Equal(t, "+1 555 0100", u.Phone)
	require.Equal(t, map[string]string{"plan": "pro"}, u.Metadata)
	require.EqualValues(t, 1, u.Version)
	l := e.link(u.ID)
	require.Equal(t, c.ID, *l.RemoteID)
	require.Equal(t, store.LinkSynced, l.Status)
	require.EqualValues(t, 1, l.SyncedVersion)

	// Updated in the dashboard.
	_, err = e.fake.DashboardUpdate(c.ID, func(c *stripefake.Customer) {
		c.Name = "Dash Renamed"
		c.Metadata = map[string]string{"plan": "team", "seats": "5"}
	})
	require.NoError(t, err)
	e.wait()
	u = e.user(u.ID)
	require.Equal(t, "Dash Renamed", u.Name)
	require.Equal(t, map[string]string{"plan": "team", "seats": "5"}, u.Metadata)
	require.EqualValues(t, 2, u.Version)
	l = e.link(u.ID)
	require.EqualValues(t, 2, l.SyncedVersion)
	require.Equal(t, []string{"plan", "seats"}, l.MetadataKeyList())

	// Created in the dashboard with a local user's email: linked to them,
	// without copying its fields over the user (the worker pushes the
	// user's state over the customer).
	before := e.user(local.ID)
	c2, err := e.fake.DashboardCreate(stripefake.Customer{Email: "LOCAL@example.com", Name: "Local From Stripe"})
	require.NoError(t, err)
	e.wait()
	got := e.user(local.ID)
	require.Equal(t, before.Email, got.Email)
	require.Equal(t, before.Name, got.Name)
	require.Equal(t, before.Version, got.Version)
	require.Equal(t, c2.ID, *e.link(local.ID).RemoteID)

	// Deleted in the dashboard.
	require.NoError(t, e.fake.DashboardDelete(c.ID))
	e.wait()
	_, err = e.st.GetUser(ctx, u.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	l = e.link(u.ID)
	require.Equal(t, store.LinkDeleted, l.Status)
	require.EqualValues(t, 3, l.SyncedVersion)

	require.Zero(t, e.writes(), "inbound handling never writes to Stripe (it may read)")
	require.Equal(t, outbox+1, e.count("SELECT COUNT(*) FROM outbox"),
		"inbound changes write no outbox row; only the link whose customer holds another state than the user asks for a push")
	require.Equal(t, map[string]string{}, nonOutcomes(e.outcomes(), "created", "applied", "linked", "deleted"))
}

// nonOutcomes returns the events whose outcome is not among want.
func nonOutcomes(got map[string]string, want ...string) map[string]string {
	out := map[string]string{}
	for id, o := range got {
		if !contains(want, o) {
			out[id] = o
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestSameEventDeliveredFiveTimesAtOnceAppliesOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "five@example.com", Name: "Five"}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	remote := *e.link(u.ID).RemoteID

	body := event(t, "", "customer.updated", time.Now().Add(time.Minute), "", customer(remote, "five@example.com", "Five Renamed", nil))
	var wg sync.WaitGroup
	replies := make(chan reply, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies <- e.post(body, signedHeader(body, secret, time.Now()))
		}()
	}
	wg.Wait()
	close(replies)
	count := map[string]int{}
	for r := range replies {
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		count[strings.Join(r.outcomes(), ",")]++
	}
	require.Equal(t, map[string]int{"applied": 1, "duplicate": 4}, count)
	got := e.user(u.ID)
	require.Equal(t, "Five Renamed", got.Name)
	require.EqualValues(t, 2, got.Version)
}

func TestOlderEventAfterNewerIsIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "order@example.com", Name: "Order"}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	remote := *e.link(u.ID).RemoteID

	at := time.Now().Add(time.Minute)
	newer := event(t, "", "customer.updated", at, "", customer(remote, "order@example.com", "Newer", nil))
	older := event(t, "", "customer.updated", at.Add(-5*time.Second), "", customer(remote, "order@example.com", "Older", nil))
	r := e.post(newer, signedHeader(newer, secret, time.Now()))
	require.Equal(t, []string{"applied"}, r.outcomes())
	r = e.post(older, signedHeader(older, secret, time.Now()))
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, []string{"stale"}, r.outcomes())
	got := e.user(u.ID)
	require.Equal(t, "Newer", got.Name)
	require.EqualValues(t, 2, got.Version)
}

// TestEchoOfAPushDoesNotOverwriteANewerLocalChange: PATCH v2 → push → PATCH
// v3 → the echo of v2 arrives → the user stays at v3.
func TestEchoOfAPushDoesNotOverwriteANewerLocalChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "echo@example.com", Name: "V1", Metadata: map[string]string{"plan": "pro"}}, nil)
	require.NoError(t, err)
	e.push(u.ID) // a create carrying the state: one event, an echo
	e.wait()
	require.EqualValues(t, 1, e.user(u.ID).Version)

	v2 := "V2"
	_, err = e.st.UpdateUser(ctx, u.ID, store.Patch{Name: &v2}, 0)
	require.NoError(t, err)
	e.fake.PauseDelivery()
	e.push(u.ID)
	v3 := "V3"
	_, err = e.st.UpdateUser(ctx, u.ID, store.Patch{Name: &v3}, 0)
	require.NoError(t, err)
	writes := e.writes()
	e.fake.ResumeDelivery()
	e.wait()
	got := e.user(u.ID)
	require.Equal(t, "V3", got.Name)
	require.EqualValues(t, 3, got.Version)

	// An edit in the dashboard that changes nothing Tandem syncs: the
	// state is the one Tandem pushed (v2), so it is an echo too.
	_, err = e.fake.DashboardUpdate(*e.link(u.ID).RemoteID, func(c *stripefake.Customer) { c.Description = "VIP" })
	require.NoError(t, err)
	e.wait()
	got = e.user(u.ID)
	require.Equal(t, "V3", got.Name)
	require.EqualValues(t, 3, got.Version)
	require.Equal(t, writes, e.writes(), "the webhook wrote nothing to Stripe")

	e.push(u.ID)
	e.wait()
	require.EqualValues(t, 3, e.user(u.ID).Version)
	l := e.link(u.ID)
	require.EqualValues(t, 3, l.SyncedVersion)
	require.Equal(t, store.LinkSynced, l.Status)

	// Every event was an echo. The echoes of Tandem's own requests are
	// recorded only when they arrive while their push is in flight (issue
	// 15: an echo of a recorded push writes nothing); the dashboard edit
	// is a real event, always recorded.
	outcomes := e.outcomes()
	events := e.fake.Events()
	require.Len(t, events, 4, "create (v1), update v2, dashboard, update v3")
	for _, ev := range events {
		got, recorded := outcomes[ev.ID]
		if strings.HasPrefix(ev.IdempotencyKey, "tandem-") && !recorded {
			continue
		}
		require.Equal(t, "echo", got, "event %s (%s, key %q)", ev.ID, ev.Type, ev.IdempotencyKey)
	}
	require.LessOrEqual(t, len(outcomes), 4, "%v", outcomes)
}

func TestInboundChangeWritesNothingOutbound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "quiet@example.com", Name: "Quiet"}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	writes, outbox := e.writes(), e.count("SELECT COUNT(*) FROM outbox")

	_, err = e.fake.DashboardUpdate(*e.link(u.ID).RemoteID, func(c *stripefake.Customer) {
		c.Name = "Loud"
		c.Metadata["source"] = "dashboard"
	})
	require.NoError(t, err)
	e.wait()
	got := e.user(u.ID)
	require.Equal(t, "Loud", got.Name)
	require.Equal(t, map[string]string{"source": "dashboard"}, got.Metadata, "tandem_user_id stays in Stripe only")
	require.EqualValues(t, 2, got.Version)
	require.Equal(t, writes, e.writes(), "no write request to Stripe from the webhook path")
	require.Equal(t, outbox, e.count("SELECT COUNT(*) FROM outbox"), "no outbox row, so nothing is republished")
	l := e.link(u.ID)
	require.EqualValues(t, 2, l.SyncedVersion, "Stripe already holds version 2")
}

func TestBadDeliveriesAre4xxAndChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "bad@example.com", Name: "Bad"}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	remote := *e.link(u.ID).RemoteID
	events := e.count("SELECT COUNT(*) FROM inbound_events")

	good := event(t, "", "customer.updated", time.Now().Add(time.Minute), "", customer(remote, "bad@example.com", "Changed", nil))
	withType := func(h http.Header, ct string) http.Header { h.Set("Content-Type", ct); return h }
	huge := []byte(`{"id":"evt_huge","pad":"` + strings.Repeat("x", 2<<20) + `"}`)
	hugeHeader := signedHeader(huge, secret, time.Now())
	hugeHeader.Set("Expect", "100-continue")
	for name, tc := range map[string]struct {
		body   []byte
		header http.Header
		status int
		slug   string
	}{
		"missing signature": {good, http.Header{"Content-Type": {"application/json"}}, 400, "unverified"},
		"bad signature":     {good, http.Header{"Content-Type": {"application/json"}, "Stripe-Signature": {"t=1,v1=abc"}}, 400, "unverified"},
		"expired signature": {good, signedHeader(good, secret, time.Now().Add(-6*time.Minute)), 400, "unverified"},
		"wrong secret":      {good, signedHeader(good, "whsec_wrong", time.Now()), 400, "unverified"},
		"truncated JSON":    {good[:len(good)-20], signedHeader(good[:len(good)-20], secret, time.Now()), 400, "bad-payload"},
		"wrong content type": {good, withType(signedHeader(good, secret, time.Now()), "application/x-www-form-urlencoded"),
			400, "bad-payload"},
		"2 MiB body": {huge, hugeHeader, 413, "too-large"},
	} {
		r := e.post(tc.body, tc.header)
		require.Equal(t, tc.status, r.Status, "%s: %s", name, r.Body)
		require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"), name)
		var p map[string]any
		require.NoError(t, json.Unmarshal(r.Body, &p), name)
		require.Equal(t, "https://tandem-sync.dev/problems/"+tc.slug, p["type"], name)
	}
	require.Equal(t, events, e.count("SELECT COUNT(*) FROM inbound_events"), "nothing stored")
	got := e.user(u.ID)
	require.Equal(t, "Bad", got.Name)
	require.EqualValues(t, 1, got.Version)
	require.EqualValues(t, 4, counter(t, e.reg, "tandem_webhook_rejected_total", map[string]string{"reason": "unverified"}))
	require.EqualValues(t, 2, counter(t, e.reg, "tandem_webhook_rejected_total", map[string]string{"reason": "bad_payload"}))

	// The same event, signed, applies.
	r := e.post(good, signedHeader(good, secret, time.Now()))
	require.Equal(t, []string{"applied"}, r.outcomes())
}

func TestEmailConflictIsKeptAndShownOnTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a, err := e.st.CreateUser(ctx, store.NewUser{Email: "a@example.com", Name: "A"}, nil)
	require.NoError(t, err)
	b, err := e.st.CreateUser(ctx, store.NewUser{Email: "b@example.com", Name: "B"}, nil)
	require.NoError(t, err)
	e.push(a.ID)
	e.wait()
	remote := *e.link(a.ID).RemoteID

	_, err = e.fake.DashboardUpdate(remote, func(c *stripefake.Customer) { c.Email = "B@example.com"; c.Name = "A2" })
	require.NoError(t, err)
	e.wait() // answered 200: no failed attempt

	got := e.user(a.ID)
	require.Equal(t, "a@example.com", got.Email)
	require.Equal(t, "A", got.Name)
	require.EqualValues(t, 1, got.Version)
	require.Equal(t, "b@example.com", e.user(b.ID).Email)
	require.EqualValues(t, 1, counter(t, e.reg, "tandem_webhook_conflicts_total", nil))
	require.EqualValues(t, 1, counter(t, e.reg, "tandem_webhook_events_total", map[string]string{"outcome": "conflict"}))
	rows, err := e.st.InboundEvents(ctx, "stripe", store.InboundConflict, 10)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Contains(t, string(rows[0].Payload), `"B@example.com"`, "the event is kept for an operator")

	// The REST API shows it.
	app := api.New(e.st, e.st, api.Config{Tokens: []string{"tok"}, Providers: []string{"stripe"}},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), ops.NewRegistry())
	req := httptest.NewRequest(http.MethodGet, "/v1/users/"+a.ID, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := app.Test(req, 10_000)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var user struct {
		Sync map[string]struct {
			Status    string  `json:"status"`
			LastError *string `json:"last_error"`
		} `json:"sync"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&user))
	require.Equal(t, "conflict", user.Sync["stripe"].Status)
	require.Contains(t, *user.Sync["stripe"].LastError, `"B@example.com"`)
	require.Contains(t, *user.Sync["stripe"].LastError, b.ID)

	// Fixed in Stripe: the next event applies and clears the conflict.
	_, err = e.fake.DashboardUpdate(remote, func(c *stripefake.Customer) { c.Email = "a2@example.com" })
	require.NoError(t, err)
	e.wait()
	got = e.user(a.ID)
	require.Equal(t, "a2@example.com", got.Email)
	require.Equal(t, "A2", got.Name)
	require.Equal(t, store.LinkSynced, e.link(a.ID).Status)
}

func TestUnhandledEventTypesAreCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := event(t, "", "invoice.paid", time.Now(), "", map[string]any{"id": "in_1", "object": "invoice"})
	r := e.post(body, signedHeader(body, secret, time.Now()))
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, []string{"unhandled"}, r.outcomes())
	require.EqualValues(t, 1, counter(t, e.reg, "tandem_webhook_events_total", map[string]string{"kind": "ignored", "outcome": "unhandled"}))
	require.Zero(t, e.count("SELECT COUNT(*) FROM inbound_events"))

	// A customer Tandem does not know, without an email: ignored, counted.
	body = event(t, "", "customer.created", time.Now(), "", customer("cus_anon", "", "Anon", nil))
	r = e.post(body, signedHeader(body, secret, time.Now()))
	require.Equal(t, []string{"ignored_no_email"}, r.outcomes())
	require.Zero(t, e.count("SELECT COUNT(*) FROM users"))
}

func TestOperationalEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := strings.TrimSuffix(e.url, "/webhook/stripe")
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/webhook/nope": 404} {
		resp, err := e.client.Get(base + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, path)
	}
}

// TestInboundStatesAreValidatedLikeTheAPI (issue 10, finding 8): a customer
// edited in the dashboard into something the API would refuse (an email
// LOWER() folds onto another, control characters in metadata or the name)
// is answered 200 and
// recorded invalid, and the user keeps what it had, so every later push of
// the user still works.
func TestInboundStatesAreValidatedLikeTheAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: "valid@example.com", Name: "Valid"}, nil)
	require.NoError(t, err)
	e.push(u.ID)
	e.wait()
	remote := *e.link(u.ID).RemoteID
	for _, edit := range []func(c *stripefake.Customer){
		func(c *stripefake.Customer) { c.Email = "\u212Aate@example.com" }, // the Kelvin sign, which LOWER() folds into k
		func(c *stripefake.Customer) { c.Metadata = map[string]string{"note": "bell\x07"} },
		func(c *stripefake.Customer) { c.Name = "Escape\x1b[31m and NUL\x00" },
	} {
		_, err := e.fake.DashboardUpdate(remote, edit)
		require.NoError(t, err)
		e.wait()
	}
	got := e.user(u.ID)
	require.Equal(t, "valid@example.com", got.Email)
	require.Equal(t, "Valid", got.Name)
	require.Empty(t, got.Metadata)
	require.Equal(t, u.Version, got.Version)
	invalid := 0
	for _, o := range e.outcomes() {
		if o == string(store.InboundInvalid) {
			invalid++
		}
	}
	require.Equal(t, 3, invalid, "%v", e.outcomes())
}
