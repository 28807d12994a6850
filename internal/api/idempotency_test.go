package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
)

func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := map[string]any{"email": "idem@example.com", "name": "Idem"}
	key := map[string]string{"Idempotency-Key": "order-42"}

	first := e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: key})
	require.Equal(t, 201, first.Status, "%s", first.Body)
	require.Empty(t, first.Header.Get("Idempotent-Replayed"))

	for range 3 {
		again := e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: key})
		require.Equal(t, 201, again.Status)
		require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
		require.JSONEq(t, string(first.Body), string(again.Body))
		require.Equal(t, first.Header.Get("ETag"), again.Header.Get("ETag"))
	}
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox"))

	// Same key, different body: 422, nothing created.
	p := requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Header: key,
		Body: map[string]any{"email": "other@example.com", "name": "Other"}}), 422)
	require.Contains(t, p["detail"], "different request body")
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))

	// The key is scoped to the token: another token's same key is a new request
	// (which here hits the taken email).
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, NoAuth: true,
		Header: map[string]string{"Idempotency-Key": "order-42", "Authorization": "Bearer other-token"}}), 409)

	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, Invalid: true,
		Header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}), 400)
}

func TestIdempotentConflictIsReplayed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.create("dup@example.com", "Dup")
	body := map[string]any{"email": "dup@example.com", "name": "Again"}
	key := map[string]string{"Idempotency-Key": "k-409"}
	first := requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: key}), 409)
	again := e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: key})
	require.Equal(t, first, requireProblem(t, again, 409))
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))

	// A validation failure is not stored: fixing nothing still gives 422,
	// and the key stays free for a corrected request with the same body.
	bad := map[string]any{"email": "bad", "name": "x"}
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: bad, Invalid: true, Header: map[string]string{"Idempotency-Key": "k-422"}}), 422)
	require.EqualValues(t, 0, e.count("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = 'k-422'"))
}

func TestIdempotencyKeyInFlightAndAbandoned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := []byte(`{"email":"slow@example.com","name":"Slow"}`)
	scope := sha256.Sum256(append(sha256Sum(token), "POST /v1/users"...))
	reqHash := sha256.Sum256(body)
	k := store.IdempotencyKey{Scope: hex.EncodeToString(scope[:]), Key: "in-flight", RequestHash: hex.EncodeToString(reqHash[:])}

	// Another request holds the key and is still running.
	first, stored, err := e.store.BeginIdempotent(context.Background(), k, time.Hour, time.Minute)
	require.NoError(t, err)
	require.Nil(t, stored)
	require.False(t, first.Claim.IsZero())
	p := requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: map[string]string{"Idempotency-Key": "in-flight"}}), 409)
	require.Contains(t, p["detail"], "in progress")
	require.EqualValues(t, 0, e.count("SELECT COUNT(*) FROM users"))

	// Its process died: once the claim is older than the abandon period, a
	// retry takes the key over and runs.
	_, err = e.store.DB().Exec("UPDATE idempotency_keys SET created_at = created_at - INTERVAL 2 MINUTE")
	require.NoError(t, err)
	r := e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: map[string]string{"Idempotency-Key": "in-flight"}})
	require.Equal(t, 201, r.Status, "%s", r.Body)

	// The first claimant was only slow, not dead: when it finishes, it
	// stores nothing, releases nothing and commits nothing.
	ctx := context.Background()
	require.ErrorIs(t, e.store.FinishIdempotent(ctx, first, 500, []byte(`{}`)), store.ErrIdempotencyLost)
	require.NoError(t, e.store.ReleaseIdempotent(ctx, first))
	_, err = e.store.CreateUser(ctx, store.NewUser{Email: "late@example.com", Name: "Late"},
		&store.SaveResponse{Key: first, Status: 201, Render: func(store.User) ([]byte, error) { return []byte(`{}`), nil }})
	require.ErrorIs(t, err, store.ErrIdempotencyLost)
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"), "the late create was rolled back")
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox"))

	r2 := e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: map[string]string{"Idempotency-Key": "in-flight"}})
	require.Equal(t, "true", r2.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(r.Body), string(r2.Body))

	// An expired key is forgotten: the same key works as new.
	_, err = e.store.DB().Exec("UPDATE idempotency_keys SET expires_at = NOW(6) - INTERVAL 1 SECOND")
	require.NoError(t, err)
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, Header: map[string]string{"Idempotency-Key": "in-flight"}}), 409) // email now taken: ran anew
}

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
