package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/reconcile"
	"github.com/tandem-sync/tandem/internal/store"
)

// ReconcileOptions configure the reconcile benchmark.
type ReconcileOptions struct {
	MySQLDSN  string    // server to use; the database name is replaced
	Users     int       // linked users (default 20,000)
	Drifted   int       // customers changed silently before the run (default 1 %)
	RateLimit float64   // the adapter's STRIPE_RATE_LIMIT (default 100, Stripe's live limit)
	Log       io.Writer // progress lines
}

// Reconcile measures tandemctl reconcile -repair of Users linked users
// against the Stripe fake, Drifted of whose customers were changed with no
// event: the provider requests it makes (target: one per 100 users, plus
// repairs, which here cost none: a drift repair is a resync the worker
// pushes later) and its wall time at the rate limit.
func Reconcile(ctx context.Context, o ReconcileOptions) ([]Row, error) {
	if o.Users <= 0 {
		o.Users = 20_000
	}
	if o.Drifted <= 0 {
		o.Drifted = o.Users / 100
	}
	if o.RateLimit <= 0 {
		o.RateLimit = 100
	}
	progress := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	var row Row
	_, err := withDB(ctx, o.MySQLDSN, "reconcile", func(dsn string) (Row, error) {
		st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 4})
		if err != nil {
			return Row{}, err
		}
		defer st.Close()
		fake := stripefake.New(stripefake.Options{})
		defer fake.Close()
		base, err := fake.Listen("127.0.0.1:0")
		if err != nil {
			return Row{}, err
		}
		a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: base, RateLimit: o.RateLimit}, stripe.Options{})
		if err != nil {
			return Row{}, err
		}

		progress("reconcile: linking %d users to %d customers", o.Users, o.Users)
		remote, err := seedLinked(ctx, st, fake, o.Users)
		if err != nil {
			return Row{}, err
		}
		for i := range o.Drifted {
			if _, err := fake.SilentUpdate(remote[i*(o.Users/o.Drifted)], func(c *stripefake.Customer) { c.Name += " (edited)" }); err != nil {
				return Row{}, err
			}
		}

		progress("reconcile: -repair of %d users (%d drifted) at %.0f requests/s", o.Users, o.Drifted, o.RateLimit)
		before := fake.Stats().Requests
		start := time.Now()
		rep, err := reconcile.Run(ctx, st, reconcile.Options{Provider: "stripe", Lister: a, Fetcher: a, Repair: true})
		if err != nil {
			return Row{}, err
		}
		took := time.Since(start)
		requests := fake.Stats().Requests - before
		if rep.InSync != o.Users-o.Drifted || len(rep.Drift) != o.Drifted || rep.Repaired != o.Drifted {
			return Row{}, fmt.Errorf("reconcile found %d in sync, %d drifted, repaired %d; want %d, %d, %d",
				rep.InSync, len(rep.Drift), rep.Repaired, o.Users-o.Drifted, o.Drifted, o.Drifted)
		}
		row = Row{Stage: fmt.Sprintf("tandemctl reconcile -repair, %d linked users, %d drifted (Stripe fake, %.0f req/s)", o.Users, o.Drifted, o.RateLimit),
			Ops: o.Users, Rate: float64(o.Users) / took.Seconds(),
			Note: fmt.Sprintf("%d provider requests = %.2f per 100 users (target ≤ 1 + repairs); %d drifted found and repaired in %.1f s",
				requests, float64(requests)*100/float64(o.Users), len(rep.Drift), took.Seconds())}
		return row, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	return []Row{row}, nil
}

// seedLinked makes n users, n silent customers holding them (tagged), and
// links them as synced, in bulk. It returns the customer ids in user order.
func seedLinked(ctx context.Context, st *store.Store, fake *stripefake.Server, n int) ([]string, error) {
	const batch = 1000
	remote := make([]string, 0, n)
	past := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	for lo := 0; lo < n; lo += batch {
		rows := make([]store.ImportRow, 0, batch)
		for i := lo; i < min(lo+batch, n); i++ {
			rows = append(rows, store.ImportRow{Line: i + 1, User: store.NewUser{Email: fmt.Sprintf("rec-%06d@example.com", i),
				Name: fmt.Sprintf("Linked User %d", i), Metadata: map[string]string{"plan": "pro"}}})
		}
		users, _, err := st.ImportUsers(ctx, rows, false)
		if err != nil {
			return nil, err
		}
		var q strings.Builder
		q.WriteString("INSERT INTO provider_links (user_id, provider, remote_id, status, synced_version, updated_at) VALUES ")
		args := make([]any, 0, len(users)*4)
		for i, u := range users {
			c, err := fake.SilentCreate(stripefake.Customer{Email: u.Email, Name: u.Name,
				Metadata: map[string]string{"plan": "pro", stripe.MetadataUserIDKey: u.ID}})
			if err != nil {
				return nil, err
			}
			remote = append(remote, c.ID)
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, 'stripe', ?, 'synced', 1, ?)")
			args = append(args, u.ID, c.ID, past)
		}
		if _, err := st.DB().ExecContext(ctx, q.String(), args...); err != nil {
			return nil, err
		}
	}
	return remote, nil
}
