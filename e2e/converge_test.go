package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// dbUser is a user row and its stripe link, as MySQL holds them.
type dbUser struct {
	ID       string
	Email    string
	Name     string
	Phone    string
	Metadata map[string]string
	Version  int64
	Deleted  bool
	Link     *dbLink // nil: no link row yet
}

// dbLink is a user's provider_links row for stripe.
type dbLink struct {
	RemoteID      string // "" while none
	Status        string
	SyncedVersion int64
	LastError     string
}

// users reads every user (deleted ones too) with its stripe link, ordered by id.
func (s *system) users(ctx context.Context) ([]*dbUser, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT u.id, u.email, u.name, u.phone, u.metadata, u.version,
			u.deleted_at IS NOT NULL, l.user_id IS NOT NULL, COALESCE(l.remote_id, ''), COALESCE(l.status, ''),
			COALESCE(l.synced_version, 0), COALESCE(l.last_error, '')
		FROM users u LEFT JOIN provider_links l ON l.user_id = u.id AND l.provider = ?
		ORDER BY u.id`, provider)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*dbUser
	for rows.Next() {
		var u dbUser
		var md string
		var linked bool
		var l dbLink
		if err := rows.Scan(&u.ID, &u.Email, &u.Name, &u.Phone, &md, &u.Version, &u.Deleted, &linked,
			&l.RemoteID, &l.Status, &l.SyncedVersion, &l.LastError); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(md), &u.Metadata); err != nil {
			return nil, fmt.Errorf("user %s: metadata %q: %v", u.ID, md, err)
		}
		if u.Metadata == nil {
			u.Metadata = map[string]string{}
		}
		if linked {
			u.Link = &l
		}
		out = append(out, &u)
	}
	return out, rows.Err()
}

// report says how far the system is from convergence: empty problems and
// global mean converged.
type report struct {
	live, deleted, customers int
	problems                 []string // one readable block per user that did not converge
	global                   []string // what is not per user: backlogs, unknown customers, dead letters
}

func (r *report) ok() bool { return len(r.problems) == 0 && len(r.global) == 0 }

// String lists what did not converge: the global problems, then per user
// (at most 25) MySQL's state next to the sandbox's.
func (r *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d live users, %d deleted users, %d Stripe customers; %d users not converged\n",
		r.live, r.deleted, r.customers, len(r.problems))
	for _, g := range r.global {
		fmt.Fprintf(&b, "  ✗ %s\n", g)
	}
	for i, p := range r.problems {
		if i == 25 {
			fmt.Fprintf(&b, "… and %d more users\n", len(r.problems)-25)
			break
		}
		b.WriteString(p)
	}
	return b.String()
}

// check compares MySQL with the sandbox once (see the package documentation
// for what converged means).
func (s *system) check(ctx context.Context) *report {
	r := &report{}
	users, err := s.users(ctx)
	if err != nil {
		r.global = append(r.global, "reading users: "+err.Error())
		return r
	}
	customers := s.sb.Fake.Customers()
	r.customers = len(customers)
	byID := map[string]stripefake.Customer{}
	liveTagged := map[string][]string{} // user id -> live customers tagged with it
	for _, c := range customers {
		byID[c.ID] = c
		if uid := c.Metadata["tandem_user_id"]; uid != "" && !c.Deleted {
			liveTagged[uid] = append(liveTagged[uid], c.ID)
		}
	}
	known := map[string]bool{}
	for _, u := range users {
		if u.Link != nil && u.Link.RemoteID != "" {
			known[u.Link.RemoteID] = true
		}
		if u.Deleted {
			r.deleted++
		} else {
			r.live++
		}
		if issues := userIssues(u, byID, liveTagged[u.ID]); len(issues) > 0 {
			r.problems = append(r.problems, describe(u, byID, issues))
		}
	}
	deletedUsers := map[string]bool{}
	for _, u := range users {
		if u.Deleted {
			deletedUsers[u.ID] = true
		}
	}
	for _, c := range customers {
		// A deleted customer of a deleted user may be unknown to Tandem: the
		// delete of a user without a recorded customer replays the create
		// (a lost create's customer) and deletes what Stripe answers.
		if !known[c.ID] && !(c.Deleted && deletedUsers[c.Metadata["tandem_user_id"]]) {
			r.global = append(r.global, fmt.Sprintf("Stripe customer %s (%s, tandem_user_id %q, deleted %v) is unknown to Tandem",
				c.ID, c.Email, c.Metadata["tandem_user_id"], c.Deleted))
		}
	}

	var backlog int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE published_at IS NULL`).Scan(&backlog); err != nil {
		r.global = append(r.global, "reading the outbox: "+err.Error())
	} else if backlog > 0 {
		r.global = append(r.global, fmt.Sprintf("%d outbox rows not yet published", backlog))
	}
	queues := []string{broker.WorkQueue(provider)}
	for _, d := range retryTierDurations {
		queues = append(queues, broker.RetryQueue(provider, d))
	}
	for _, q := range queues {
		if n, err := s.queueDepth(q); err != nil {
			r.global = append(r.global, fmt.Sprintf("queue %s: %v", q, err))
		} else if n > 0 {
			r.global = append(r.global, fmt.Sprintf("%d messages waiting in %s", n, q))
		}
	}
	dead := broker.DeadQueue(provider)
	if n, err := s.queueDepth(dead); err != nil {
		r.global = append(r.global, fmt.Sprintf("queue %s: %v", dead, err))
	} else if n > 0 {
		r.global = append(r.global, fmt.Sprintf("%d messages dead-lettered in %s, e.g.:\n      %s", n, dead,
			strings.Join(s.deadLetters(dead, 5), "\n      ")))
	}
	ds := s.sb.Fake.DeliveryStats()
	if ds.Pending > 0 {
		r.global = append(r.global, fmt.Sprintf("%d webhook deliveries pending", ds.Pending))
	}
	if ds.Abandoned > 0 {
		r.global = append(r.global, fmt.Sprintf("%d webhook deliveries abandoned after every attempt failed", ds.Abandoned))
	}
	return r
}

// userIssues lists how one user differs from its converged state. tagged
// are the live customers whose metadata names the user.
func userIssues(u *dbUser, byID map[string]stripefake.Customer, tagged []string) []string {
	var issues []string
	l := u.Link
	if u.Deleted {
		switch {
		case l == nil:
			issues = append(issues, "deleted, but no stripe link (the deletion was never handled)")
		case l.Status != "deleted" || l.SyncedVersion != u.Version:
			issues = append(issues, fmt.Sprintf("deleted at version %d, link %s at version %d", u.Version, l.Status, l.SyncedVersion))
		}
		if l != nil && l.RemoteID != "" {
			if c, ok := byID[l.RemoteID]; ok && !c.Deleted {
				issues = append(issues, "its Stripe customer "+l.RemoteID+" is still live")
			}
		}
		if len(tagged) > 0 {
			issues = append(issues, fmt.Sprintf("live Stripe customers still tagged with it: %v", tagged))
		}
		return issues
	}
	if l == nil {
		return append(issues, "no stripe link yet")
	}
	if l.Status != "synced" {
		issues = append(issues, fmt.Sprintf("link status %s (last_error %q)", l.Status, l.LastError))
	}
	if l.SyncedVersion != u.Version {
		issues = append(issues, fmt.Sprintf("synced_version %d ≠ version %d", l.SyncedVersion, u.Version))
	}
	if l.RemoteID == "" {
		return append(issues, "no Stripe customer linked")
	}
	c, ok := byID[l.RemoteID]
	switch {
	case !ok:
		issues = append(issues, "linked customer "+l.RemoteID+" does not exist in Stripe")
	case c.Deleted:
		issues = append(issues, "linked customer "+l.RemoteID+" is deleted in Stripe")
	default:
		if c.Email != u.Email {
			issues = append(issues, "email differs")
		}
		if c.Name != u.Name {
			issues = append(issues, "name differs")
		}
		if c.Phone != u.Phone {
			issues = append(issues, "phone differs")
		}
		if !maps.Equal(userMetadata(c), u.Metadata) {
			issues = append(issues, "metadata differs")
		}
		if tag := c.Metadata["tandem_user_id"]; tag != "" && tag != u.ID {
			issues = append(issues, "the customer is tagged with another user, "+tag)
		}
	}
	for _, id := range tagged {
		if id != l.RemoteID {
			issues = append(issues, fmt.Sprintf("a second live customer %s is tagged with this user", id))
		}
	}
	return issues
}

// userMetadata is a customer's metadata without Tandem's own keys.
func userMetadata(c stripefake.Customer) map[string]string {
	md := map[string]string{}
	for k, v := range c.Metadata {
		if !strings.HasPrefix(k, "tandem_") {
			md[k] = v
		}
	}
	return md
}

// describe renders one user's MySQL state next to its Stripe customer.
func describe(u *dbUser, byID map[string]stripefake.Customer, issues []string) string {
	var b strings.Builder
	state := "live"
	if u.Deleted {
		state = "deleted"
	}
	fmt.Fprintf(&b, "user %s v%d %s\n", u.ID, u.Version, state)
	fmt.Fprintf(&b, "    MySQL : email=%q name=%q phone=%q metadata=%s\n", u.Email, u.Name, u.Phone, showMap(u.Metadata))
	if l := u.Link; l != nil {
		fmt.Fprintf(&b, "    link  : remote=%s status=%s synced_version=%d last_error=%q\n", l.RemoteID, l.Status, l.SyncedVersion, l.LastError)
		if c, ok := byID[l.RemoteID]; ok {
			cs := "live"
			if c.Deleted {
				cs = "deleted"
			}
			fmt.Fprintf(&b, "    Stripe: %s %s email=%q name=%q phone=%q metadata=%s\n", c.ID, cs, c.Email, c.Name, c.Phone, showMap(c.Metadata))
		}
	}
	for _, is := range issues {
		fmt.Fprintf(&b, "    ✗ %s\n", is)
	}
	return b.String()
}

func showMap(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%q", k, m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// awaitConverged polls check until the system has converged or timeout
// passes, and returns the last report.
func (s *system) awaitConverged(timeout time.Duration) (*report, time.Duration) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *report
	_ = waitFor(ctx, 200*time.Millisecond, func() bool {
		qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer qcancel()
		last = s.check(qctx)
		return last.ok()
	})
	return last, time.Since(start)
}

// checkAPI reads every live user through GET /v1/users/{id} and returns the
// users whose answer differs from MySQL or whose sync.stripe is not synced
// at their version.
func (s *system) checkAPI(ctx context.Context) ([]string, error) {
	users, err := s.users(ctx)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var bad []string
	work := make(chan *dbUser)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				got, status, err := s.client.getUser(ctx, u.ID)
				var issue string
				switch {
				case err != nil:
					issue = err.Error()
				case status != http.StatusOK:
					issue = fmt.Sprintf("status %d", status)
				case got.Email != u.Email || got.Name != u.Name || got.Phone != u.Phone ||
					!maps.Equal(got.Metadata, u.Metadata) || got.Version != u.Version:
					issue = fmt.Sprintf("answers %+v, MySQL holds %+v", got, *u)
				default:
					st := got.Sync[provider]
					if st.Status != "synced" || st.SyncedVersion != u.Version || st.RemoteID == nil || *st.RemoteID != u.Link.RemoteID {
						issue = fmt.Sprintf("sync.stripe = %+v at version %d", st, u.Version)
					}
				}
				if issue != "" {
					mu.Lock()
					bad = append(bad, "GET /v1/users/"+u.ID+": "+issue)
					mu.Unlock()
				}
			}
		}()
	}
	for _, u := range users {
		if !u.Deleted {
			work <- u
		}
	}
	close(work)
	wg.Wait()
	sort.Strings(bad)
	return bad, nil
}

// activity counts everything that moves when the system is not at rest.
type activity struct {
	StripeRequests int   // API requests the sandbox received (reads included)
	Events         int   // events the sandbox emitted
	Deliveries     int   // webhook delivery attempts
	Inbound        int64 // inbound events the webhook recorded
	Outbox         int64 // outbox rows (every local change writes one)
	Versions       int64 // the sum of every user's version
}

func (s *system) activity(ctx context.Context) (activity, error) {
	a := activity{
		StripeRequests: s.sb.Fake.Stats().Requests,
		Events:         len(s.sb.Fake.Events()),
		Deliveries:     s.sb.Fake.DeliveryStats().Attempts,
	}
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM inbound_events), (SELECT COUNT(*) FROM outbox),
		(SELECT COALESCE(SUM(version), 0) FROM users)`).Scan(&a.Inbound, &a.Outbox, &a.Versions)
	return a, err
}

// quietWindow is how long a converged system is watched for further
// activity: longer than the longest retry tier (1 s) plus the relay's poll
// interval, so a message parked in a delay queue would have run by then.
const quietWindow = 2 * time.Second

// watchQuiet samples the system's activity over quietWindow and describes
// whatever moved (nil: nothing did).
func (s *system) watchQuiet(ctx context.Context) ([]string, error) {
	before, err := s.activity(ctx)
	if err != nil {
		return nil, err
	}
	reqs, events := len(s.sb.Fake.Requests()), before.Events
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	end := time.After(quietWindow)
	after := before
	for done := false; !done; {
		select {
		case <-ticker.C:
		case <-end:
			done = true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if after, err = s.activity(ctx); err != nil {
			return nil, err
		}
	}
	if after == before {
		return nil, nil
	}
	moved := []string{fmt.Sprintf("activity over %v after convergence: before %+v, after %+v", quietWindow, before, after)}
	for _, r := range s.sb.Fake.Requests()[reqs:] {
		moved = append(moved, fmt.Sprintf("Stripe request %s %s key=%q status %d", r.Method, r.Path, r.IdempotencyKey, r.Status))
	}
	for _, e := range s.sb.Fake.Events()[events:] {
		moved = append(moved, fmt.Sprintf("Stripe event %s %s on %s key=%q", e.ID, e.Type, e.CustomerID, e.IdempotencyKey))
	}
	rows, err := s.db.QueryContext(ctx, `SELECT event_id, event_type, outcome, COALESCE(user_id, '') FROM inbound_events
		ORDER BY received_at DESC LIMIT ?`, after.Inbound-before.Inbound)
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var id, typ, outcome, user string
			if rows.Scan(&id, &typ, &outcome, &user) == nil {
				moved = append(moved, fmt.Sprintf("inbound event %s %s → %s (user %s)", id, typ, outcome, user))
			}
		}
	}
	return moved, nil
}

// settled is the outcome of settle.
type settled struct {
	converged bool          // MySQL and the sandbox agree (see check)
	took      time.Duration // how long convergence took after the load
	apiOK     bool          // every live user's GET /v1/users/{id} agrees and is synced
	quiet     bool          // nothing moved over quietWindow afterwards
	report    *report
}

// settle waits (up to timeout) for the system to converge, checks every
// live user through the API, then watches that nothing moves any more. It
// reports every failure on t, with the diff of what did not converge.
func (s *system) settle(t *testing.T, timeout time.Duration) settled {
	t.Helper()
	var out settled
	out.report, out.took = s.awaitConverged(timeout)
	out.converged = out.report.ok()
	if !out.converged {
		t.Errorf("not converged within %v:\n%s", timeout, out.report)
		return out
	}
	t.Logf("converged in %v: %d live users, %d deleted, %d Stripe customers",
		out.took.Round(time.Millisecond), out.report.live, out.report.deleted, out.report.customers)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bad, err := s.checkAPI(ctx)
	switch {
	case err != nil:
		t.Errorf("checking users through the API: %v", err)
	case len(bad) > 0:
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("… and %d more", len(bad)-20))
		}
		t.Errorf("the API disagrees with the converged state:\n%s", strings.Join(bad, "\n"))
	default:
		out.apiOK = true
	}
	moved, err := s.watchQuiet(ctx)
	switch {
	case err != nil:
		t.Errorf("watching for oscillation: %v", err)
	case len(moved) > 0:
		if len(moved) > 40 {
			moved = append(moved[:40], fmt.Sprintf("… and %d more", len(moved)-40))
		}
		t.Errorf("the system kept moving after it converged (oscillation):\n%s", strings.Join(moved, "\n"))
	default:
		if r := s.check(ctx); !r.ok() {
			t.Errorf("converged, then drifted:\n%s", r)
		} else {
			out.quiet = true
		}
	}
	return out
}
