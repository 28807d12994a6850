package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

type backfillDoc struct {
	Users, Link, Create, Ambiguous, Update int
	Linked, Created, Updated, Skipped      int
	Pages                                  int
	Conflicts                              []backfillConflict
	Failed                                 []backfillFailure
}

func backfillRun(t *testing.T, dsn, base string, args ...string) (int, backfillDoc, string) {
	t.Helper()
	code, out, errs := ctlEnv(t, dsn, []string{"STRIPE_SECRET_KEY=" + stripefake.DefaultAPIKey, "STRIPE_API_BASE=" + base, "STRIPE_RATE_LIMIT=1000"},
		append([]string{"backfill", "-provider", "stripe", "-json"}, args...)...)
	var doc backfillDoc
	require.NoError(t, json.Unmarshal([]byte(out), &doc), "stdout %q stderr %q", out, errs)
	return code, doc, errs
}

// Backfill plans from one listing, links what Stripe already holds (tagging
// it), creates the rest with one request each, leaves ambiguous users in
// conflict, and a second run does nothing.
func TestBackfill(t *testing.T) {
	t.Parallel()
	dsn, fake, base, users := backfillSetup(t, "bf", 12)

	// Users 0-4 are customers already (user 0 in another case), 5 twice,
	// 6-11 not at all; one stranger.
	existing := map[string]string{}
	for i := range 5 {
		email := users[i].Email
		if i == 0 {
			email = "BF-00@Example.com"
		}
		c, err := fake.SilentCreate(stripefake.Customer{Email: email, Name: "Old"})
		require.NoError(t, err)
		existing[users[i].ID] = c.ID
	}
	for range 2 {
		_, err := fake.SilentCreate(stripefake.Customer{Email: users[5].Email, Name: "Twin"})
		require.NoError(t, err)
	}
	_, err := fake.SilentCreate(stripefake.Customer{Email: "stranger@example.com"})
	require.NoError(t, err)

	before := fake.Stats()
	code, plan, errs := backfillRun(t, dsn, base, "-dry-run")
	require.Equal(t, exitOK, code, errs)
	require.Equal(t, 12, plan.Users)
	require.Equal(t, [3]int{5, 6, 1}, [3]int{plan.Link, plan.Create, plan.Ambiguous})
	require.Equal(t, 1, fake.Stats().Requests-before.Requests, "a dry run is one listing page")
	require.Zero(t, fake.Stats().Writes-before.Writes)

	before = fake.Stats()
	code, done, errs := backfillRun(t, dsn, base)
	require.Equal(t, exitOK, code, errs)
	require.Equal(t, [3]int{5, 6, 1}, [3]int{done.Linked, done.Created, len(done.Conflicts)}, "%+v", done)
	require.Empty(t, done.Failed)
	require.Equal(t, 1+11, fake.Stats().Requests-before.Requests, "one listing page and one request per linked or created user")
	for i, u := range users {
		tagged := fake.CustomersWithMetadata(stripe.MetadataUserIDKey, u.ID)
		if i == 5 {
			require.Empty(t, tagged)
			continue
		}
		require.Len(t, tagged, 1, "user %d", i)
		require.Equal(t, u.Name, tagged[0].Name, "user %d: the user's state was not pushed", i)
		if id, ok := existing[u.ID]; ok {
			require.Equal(t, id, tagged[0].ID, "user %d: the existing customer was not reused", i)
		}
	}
	require.Len(t, done.Conflicts[0].Candidates, 2)

	before = fake.Stats()
	code, again, errs := backfillRun(t, dsn, base)
	require.Equal(t, exitOK, code, errs)
	require.Equal(t, 1, again.Users, "only the ambiguous user is left")
	require.Zero(t, again.Linked+again.Created+again.Updated)
	require.Len(t, again.Conflicts, 1)
	require.Zero(t, fake.Stats().Writes-before.Writes, "a second run wrote to Stripe")
}

func TestBackfillBadUsage(t *testing.T) {
	t.Parallel()
	_, dsn := testutil.NewStore(t)
	code, _, errs := ctl(t, dsn, "backfill")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errs, "-provider is required")
	code, _, errs = ctl(t, dsn, "backfill", "-provider", "hubspot")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errs, `unknown provider "hubspot"`)
	code, out, errs := ctl(t, dsn, "backfill", "-provider", "stripe")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "STRIPE_SECRET_KEY", "a missing key is named")
	require.Equal(t, 1, strings.Count(errs, "\n"), "one line: %q", errs)
	require.Empty(t, out)
}

// A provider failing mid-backfill: writes that took effect but answered
// 500, and plain 500s, are retried by the worker's rules; every user ends
// with exactly one customer, and a re-run has nothing left to do.
func TestBackfillThroughFailures(t *testing.T) {
	t.Parallel()
	dsn, fake, base, users := backfillSetup(t, "ff", 20)
	fake.FailAfterWrite(5)
	fake.SetFaults(stripefake.Faults{ServerErrorRatio: 0.2})

	code, done, errs := backfillRun(t, dsn, base)
	require.Equal(t, exitOK, code, errs)
	require.Equal(t, 20, done.Created, "%+v", done)
	for i, u := range users {
		require.Len(t, fake.CustomersWithMetadata(stripe.MetadataUserIDKey, u.ID), 1, "user %d", i)
	}
	fake.SetFaults(stripefake.Faults{})
	code, again, errs := backfillRun(t, dsn, base)
	require.Equal(t, exitOK, code, errs)
	require.Zero(t, again.Users, "%+v", again)
}

// backfillSetup makes n users (emails <prefix>-NN@example.com) in a
// database of the test's own and a Stripe fake.
func backfillSetup(t *testing.T, prefix string, n int) (dsn string, fake *stripefake.Server, base string, users []store.User) {
	t.Helper()
	st, dsn := testutil.NewStore(t)
	fake = stripefake.New(stripefake.Options{})
	t.Cleanup(fake.Close)
	base, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	for i := range n {
		u, err := st.CreateUser(context.Background(), store.NewUser{Email: fmt.Sprintf("%s-%02d@example.com", prefix, i), Name: fmt.Sprintf("User %d", i)}, nil)
		require.NoError(t, err)
		users = append(users, u)
	}
	return dsn, fake, base, users
}
