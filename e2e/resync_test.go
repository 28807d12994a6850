package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// Someone edits a synced customer by hand and no webhook tells Tandem (the
// sandbox's deliveries are paused): Tandem still believes Stripe holds the
// user. POST /v1/users/{id}/sync, and then tandemctl resync, push Tandem's
// state over the edit.
func TestResyncRepairsASilentRemoteEdit(t *testing.T) {
	skipShort(t)
	s := newSystem(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	status, body, err := s.client.call(ctx, "POST", "/v1/users", map[string]any{"email": "grace@example.com", "name": "Grace Hopper"})
	if err != nil || status != 201 {
		t.Fatalf("creating the user: %d %s %v", status, body, err)
	}
	id := jsonField(t, body, "id")
	var remote string
	if err := waitFor(ctx, 20*time.Millisecond, func() bool {
		u, _, err := s.client.getUser(ctx, id)
		if err == nil && u.Sync[provider].Status == "synced" && u.Sync[provider].RemoteID != nil {
			remote = *u.Sync[provider].RemoteID
			return true
		}
		return false
	}); err != nil {
		t.Fatalf("the user was never synced: %v", err)
	}
	s.sb.Fake.PauseDelivery() // the edits below are never announced
	name := func() string {
		c, _ := s.sb.Fake.Customer(remote)
		return c.Name
	}
	repaired := func(how string) {
		t.Helper()
		if err := waitFor(ctx, 20*time.Millisecond, func() bool { return name() == "Grace Hopper" }); err != nil {
			t.Fatalf("%s: the customer still holds %q: %v", how, name(), err)
		}
		if err := waitFor(ctx, 20*time.Millisecond, func() bool {
			u, _, err := s.client.getUser(ctx, id)
			return err == nil && u.Sync[provider].Status == "synced"
		}); err != nil {
			t.Fatalf("%s: the user is not synced again: %v", how, err)
		}
	}

	for i, how := range []string{"POST /v1/users/{id}/sync", "tandemctl resync"} {
		edited := fmt.Sprintf("Edited by hand %d", i)
		if _, err := s.sb.Fake.DashboardUpdate(remote, func(c *stripefake.Customer) { c.Name = edited }); err != nil {
			t.Fatal(err)
		}
		u, _, err := s.client.getUser(ctx, id)
		if err != nil || u.Sync[provider].Status != "synced" {
			t.Fatalf("Tandem noticed the silent edit: %+v %v", u.Sync, err)
		}
		if i == 0 {
			status, body, err := s.client.call(ctx, "POST", "/v1/users/"+id+"/sync?provider="+provider, nil)
			if err != nil || status != 202 {
				t.Fatalf("%s: %d %s %v", how, status, body, err)
			}
		} else {
			cmd := exec.CommandContext(ctx, bin("tandemctl"), "resync", "-provider", provider, id)
			cmd.Env = s.api.env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", how, err, out)
			}
		}
		repaired(how)
	}
	if n := len(s.sb.Fake.CustomersWithMetadata("tandem_user_id", id)); n != 1 {
		t.Fatalf("the sandbox holds %d customers of the user, want 1", n)
	}

	// A user that does not exist: 404, and tandemctl exits 1.
	missing := "0193a8b0-0000-7000-8000-000000000000"
	if status, _, _ := s.client.call(ctx, "POST", "/v1/users/"+missing+"/sync?provider="+provider, nil); status != 404 {
		t.Fatalf("resync of a missing user: %d, want 404", status)
	}
	cmd := exec.CommandContext(ctx, bin("tandemctl"), "resync", "-provider", provider, missing)
	cmd.Env = s.api.env
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("tandemctl resync of a missing user: %v, want exit 1\n%s", err, out)
	}
}

// jsonField reads a string field of a JSON object.
func jsonField(t *testing.T, body []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	s, _ := m[name].(string)
	if s == "" {
		t.Fatalf("no %s in %s", name, body)
	}
	return s
}
