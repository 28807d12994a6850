package api_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
)

// GET /v1/users/{id}/history: the user's changes and pushes, newest first,
// in cursor pages; POST /v1/users/{id}/sync queues a push even of a synced
// user; GET /v1/users?sync_status filters by the link's status.
func TestHistoryResyncAndStatusFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u := e.create("hist@example.com", "Hist")
	id := u["id"].(string)
	other := e.create("other@example.com", "Other")["id"].(string)
	r := e.do(req{Method: "PATCH", Path: "/v1/users/" + id, Body: map[string]any{"name": "Hist 2"}})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	msg := "Stripe refused the email"
	_ = e.store.SyncLocked(ctx, id, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkFailed, LastError: &msg}, errors.New("400")
	})

	r = e.do(req{Method: "GET", Path: "/v1/users/" + id + "/history?limit=2"})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	page := r.json(t)
	data := page["data"].([]any)
	require.Len(t, data, 2)
	push := data[0].(map[string]any)
	require.Equal(t, "push", push["kind"])
	require.Equal(t, "failed", push["outcome"])
	require.Equal(t, msg, push["error"])
	require.Equal(t, "stripe", push["provider"])
	require.NotEmpty(t, page["next_cursor"])
	r = e.do(req{Method: "GET", Path: "/v1/users/" + id + "/history?cursor=" + page["next_cursor"].(string)})
	require.Equal(t, 200, r.Status)
	rest := r.json(t)["data"].([]any)
	require.Len(t, rest, 1)
	require.Equal(t, "created", rest[0].(map[string]any)["outcome"])
	require.Equal(t, "api", rest[0].(map[string]any)["origin"])

	// The filter.
	r = e.do(req{Method: "GET", Path: "/v1/users?sync_status=failed&provider=stripe"})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	list := r.json(t)["data"].([]any)
	require.Len(t, list, 1)
	require.Equal(t, id, list[0].(map[string]any)["id"])
	r = e.do(req{Method: "GET", Path: "/v1/users?sync_status=pending"})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	list = r.json(t)["data"].([]any)
	require.Len(t, list, 1)
	require.Equal(t, other, list[0].(map[string]any)["id"])

	// A resync makes the failed user pending again, with one outbox row.
	outbox := e.count("SELECT COUNT(*) FROM outbox WHERE user_id = ?", id)
	r = e.do(req{Method: "POST", Path: "/v1/users/" + id + "/sync?provider=stripe"})
	require.Equal(t, 202, r.Status, "%s", r.Body)
	require.Equal(t, outbox+1, e.count("SELECT COUNT(*) FROM outbox WHERE user_id = ? AND origin = 'resync'", id)+outbox)
	got := e.do(req{Method: "GET", Path: "/v1/users/" + id}).json(t)
	require.Equal(t, "pending", got["sync"].(map[string]any)["stripe"].(map[string]any)["status"])
	r = e.do(req{Method: "GET", Path: "/v1/users/" + id + "/history?limit=1"})
	require.Equal(t, "resync", r.json(t)["data"].([]any)[0].(map[string]any)["kind"])
}

// Bad input is a 400, an unknown user a 404, no token a 401; nothing changes.
func TestOperateBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create("bad@example.com", "Bad")["id"].(string)
	before := e.count("SELECT COUNT(*) FROM outbox")
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/users?sync_status=broken", 400},
		{"GET", "/v1/users?sync_status=failed&provider=nope", 400},
		{"GET", "/v1/users?provider=stripe", 400},
		{"GET", "/v1/users/" + id + "/history?cursor=garbage", 400},
		{"GET", "/v1/users/" + id + "/history?limit=0", 400},
		{"GET", "/v1/users/0193a8b0-0000-7000-8000-000000000000/history", 404},
		{"POST", "/v1/users/0193a8b0-0000-7000-8000-000000000000/sync?provider=stripe", 404},
		{"POST", "/v1/users/" + id + "/sync?provider=nope", 400},
	} {
		r := e.do(req{Method: tc.method, Path: tc.path, Invalid: true})
		requireProblem(t, r, tc.status)
	}
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users/" + id + "/sync", NoAuth: true}), 401)
	requireProblem(t, e.do(req{Method: "GET", Path: "/v1/users/" + id + "/history", NoAuth: true}), 401)
	require.Equal(t, before, e.count("SELECT COUNT(*) FROM outbox"), "a refused request wrote an outbox row")
}
