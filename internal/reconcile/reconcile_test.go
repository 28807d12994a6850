package reconcile_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/reconcile"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

type env struct {
	t    *testing.T
	st   *store.Store
	dsn  string
	fake *stripefake.Server
	a    *stripe.Adapter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, dsn := testutil.NewStore(t)
	fake := stripefake.New(stripefake.Options{})
	t.Cleanup(fake.Close)
	base, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: base, RateLimit: 1000}, stripe.Options{})
	require.NoError(t, err)
	return &env{t: t, st: st, dsn: dsn, fake: fake, a: a}
}

// linked creates a user, pushes it with the adapter and records the link
// as the worker does.
func (e *env) linked(email, name string, md map[string]string) (store.User, string) {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.st.CreateUser(ctx, store.NewUser{Email: email, Name: name, Metadata: md}, nil)
	require.NoError(e.t, err)
	c := integrations.Customer{UserID: u.ID, Email: u.Email, Name: u.Name, Phone: u.Phone, Metadata: u.Metadata, Version: u.Version}
	res, err := e.a.Upsert(ctx, c, integrations.Link{})
	require.NoError(e.t, err)
	h, v := c.Hash(), u.Version
	require.NoError(e.t, e.st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &res.RemoteID, PushedHash: &h, SyncedVersion: &v, ClearAttempt: true}, nil
	}))
	return u, res.RemoteID
}

func (e *env) run(o reconcile.Options) reconcile.Report {
	e.t.Helper()
	o.Provider, o.Lister, o.Fetcher = "stripe", e.a, e.a
	rep, err := reconcile.Run(context.Background(), e.st, o)
	require.NoError(e.t, err)
	return rep
}

func TestReconcileReportsAndRepairs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u0, _ := e.linked("u0@example.com", "U0", nil)
	u1, r1 := e.linked("u1@example.com", "U1", nil)
	u2, r2 := e.linked("u2@example.com", "U2", map[string]string{"plan": "pro"})
	u3, r3 := e.linked("u3@example.com", "U3", nil)
	u4, _ := e.linked("u4@example.com", "U4", nil)
	_, _ = u0, u4
	// Silent drift and a silent delete; a local change not pushed yet.
	_, err := e.fake.SilentUpdate(r1, func(c *stripefake.Customer) { c.Name = "Drifted" })
	require.NoError(t, err)
	_, err = e.fake.SilentUpdate(r2, func(c *stripefake.Customer) { c.Phone = "+1 555"; c.Metadata["plan"] = "free" })
	require.NoError(t, err)
	require.NoError(t, e.fake.SilentDelete(r3))
	name := "U4 renamed"
	_, err = e.st.UpdateUser(ctx, u4.ID, store.Patch{Name: &name}, 0)
	require.NoError(t, err)
	// Customers no user has: one with the email of a user not synced yet,
	// one new.
	u6, err := e.st.CreateUser(ctx, store.NewUser{Email: "u6@example.com", Name: "U6"}, nil)
	require.NoError(t, err)
	c6, err := e.fake.SilentCreate(stripefake.Customer{Email: "u6@example.com", Name: "U6 in Stripe"})
	require.NoError(t, err)
	c7, err := e.fake.SilentCreate(stripefake.Customer{Email: "u7@example.com", Name: "Only in Stripe"})
	require.NoError(t, err)
	before := e.fake.Stats().Requests

	rep := e.run(reconcile.Options{})
	require.Equal(t, 1, e.fake.Stats().Requests-before, "7 customers fit one page")
	require.Equal(t, 1, rep.Pages)
	require.Equal(t, 5, rep.Checked)
	require.Equal(t, 1, rep.InSync)
	require.Equal(t, 1, rep.Unsettled, "the unpushed local change is not drift")
	require.ElementsMatch(t, []reconcile.Drift{
		{UserID: u1.ID, RemoteID: r1, Fields: []string{"name"}},
		{UserID: u2.ID, RemoteID: r2, Fields: []string{"phone", "metadata"}},
	}, rep.Drift)
	require.Equal(t, []reconcile.Missing{{UserID: u3.ID, RemoteID: r3}}, rep.MissingRemote)
	require.ElementsMatch(t, []reconcile.Unlinked{{RemoteID: c6.ID, Email: "u6@example.com"}, {RemoteID: c7.ID, Email: "u7@example.com"}}, rep.UnlinkedRemote)
	require.Zero(t, rep.Repaired)
	require.Equal(t, int64(0), testutil.QueryInt(t, e.dsn, "SELECT COUNT(*) FROM outbox WHERE origin = ?", store.OriginResync))

	// Repair, pushing Tandem's state, and import the unlinked customers.
	rep = e.run(reconcile.Options{Repair: true, Import: true})
	require.Empty(t, rep.Failures)
	require.Equal(t, 5, rep.Repaired) // 2 drift + 1 missing + 2 imported
	require.Equal(t, map[string]int{"linked": 1, "created": 1}, rep.Imported)
	require.Equal(t, int64(3), testutil.QueryInt(t, e.dsn, "SELECT COUNT(*) FROM outbox WHERE origin = ?", store.OriginResync))
	links, err := e.st.Links(ctx, u1.ID, u3.ID, u6.ID)
	require.NoError(t, err)
	require.Equal(t, store.LinkPending, links[u1.ID][0].Status, "drift repaired by a push")
	require.Nil(t, links[u3.ID][0].RemoteID, "the gone customer is forgotten: the worker links or creates another")
	require.Equal(t, store.LinkPending, links[u3.ID][0].Status)
	require.Equal(t, c6.ID, *links[u6.ID][0].RemoteID, "the customer with u6's email is linked to u6")
	got6, err := e.st.GetUser(ctx, u6.ID)
	require.NoError(t, err)
	require.Equal(t, "U6", got6.Name, "linking never copies the object over the user")
	require.Equal(t, int64(1), testutil.QueryInt(t, e.dsn, "SELECT COUNT(*) FROM users WHERE email = 'u7@example.com' AND deleted_at IS NULL"))

	// Run again: what was repaired now waits for the worker (unsettled);
	// nothing is unlinked any more.
	rep = e.run(reconcile.Options{})
	require.Empty(t, rep.Drift)
	require.Empty(t, rep.MissingRemote)
	require.Empty(t, rep.UnlinkedRemote)
}

// With -prefer remote the remote state is applied locally by the inbound
// rules (no outbox row), and a second run finds the user in sync.
func TestReconcilePreferRemote(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u, r := e.linked("p@example.com", "P", map[string]string{"a": "1"})
	_, err := e.fake.SilentUpdate(r, func(c *stripefake.Customer) {
		c.Name = "P from Stripe"
		c.Metadata = map[string]string{"b": "2", "tandem_user_id": u.ID}
	})
	require.NoError(t, err)
	outbox := testutil.QueryInt(t, e.dsn, "SELECT COUNT(*) FROM outbox")

	rep := e.run(reconcile.Options{Repair: true, PreferRemote: true})
	require.Empty(t, rep.Failures)
	require.Equal(t, 1, rep.Repaired)
	got, err := e.st.GetUser(ctx, u.ID)
	require.NoError(t, err)
	require.Equal(t, "P from Stripe", got.Name)
	require.Equal(t, map[string]string{"b": "2"}, got.Metadata)
	require.Equal(t, u.Version+1, got.Version)
	require.Equal(t, outbox, testutil.QueryInt(t, e.dsn, "SELECT COUNT(*) FROM outbox"), "an inbound change is not announced")

	rep = e.run(reconcile.Options{})
	require.Empty(t, rep.Drift)
	require.Equal(t, 1, rep.InSync)
}

// Listing is one request per 100 customers, whatever the number of users.
func TestReconcileListsInPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 250 {
		_, err := e.fake.SilentCreate(stripefake.Customer{Email: fmt.Sprintf("x%d@example.com", i)})
		require.NoError(t, err)
	}
	before := e.fake.Stats().Requests
	rep := e.run(reconcile.Options{})
	require.Equal(t, 3, rep.Pages)
	require.Equal(t, 3, e.fake.Stats().Requests-before)
	require.Equal(t, 250, rep.Listed)
	require.Len(t, rep.UnlinkedRemote, 250)
}

func TestDiff(t *testing.T) {
	u := store.User{Email: "a@example.com", Name: "A", Phone: "", Metadata: map[string]string{}}
	obj := func(c integrations.Customer, without bool) integrations.RemoteObject {
		return integrations.RemoteObject{ID: "x", Customer: c, WithoutMetadata: without}
	}
	require.Empty(t, reconcile.Diff(u, obj(integrations.Customer{Email: "a@example.com", Name: "A"}, false)), "nil and empty metadata are alike")
	require.Equal(t, []string{"email", "metadata"},
		reconcile.Diff(u, obj(integrations.Customer{Email: "A@example.com", Name: "A", Metadata: map[string]string{"k": "v"}}, false)))
	require.Empty(t, reconcile.Diff(u, obj(integrations.Customer{Email: "a@example.com", Name: "A", Metadata: map[string]string{"k": "v"}}, true)),
		"metadata a provider does not hold is not compared")
	require.Equal(t, []string{"name", "phone"}, reconcile.Diff(u, obj(integrations.Customer{Email: "a@example.com", Name: "B", Phone: "1"}, true)))
}
