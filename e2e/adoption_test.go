package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tandemctl runs the real tandemctl with the system's configuration and
// returns its stdout, stderr and exit code.
func (s *system) tandemctl(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	cmd := exec.CommandContext(ctx, bin("tandemctl"), args...)
	cmd.Env = s.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		s.t.Fatalf("tandemctl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// tandemctlJSON runs tandemctl with -json, requires exit 0 and decodes its
// document into v.
func (s *system) tandemctlJSON(ctx context.Context, v any, args ...string) {
	s.t.Helper()
	out, errs, code := s.tandemctl(ctx, append(args, "-json")...)
	if code != 0 {
		s.t.Fatalf("tandemctl %v: exit %d\nstderr: %s\nstdout: %s", args, code, errs, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("tandemctl %v -json: %v\n%s", args, err, out)
	}
}

// sandboxCustomer is a customer as GET /_sandbox/customers lists it.
type sandboxCustomer struct {
	ID       string            `json:"id"`
	Email    string            `json:"email"`
	Name     string            `json:"name"`
	Metadata map[string]string `json:"metadata"`
	Deleted  bool              `json:"deleted"`
}

func (s *system) sandboxCustomers(ctx context.Context) []sandboxCustomer {
	s.t.Helper()
	code, body, err := s.dashboard(ctx, http.MethodGet, "/_sandbox/customers", nil)
	if err != nil || code != http.StatusOK {
		s.t.Fatalf("GET /_sandbox/customers: %d %v %s", code, err, body)
	}
	var all []sandboxCustomer
	if err := json.Unmarshal(body, &all); err != nil {
		s.t.Fatalf("GET /_sandbox/customers: %v", err)
	}
	return slices.DeleteFunc(all, func(c sandboxCustomer) bool { return c.Deleted })
}

type backfillDoc struct {
	Link, Create, Ambiguous, Update int
	Linked, Created, Updated        int
	Conflicts                       []struct {
		UserID     string   `json:"user_id"`
		Candidates []string `json:"candidates"`
	}
	Failed []json.RawMessage
}

type reconcileDoc struct {
	Checked int `json:"checked"`
	InSync  int `json:"in_sync"`
	Drift   []struct {
		UserID   string   `json:"user_id"`
		RemoteID string   `json:"remote_id"`
		Fields   []string `json:"fields"`
	} `json:"drift"`
	UnlinkedRemote []struct {
		RemoteID string `json:"remote_id"`
		Email    string `json:"email"`
	} `json:"unlinked_remote"`
	MissingRemote []json.RawMessage `json:"missing_remote"`
	Repaired      int               `json:"repaired"`
}

// The adoption story of issue 11: a team with 1,000 users and a Stripe
// account that already holds 610 customers adopts Tandem while its api,
// worker and webhook run.
func TestAdoption(t *testing.T) {
	skipShort(t)
	t.Parallel()
	s := newSystem(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// 1,000 users imported without announcing them.
	var file strings.Builder
	email := func(i int) string { return fmt.Sprintf("adopt-%04d@example.com", i) }
	for i := range 1000 {
		fmt.Fprintf(&file, `{"email":%q,"name":"User %d"}`+"\n", email(i), i)
	}
	path := filepath.Join(t.TempDir(), "users.jsonl")
	if err := os.WriteFile(path, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var imported struct{ Imported int }
	s.tandemctlJSON(ctx, &imported, "import", "-file", path, "-no-push")
	if imported.Imported != 1000 {
		t.Fatalf("imported %d users, want 1000", imported.Imported)
	}

	// The account from before Tandem, made silently: 400 customers with
	// 400 users' emails (some in another case), 20 holding the emails of
	// 10 other users twice each, 190 unrelated.
	var seed []map[string]any
	for i := range 400 {
		e := email(i)
		if i%8 == 0 {
			e = strings.ToUpper(e[:5]) + e[5:]
		}
		seed = append(seed, map[string]any{"email": e, "name": "Stripe name", "silent": true})
	}
	for i := 400; i < 410; i++ {
		seed = append(seed, map[string]any{"email": email(i), "name": "Twin A", "silent": true},
			map[string]any{"email": email(i), "name": "Twin B", "silent": true})
	}
	for i := range 190 {
		seed = append(seed, map[string]any{"email": fmt.Sprintf("stranger-%03d@example.com", i), "name": "Stranger", "silent": true})
	}
	code, body, err := s.dashboard(ctx, http.MethodPost, "/_sandbox/customers", seed)
	if err != nil || code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("seeding the sandbox: %d %v %s", code, err, body)
	}
	before := map[string]string{} // email key → id of the customers with one user's email
	for _, c := range s.sandboxCustomers(ctx) {
		before[strings.ToLower(c.Email)] = c.ID
	}

	var plan backfillDoc
	s.tandemctlJSON(ctx, &plan, "backfill", "-provider", provider, "-dry-run")
	if plan.Link != 400 || plan.Create != 590 || plan.Ambiguous != 10 {
		t.Fatalf("backfill -dry-run planned link %d, create %d, ambiguous %d; want 400, 590, 10", plan.Link, plan.Create, plan.Ambiguous)
	}
	if n := len(s.sandboxCustomers(ctx)); n != 610 {
		t.Fatalf("a dry run changed the sandbox: %d customers", n)
	}

	var done backfillDoc
	s.tandemctlJSON(ctx, &done, "backfill", "-provider", provider)
	if done.Linked != 400 || done.Created != 590 || len(done.Conflicts) != 10 || len(done.Failed) != 0 {
		t.Fatalf("backfill: linked %d, created %d, conflicts %d, failed %d; want 400, 590, 10, 0",
			done.Linked, done.Created, len(done.Conflicts), len(done.Failed))
	}
	users := map[string]string{} // email → user id
	rows, err := s.db.QueryContext(ctx, `SELECT id, email FROM users WHERE deleted_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, e string
		if err := rows.Scan(&id, &e); err != nil {
			t.Fatal(err)
		}
		users[e] = id
	}
	rows.Close()
	tagged := map[string][]sandboxCustomer{}
	for _, c := range s.sandboxCustomers(ctx) {
		if tag := c.Metadata["tandem_user_id"]; tag != "" {
			tagged[tag] = append(tagged[tag], c)
		}
	}
	for i := range 1000 {
		id, cs := users[email(i)], tagged[users[email(i)]]
		switch {
		case i < 400 && (len(cs) != 1 || cs[0].ID != before[email(i)]):
			t.Errorf("user %d: customers %+v, want the existing %s reused", i, cs, before[email(i)])
		case i >= 400 && i < 410:
			if len(cs) != 0 {
				t.Errorf("ambiguous user %d got customers %+v", i, cs)
			}
			var status, lastErr string
			if err := s.db.QueryRowContext(ctx, `SELECT status, COALESCE(last_error, '') FROM provider_links WHERE user_id = ? AND provider = ?`,
				id, provider).Scan(&status, &lastErr); err != nil {
				t.Fatalf("link of ambiguous user %d: %v", i, err)
			}
			var twins []string
			for _, c := range s.sandboxCustomers(ctx) {
				if c.Email == email(i) {
					twins = append(twins, c.ID)
				}
			}
			if status != "conflict" || len(twins) != 2 || !strings.Contains(lastErr, twins[0]) || !strings.Contains(lastErr, twins[1]) {
				t.Errorf("ambiguous user %d: link %s %q, candidates %v", i, status, lastErr, twins)
			}
		case i >= 410 && len(cs) != 1:
			t.Errorf("user %d: %d customers, want exactly one", i, len(cs))
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// A second run finds nothing to do.
	var again backfillDoc
	s.tandemctlJSON(ctx, &again, "backfill", "-provider", provider)
	if again.Linked != 0 || again.Created != 0 || again.Updated != 0 || len(again.Failed) != 0 || len(again.Conflicts) != 10 {
		t.Fatalf("second backfill: %+v", again)
	}

	// Reconcile: no drift; the strangers (and the unresolved twins) belong
	// to no user.
	var rec reconcileDoc
	s.tandemctlJSON(ctx, &rec, "reconcile", "-provider", provider)
	unlinked := map[string]bool{}
	for _, u := range rec.UnlinkedRemote {
		unlinked[u.Email] = true
	}
	strangers := 0
	for e := range unlinked {
		if strings.HasPrefix(e, "stranger-") {
			strangers++
		}
	}
	if len(rec.Drift) != 0 || rec.Checked != 990 || strangers != 190 || len(rec.UnlinkedRemote) != 210 || len(rec.MissingRemote) != 0 {
		t.Fatalf("reconcile: checked %d, drift %d, unlinked %d (strangers %d), missing %d; want 990, 0, 210 (190), 0",
			rec.Checked, len(rec.Drift), len(rec.UnlinkedRemote), strangers, len(rec.MissingRemote))
	}

	// 25 customers changed silently (no webhook): reconcile finds them,
	// -repair settles them, a further reconcile finds none.
	changed := map[string]bool{}
	for i := 0; i < 25; i++ {
		id := tagged[users[email(i*30)]][0].ID
		changed[id] = true
		if code, body, err := s.dashboard(ctx, http.MethodPost, "/_sandbox/customers/"+id,
			map[string]any{"name": "Drifted", "silent": true}); err != nil || code != http.StatusOK {
			t.Fatalf("silent edit: %d %v %s", code, err, body)
		}
	}
	s.tandemctlJSON(ctx, &rec, "reconcile", "-provider", provider)
	if len(rec.Drift) != 25 {
		t.Fatalf("reconcile after 25 silent edits reports %d drifted users", len(rec.Drift))
	}
	for _, d := range rec.Drift {
		if !changed[d.RemoteID] || !slices.Equal(d.Fields, []string{"name"}) {
			t.Errorf("drift %+v: not one of the edited customers, or not just its name", d)
		}
	}
	s.tandemctlJSON(ctx, &rec, "reconcile", "-provider", provider, "-repair")
	if rec.Repaired != 25 {
		t.Fatalf("reconcile -repair repaired %d, want 25", rec.Repaired)
	}
	// The repair is pushed by the worker: wait for Stripe to hold the
	// users again.
	err = waitFor(ctx, 100*time.Millisecond, func() bool {
		for _, c := range s.sandboxCustomers(ctx) {
			if changed[c.ID] && c.Name == "Drifted" {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("the repairs never reached the sandbox: %v", err)
	}
	s.tandemctlJSON(ctx, &rec, "reconcile", "-provider", provider)
	if len(rec.Drift) != 0 {
		t.Fatalf("reconcile after -repair still reports %d drifted users: %+v", len(rec.Drift), rec.Drift)
	}
}
