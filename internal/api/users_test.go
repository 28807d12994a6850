package api_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/testutil"
)

func TestCreateUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{
		"email": "Ada@Example.com", "name": "Ada Lovelace", "phone": "+44 20 7946 0000",
		"metadata": map[string]string{"plan": "pro"}}})
	require.Equal(t, 201, r.Status, "%s", r.Body)
	u := r.json(t)
	id, err := uuid.Parse(u["id"].(string))
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), id.Version())
	require.Equal(t, "Ada@Example.com", u["email"])
	require.EqualValues(t, 1, u["version"])
	require.Equal(t, `"1"`, r.Header.Get("ETag"))
	require.Equal(t, map[string]any{"plan": "pro"}, u["metadata"])
	require.Equal(t, "pending", u["sync"].(map[string]any)["stripe"].(map[string]any)["status"])

	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox WHERE user_id = ? AND type = 'user.created' AND version = 1 AND origin = 'api' AND published_at IS NULL", u["id"]))

	got := e.do(req{Method: "GET", Path: "/v1/users/" + u["id"].(string)})
	require.Equal(t, 200, got.Status)
	require.Equal(t, u["email"], got.json(t)["email"])
	require.Equal(t, u["created_at"], got.json(t)["created_at"])
}

func TestCreateUserRejectsBadInputAndChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.create("taken@example.com", "Taken")

	many := map[string]string{}
	for i := range 51 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"malformed json", `{"email":`, 400, ""},
		{"empty body", ``, 400, ""},
		{"not an object", `[1,2]`, 422, ""},
		{"missing email", map[string]any{"name": "x"}, 422, "email"},
		{"bad email", map[string]any{"email": "not-an-email", "name": "x"}, 422, "email"},
		{"email with display name", map[string]any{"email": "Ada <ada@example.com>", "name": "x"}, 422, "email"},
		{"email not a string", map[string]any{"email": 42, "name": "x"}, 422, "email"},
		{"long email", map[string]any{"email": strings.Repeat("a", 250) + "@example.com", "name": "x"}, 422, "email"},
		{"missing name", map[string]any{"email": "a@example.com"}, 422, "name"},
		{"blank name", map[string]any{"email": "a@example.com", "name": "   "}, 422, "name"},
		{"long name", map[string]any{"email": "a@example.com", "name": strings.Repeat("n", 257)}, 422, "name"},
		{"control char in name", map[string]any{"email": "a@example.com", "name": "a\x00b"}, 422, "name"},
		{"bad phone", map[string]any{"email": "a@example.com", "name": "x", "phone": "call me"}, 422, "phone"},
		{"unknown field", map[string]any{"email": "a@example.com", "name": "x", "admin": true}, 422, "admin"},
		{"51 metadata keys", map[string]any{"email": "a@example.com", "name": "x", "metadata": many}, 422, "metadata"},
		{"long metadata key", map[string]any{"email": "a@example.com", "name": "x", "metadata": map[string]string{strings.Repeat("k", 41): "v"}}, 422, "metadata." + strings.Repeat("k", 41)},
		{"long metadata value", map[string]any{"email": "a@example.com", "name": "x", "metadata": map[string]string{"k": strings.Repeat("v", 501)}}, 422, "metadata.k"},
		{"reserved metadata key", map[string]any{"email": "a@example.com", "name": "x", "metadata": map[string]string{"tandem_user_id": "x"}}, 422, "metadata.tandem_user_id"},
		{"non-string metadata", map[string]any{"email": "a@example.com", "name": "x", "metadata": map[string]any{"n": 1}}, 422, "metadata"},
		{"email taken, other case", map[string]any{"email": "TAKEN@example.com", "name": "x"}, 409, ""},
	}
	for _, tc := range cases {
		r := e.do(req{Method: "POST", Path: "/v1/users", Body: tc.body, Invalid: true})
		p := requireProblem(t, r, tc.status)
		if tc.field != "" {
			errs, _ := p["errors"].([]any)
			var fields []string
			for _, fe := range errs {
				fields = append(fields, fe.(map[string]any)["field"].(string))
			}
			require.Contains(t, fields, tc.field, tc.name)
		}
	}
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox"))
}

func TestOversizeBodyIs413AndChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("big@example.com", "Big")
	huge := `{"email":"x@example.com","name":"` + strings.Repeat("a", 2<<20) + `"}`
	// The server refuses it from Content-Length, without keeping it, and
	// the client reads the 413 (no retry).
	expect := map[string]string{"Expect": "100-continue"}
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: huge, Invalid: true, Header: expect}), 413)
	requireProblem(t, e.do(req{Method: "PATCH", Path: "/v1/users/" + u["id"].(string), Body: huge, Invalid: true, Header: expect}), 413)
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox"))
	require.EqualValues(t, 1, e.count("SELECT version FROM users"))
}

func TestGetUserErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	requireProblem(t, e.do(req{Method: "GET", Path: "/v1/users/" + uuid.Must(uuid.NewV7()).String()}), 404)
	requireProblem(t, e.do(req{Method: "GET", Path: "/v1/users/not-a-uuid"}), 404)
}

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, h := range []map[string]string{
		nil,
		{"Authorization": "Bearer wrong"},
		{"Authorization": "Basic " + token},
		{"Authorization": "Bearer"},
		{"Authorization": "Bearer " + token + "x"},
	} {
		r := e.do(req{Method: "GET", Path: "/v1/users", NoAuth: true, Header: h})
		requireProblem(t, r, 401)
		require.Contains(t, r.Header.Get("WWW-Authenticate"), "Bearer")
		r = e.do(req{Method: "POST", Path: "/v1/users", NoAuth: true, Header: h, Body: map[string]any{"email": "a@example.com", "name": "a"}})
		requireProblem(t, r, 401)
	}
	require.EqualValues(t, 0, e.count("SELECT COUNT(*) FROM users"))
	// Either configured token works; operational routes need none.
	require.Equal(t, 200, e.do(req{Method: "GET", Path: "/v1/users", NoAuth: true, Header: map[string]string{"Authorization": "bearer other-token"}}).Status)
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.yaml"} {
		require.Equal(t, 200, e.do(req{Method: "GET", Path: p, NoAuth: true}).Status, p)
	}
}

func TestPatchUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "p@example.com", "name": "P",
		"metadata": map[string]string{"a": "1", "b": "2"}}}).json(t)
	path := "/v1/users/" + u["id"].(string)

	r := e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "Pat", "metadata": map[string]any{"a": nil, "c": "3"}}})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	got := r.json(t)
	require.Equal(t, "Pat", got["name"])
	require.Equal(t, "p@example.com", got["email"])
	require.Equal(t, map[string]any{"b": "2", "c": "3"}, got["metadata"])
	require.EqualValues(t, 2, got["version"])
	require.Equal(t, `"2"`, r.Header.Get("ETag"))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox WHERE user_id = ? AND type = 'user.updated' AND version = 2", u["id"]))

	// A patch that alters nothing bumps nothing and writes no outbox row.
	r = e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "Pat", "metadata": map[string]any{"b": "2"}}})
	require.Equal(t, 200, r.Status)
	require.EqualValues(t, 2, r.json(t)["version"])
	require.EqualValues(t, 2, e.count("SELECT COUNT(*) FROM outbox WHERE user_id = ?", u["id"]))

	// phone null clears; metadata null clears.
	r = e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"phone": "+1 555 0100"}})
	require.Equal(t, "+1 555 0100", r.json(t)["phone"])
	r = e.do(req{Method: "PATCH", Path: path, Body: `{"phone":null,"metadata":null}`})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	require.Equal(t, "", r.json(t)["phone"])
	require.Equal(t, map[string]any{}, r.json(t)["metadata"])
	require.EqualValues(t, 4, r.json(t)["version"])

	// If-Match forms.
	require.Equal(t, 200, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "A"}, Header: map[string]string{"If-Match": `"4"`}}).Status)
	require.Equal(t, 200, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "B"}, Header: map[string]string{"If-Match": `W/"5"`}}).Status)
	require.Equal(t, 200, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "C"}, Header: map[string]string{"If-Match": `*`}}).Status)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "D"}, Header: map[string]string{"If-Match": `"5"`}}), 412)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "D"}, Header: map[string]string{"If-Match": `5`}}), 400)
	require.Equal(t, "C", e.do(req{Method: "GET", Path: path}).json(t)["name"])
}

func TestPatchUserErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.create("other@example.com", "Other")
	md := map[string]string{}
	for i := range 50 {
		md[fmt.Sprintf("k%d", i)] = "v"
	}
	u := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "me@example.com", "name": "Me", "metadata": md}}).json(t)
	path := "/v1/users/" + u["id"].(string)

	requireProblem(t, e.do(req{Method: "PATCH", Path: "/v1/users/" + uuid.Must(uuid.NewV7()).String(), Body: map[string]any{"name": "x"}}), 404)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"email": "OTHER@example.com"}}), 409)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: `{"name":`, Invalid: true}), 400)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: `{"email":null}`, Invalid: true}), 422)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"email": "bad"}, Invalid: true}), 422)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"nope": 1}, Invalid: true}), 422)
	// The 51st key only breaks the limit once merged with the stored 50.
	p := requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"metadata": map[string]string{"extra": "x"}}}), 422)
	require.Contains(t, fmt.Sprint(p["errors"]), "at most 50 keys")

	got := e.do(req{Method: "GET", Path: path}).json(t)
	require.EqualValues(t, 1, got["version"])
	require.Equal(t, "me@example.com", got["email"])
	require.Len(t, got["metadata"], 50)
	require.EqualValues(t, 2, e.count("SELECT COUNT(*) FROM outbox"))
}

func TestDeleteUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("gone@example.com", "Gone")
	path := "/v1/users/" + u["id"].(string)

	requireProblem(t, e.do(req{Method: "DELETE", Path: path, Header: map[string]string{"If-Match": `"7"`}}), 412)
	r := e.do(req{Method: "DELETE", Path: path, Header: map[string]string{"If-Match": `"1"`}})
	require.Equal(t, 204, r.Status, "%s", r.Body)
	require.Empty(t, r.Body)
	requireProblem(t, e.do(req{Method: "GET", Path: path}), 404)
	requireProblem(t, e.do(req{Method: "DELETE", Path: path}), 404)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "x"}}), 404)

	// Soft: the row stays, with version 2 and a user.deleted event to sync.
	require.EqualValues(t, 2, e.count("SELECT version FROM users WHERE id = ? AND deleted_at IS NOT NULL", u["id"]))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox WHERE user_id = ? AND type = 'user.deleted' AND version = 2", u["id"]))
	// The email can be used again, and the deleted user is not listed.
	again := e.create("GONE@example.com", "Again")
	list := e.do(req{Method: "GET", Path: "/v1/users"}).json(t)["data"].([]any)
	require.Len(t, list, 1)
	require.Equal(t, again["id"], list[0].(map[string]any)["id"])
}

func TestListUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, e.create(fmt.Sprintf("u%d@example.com", i), "U")["id"].(string))
	}
	r := e.do(req{Method: "GET", Path: "/v1/users?limit=2"})
	require.Equal(t, 200, r.Status)
	page := r.json(t)
	require.Len(t, page["data"], 2)
	require.NotEmpty(t, page["next_cursor"])
	require.Equal(t, ids[0], page["data"].([]any)[0].(map[string]any)["id"])
	require.Equal(t, "pending", page["data"].([]any)[0].(map[string]any)["sync"].(map[string]any)["stripe"].(map[string]any)["status"])

	all := e.do(req{Method: "GET", Path: "/v1/users"}).json(t)
	require.Len(t, all["data"], 5)
	require.Equal(t, "", all["next_cursor"])

	byEmail := e.do(req{Method: "GET", Path: "/v1/users?email=U3@EXAMPLE.com"}).json(t)
	require.Len(t, byEmail["data"], 1)
	require.Equal(t, ids[3], byEmail["data"].([]any)[0].(map[string]any)["id"])

	for _, q := range []string{"limit=0", "limit=101", "limit=abc", "cursor=%%%", "cursor=bm9wZQ", "cursor=" + ids[0]} {
		requireProblem(t, e.do(req{Method: "GET", Path: "/v1/users?" + q, Invalid: true}), 400)
	}
}

// TestPaginationWithConcurrentInserts walks 1,000 users page by page while
// more users are inserted between pages: every original user is seen exactly
// once, in id order.
func TestPaginationWithConcurrentInserts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	original := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				u := e.create(fmt.Sprintf("orig%d@example.com", i), "O")
				mu.Lock()
				original[u["id"].(string)] = true
				mu.Unlock()
			}
		}()
	}
	for i := range 1000 {
		work <- i
	}
	close(work)
	wg.Wait()
	require.Len(t, original, 1000)

	seen := map[string]int{}
	last := ""
	cursor := ""
	for page := 0; ; page++ {
		e.create(fmt.Sprintf("between%d@example.com", page), "B")
		r := e.do(req{Method: "GET", Path: "/v1/users?limit=37&cursor=" + cursor})
		require.Equal(t, 200, r.Status, "%s", r.Body)
		body := r.json(t)
		for _, item := range body["data"].([]any) {
			id := item.(map[string]any)["id"].(string)
			require.Greater(t, id, last, "ids out of order")
			last = id
			seen[id]++
		}
		cursor = body["next_cursor"].(string)
		if cursor == "" {
			break
		}
		require.Less(t, page, 100, "pagination does not end")
	}
	for id := range original {
		require.Equal(t, 1, seen[id], "user %s seen %d times", id, seen[id])
	}
	for id, n := range seen {
		require.Equal(t, 1, n, "user %s repeated", id)
	}
}

// TestOutboxIsAtomicWithTheUser forces the outbox insert to fail after the
// user insert succeeded: neither may be committed.
func TestOutboxIsAtomicWithTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("kept@example.com", "Kept")
	path := "/v1/users/" + u["id"].(string)
	trigger := "CREATE TRIGGER outbox_fails BEFORE INSERT ON outbox FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected outbox failure'"
	testutil.Exec(t, e.dsn, trigger)

	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "lost@example.com", "name": "Lost"}}), 500)
	requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "Changed"}}), 500)
	requireProblem(t, e.do(req{Method: "DELETE", Path: path}), 500)

	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox"))
	got := e.do(req{Method: "GET", Path: path}).json(t)
	require.Equal(t, "Kept", got["name"])
	require.EqualValues(t, 1, got["version"])

	testutil.Exec(t, e.dsn, "DROP TRIGGER outbox_fails")
	require.Equal(t, 201, e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "lost@example.com", "name": "Lost"}}).Status)
}

func TestConcurrentPatchesWithIfMatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("race@example.com", "Race")
	path := "/v1/users/" + u["id"].(string)
	for version := 1; version <= 3; version++ {
		statuses := make(chan int, 16)
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": fmt.Sprintf("v%d-w%d", version, i)},
					Header: map[string]string{"If-Match": fmt.Sprintf(`"%d"`, version)}})
				statuses <- r.Status
			}()
		}
		wg.Wait()
		close(statuses)
		counts := map[int]int{}
		for s := range statuses {
			counts[s]++
		}
		require.Equal(t, map[int]int{200: 1, 412: 15}, counts, "version %d", version)
	}
	require.EqualValues(t, 4, e.do(req{Method: "GET", Path: path}).json(t)["version"])
	require.EqualValues(t, 3, e.count("SELECT COUNT(*) FROM outbox WHERE type = 'user.updated'"))
}

func TestConcurrentCreatesWithTheSameEmail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	statuses := make(chan int, 20)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			email := "Same@Example.com"
			if i%2 == 1 {
				email = strings.ToLower(email)
			}
			statuses <- e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": email, "name": "S"}}).Status
		}()
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for s := range statuses {
		counts[s]++
	}
	require.Equal(t, map[int]int{201: 1, 409: 19}, counts)
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM outbox"))
}

func TestRequestIDAndHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do(req{Method: "GET", Path: "/v1/users", Header: map[string]string{"X-Request-Id": "abc-123"}})
	require.Equal(t, "abc-123", r.Header.Get("X-Request-Id"))
	require.NotEmpty(t, e.do(req{Method: "GET", Path: "/v1/users"}).Header.Get("X-Request-Id"))
	require.Equal(t, `{"mysql":"ok"}`, string(e.do(req{Method: "GET", Path: "/readyz"}).Body))
	m := string(e.do(req{Method: "GET", Path: "/metrics"}).Body)
	require.Contains(t, m, `tandem_http_requests_total{method="GET",route="/v1/users",status="200"}`)
	require.Equal(t, http.StatusNotFound, e.do(req{Method: "GET", Path: "/nope"}).Status)
}

// TestLargestMetadataIsStored: 50 keys of 500 characters that take 3 bytes
// each in UTF-8 (and 6 escaped in JSON) are valid and fit the column.
func TestLargestMetadataIsStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	md := map[string]any{}
	for i := range 50 {
		if i%2 == 0 {
			md[fmt.Sprintf("key%02d", i)] = strings.Repeat("€", 500)
		} else {
			md[fmt.Sprintf("key%02d", i)] = strings.Repeat("<", 500)
		}
	}
	r := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "big-md@example.com", "name": "Big", "metadata": md}})
	require.Equal(t, 201, r.Status, "%s", r.Body)
	var u map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &u))
	got := e.do(req{Method: "GET", Path: "/v1/users/" + u["id"].(string)})
	require.Equal(t, 200, got.Status, "%s", got.Body)
	var back map[string]any
	require.NoError(t, json.Unmarshal(got.Body, &back))
	require.Equal(t, md, back["metadata"])
}

// TestCompressedBodiesAre415: Fiber would inflate them past the body limit.
func TestCompressedBodiesAre415(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, err := zw.Write([]byte(`{"email":"zip@example.com","name":"` + strings.Repeat("a", 3<<20) + `"}`))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.Less(t, zipped.Len(), 64<<10, "small on the wire")
	enc := map[string]string{"Content-Encoding": "gzip"}
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: zipped.Bytes(), Invalid: true, Header: enc}), 415)
	u := e.create("plain@example.com", "Plain")
	requireProblem(t, e.do(req{Method: "PATCH", Path: "/v1/users/" + u["id"].(string), Body: zipped.Bytes(), Invalid: true, Header: enc}), 415)
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
}

func TestIdempotencyKeyAndIfMatchAreChecked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := map[string]any{"email": "key@example.com", "name": "Key"}
	requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, Invalid: true,
		Header: map[string]string{"Idempotency-Key": "k\xff\xfe"}}), 400)
	require.EqualValues(t, 0, e.count("SELECT COUNT(*) FROM users"))

	u := e.create("key@example.com", "Key")
	path := "/v1/users/" + u["id"].(string)
	for value, status := range map[string]int{`"0"`: 412, `W/"0"`: 412, `"99999999999999999999"`: 412, `"+1"`: 400, `"-1"`: 400, `"1 "`: 400, `1`: 400} {
		r := e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "K"}, Invalid: status == 400,
			Header: map[string]string{"If-Match": value}})
		requireProblem(t, r, status)
	}
	got := e.do(req{Method: "GET", Path: path})
	require.Contains(t, string(got.Body), `"version":1`)
}
