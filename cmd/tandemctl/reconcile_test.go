package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

func TestReconcileCommand(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	fake := stripefake.New(stripefake.Options{})
	t.Cleanup(fake.Close)
	base, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: base, RateLimit: 1000}, stripe.Options{})
	require.NoError(t, err)
	ctx := context.Background()

	u, err := st.CreateUser(ctx, store.NewUser{Email: "r@example.com", Name: "R"}, nil)
	require.NoError(t, err)
	c := integrations.Customer{UserID: u.ID, Email: u.Email, Name: u.Name, Metadata: u.Metadata, Version: 1}
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	h, v := c.Hash(), int64(1)
	require.NoError(t, st.SyncLocked(ctx, u.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkSynced, RemoteID: &res.RemoteID, PushedHash: &h, SyncedVersion: &v, ClearAttempt: true}, nil
	}))
	_, err = fake.SilentUpdate(res.RemoteID, func(c *stripefake.Customer) { c.Email = "R@example.com" })
	require.NoError(t, err)
	other, err := fake.SilentCreate(stripefake.Customer{Email: "other@example.com"})
	require.NoError(t, err)

	stripeEnv := []string{"STRIPE_SECRET_KEY=" + stripefake.DefaultAPIKey, "STRIPE_API_BASE=" + base}
	reconcileCtl := func(args ...string) (int, string, string) {
		return ctlEnv(t, dsn, stripeEnv, append([]string{"reconcile"}, args...)...)
	}
	code, out, errs := reconcileCtl("-json", "-provider", "stripe")
	require.Equal(t, exitOK, code, errs)
	var doc map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	for _, k := range []string{"provider", "checked", "in_sync", "drift", "unlinked_remote", "missing_remote", "repaired"} {
		require.Contains(t, doc, k)
	}
	require.Equal(t, "stripe", doc["provider"])
	require.Equal(t, float64(1), doc["checked"])
	require.Equal(t, []any{map[string]any{"user_id": u.ID, "remote_id": res.RemoteID, "fields": []any{"email"}}}, doc["drift"])
	require.Equal(t, []any{map[string]any{"remote_id": other.ID, "email": "other@example.com"}}, doc["unlinked_remote"])
	require.Equal(t, []any{}, doc["missing_remote"])

	code, out, errs = reconcileCtl("-provider", "stripe", "-repair")
	require.Equal(t, exitOK, code, errs)
	require.Contains(t, out, "1 drifted")
	require.Contains(t, out, "repaired 1")
	require.Equal(t, int64(1), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE origin = ?", store.OriginResync))

	for _, tc := range []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{stripeEnv, []string{"reconcile"}, exitUsage, "-provider is required"},
		{stripeEnv, []string{"reconcile", "-provider", "hubspot"}, exitUsage, `unknown provider "hubspot"`},
		{stripeEnv, []string{"reconcile", "-provider", "stripe", "-prefer", "remote"}, exitUsage, "need -repair"},
		{stripeEnv, []string{"reconcile", "-provider", "stripe", "-repair", "-prefer", "mine"}, exitUsage, "-prefer must be"},
		{nil, []string{"reconcile", "-provider", "stripe"}, exitError, "STRIPE_SECRET_KEY"},
	} {
		code, out, errs := ctlEnv(t, dsn, tc.env, tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errs)
		require.Contains(t, errs, tc.want, tc.args)
		require.Equal(t, 1, strings.Count(errs, "\n"), "not one line: %q", errs)
		require.Empty(t, out)
	}
}
