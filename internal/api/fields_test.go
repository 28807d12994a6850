package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// fieldsOf lists the fields named in a 422's errors.
func fieldsOf(p map[string]any) []string {
	var fields []string
	errs, _ := p["errors"].([]any)
	for _, fe := range errs {
		fields = append(fields, fe.(map[string]any)["field"].(string))
	}
	return fields
}

// TestEmailsThatFoldDifferentlyAreRefused: MariaDB's LOWER() folds the
// Kelvin sign into k and İ into i, so such an address would squat the ASCII
// one (its live_email is the same); invisible and control characters make
// look-alikes. Emails are ASCII, so the database's fold and the
// application's agree.
func TestEmailsThatFoldDifferentlyAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, email := range []string{
		"\u212Aate@example.com",    // KELVIN SIGN: LOWER() gives kate@example.com
		"\u0130nga@example.com",    // LATIN CAPITAL LETTER I WITH DOT ABOVE: LOWER() gives inga@
		"kate\u202E@example.com",   // RIGHT-TO-LEFT OVERRIDE
		"ka\u200Bte@example.com",   // ZERO WIDTH SPACE
		"kate@exa\u200Dmple.com",   // ZERO WIDTH JOINER in the domain
		"kate\x00@example.com",     // NUL
		"jos\u00e9@example.com",    // a non-ASCII local part
		"kate@b\u00fccher.example", // a U-label: write it as its A-label
		`"kate smith"@example.com`, // quoted local part
		"kate@[192.0.2.1]",         // IP literal
		"kate@example.123",         // numeric top-level label
		".kate@example.com",        // dot-atom: no leading dot
		"ka..te@example.com",       // nor two dots
		"kate@-example.com",        // label starting with a hyphen
		strings.Repeat("k", 65) + "@example.com",
	} {
		r := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": email, "name": "Kate"}, Invalid: true})
		p := requireProblem(t, r, 422)
		require.Equal(t, []string{"email"}, fieldsOf(p), "%q", email)
	}
	u := e.create("kate@example.com", "Kate")
	e.create("inga@example.com", "Inga")
	e.create("o'brien+tag@xn--bcher-kva.example", "A-label domain")
	path := "/v1/users/" + u["id"].(string)
	p := requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"email": "\u212Aate@example.com"}, Invalid: true}), 422)
	require.Equal(t, []string{"email"}, fieldsOf(p))
	require.EqualValues(t, 3, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 1, e.count("SELECT version FROM users WHERE id = ?", u["id"]))
}

// TestRowsFromBeforeTheEmailRuleStillWork: a user stored before the rule
// (here a Kelvin-sign email) can be read, patched in other fields, and
// deleted, which frees the ASCII address it squatted.
func TestRowsFromBeforeTheEmailRuleStillWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("legacy@example.com", "Legacy")
	id := u["id"].(string)
	testutil.Exec(t, e.dsn, "UPDATE users SET email = '\u212Aate@example.com' WHERE id = '"+id+"'")
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users WHERE live_email = 'kate@example.com'"))

	path := "/v1/users/" + id
	got := e.do(req{Method: "GET", Path: path})
	require.Equal(t, 200, got.Status, "%s", got.Body)
	require.Equal(t, "\u212Aate@example.com", got.json(t)["email"])
	r := e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "Legacy 2", "metadata": map[string]string{"k": "v"}}})
	require.Equal(t, 200, r.Status, "%s", r.Body)

	// A metadata key stored before the text rule can be removed, not set.
	testutil.Exec(t, e.dsn, `UPDATE users SET metadata = '{"k":"v","bad\\u202ekey":"x"}' WHERE id = '`+id+`'`)
	got = e.do(req{Method: "GET", Path: path})
	require.Equal(t, "x", got.json(t)["metadata"].(map[string]any)["bad\u202ekey"], "%s", got.Body)
	p := requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"metadata": map[string]any{"bad\u202ekey": "y"}}, Invalid: true}), 422)
	require.Equal(t, []string{"metadata.bad\u202ekey"}, fieldsOf(p))
	p = requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"metadata": map[string]any{strings.Repeat("\u202e", 41): nil}}, Invalid: true}), 422)
	require.Len(t, fieldsOf(p), 1)
	r = e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"metadata": map[string]any{"bad\u202ekey": nil}}})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	require.Equal(t, map[string]any{"k": "v"}, r.json(t)["metadata"])

	require.Equal(t, 204, e.do(req{Method: "DELETE", Path: path}).Status)
	e.create("kate@example.com", "Kate")
}

// TestTextsRefuseControlAndFormatCharacters: names, metadata keys and
// metadata values follow one rule.
func TestTextsRefuseControlAndFormatCharacters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("texts@example.com", "Texts")
	path := "/v1/users/" + u["id"].(string)
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"RLO in name", map[string]any{"name": "Ada \u202Eecalevol"}, "name"},
		{"zero width space in name", map[string]any{"name": "A\u200Bda"}, "name"},
		{"BOM in name", map[string]any{"name": "\uFEFFAda"}, "name"},
		{"line separator in name", map[string]any{"name": "Ada\u2028Lovelace"}, "name"},
		{"NUL in metadata key", map[string]any{"metadata": map[string]string{"k\x00": "v"}}, "metadata.k\x00"},
		{"newline in metadata key", map[string]any{"metadata": map[string]string{"a\nb": "v"}}, "metadata.a\nb"},
		{"RLO in metadata value", map[string]any{"metadata": map[string]string{"k": "x\u202Ey"}}, "metadata.k"},
		{"NUL in metadata value", map[string]any{"metadata": map[string]string{"k": "x\x00y"}}, "metadata.k"},
		{"DEL in metadata value", map[string]any{"metadata": map[string]string{"k": "x\x7fy"}}, "metadata.k"},
		{"C1 control in metadata value", map[string]any{"metadata": map[string]string{"k": "x\u0085y"}}, "metadata.k"},
	}
	for _, tc := range cases {
		create := map[string]any{"email": "new@example.com", "name": "New"}
		for k, v := range tc.body {
			create[k] = v
		}
		p := requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: create, Invalid: true}), 422)
		require.Equal(t, []string{tc.field}, fieldsOf(p), "POST: %s", tc.name)
		p = requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: tc.body, Invalid: true}), 422)
		require.Equal(t, []string{tc.field}, fieldsOf(p), "PATCH: %s", tc.name)
	}
	// Joiners are letters' business (Persian, Indic scripts, emoji sequences).
	r := e.do(req{Method: "PATCH", Path: path, Body: map[string]any{"name": "می\u200cخواهم \U0001F469\u200D\U0001F4BB", "metadata": map[string]string{"note": "ok\u200d"}}})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 2, e.count("SELECT version FROM users"))
}

// TestBodiesWithInvalidUTF8OrDuplicateKeysAre400: invalid bytes would
// silently become U+FFFD, and of two equal keys one would silently win.
func TestBodiesWithInvalidUTF8OrDuplicateKeysAre400(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("bodies@example.com", "Bodies")
	path := "/v1/users/" + u["id"].(string)
	for _, body := range []string{
		"{\"email\":\"a@example.com\",\"name\":\"A\xff\"}",                            // invalid byte in a value
		"{\"email\":\"a@example.com\",\"name\":\"A\",\"metadata\":{\"k\xc3\":\"v\"}}", // truncated sequence in a key
		"{\"email\":\"a@example.com\",\"name\":\"\xed\xa0\x80\"}",                     // an encoded surrogate
		`{"email":"a@example.com","name":"A\ud800"}`,                                  // a lone surrogate escape
		`{"email":"a@example.com","name":"A\udc00\ud800"}`,                            // reversed pair
		`{"email":"a@example.com","name":"A","name":"B"}`,                             // duplicate key
		`{"email":"a@example.com","name":"A","n\u0061me":"B"}`,                        // the same key, escaped
		`{"email":"a@example.com","name":"A","metadata":{"k":"1","k":"2"}}`,           // duplicate nested key
	} {
		requireProblem(t, e.do(req{Method: "POST", Path: "/v1/users", Body: body, Invalid: true}), 400)
		requireProblem(t, e.do(req{Method: "PATCH", Path: path, Body: body, Invalid: true}), 400)
	}
	// Valid escapes are fine: a surrogate pair, an escaped backslash before u.
	r := e.do(req{Method: "PATCH", Path: path, Body: `{"name":"A \ud83d\ude00 \\ud800","metadata":{"k":{"x":1}}}`, Invalid: true})
	p := requireProblem(t, r, 422) // metadata values must be strings: the body itself was fine
	require.Equal(t, []string{"metadata"}, fieldsOf(p))
	r = e.do(req{Method: "PATCH", Path: path, Body: `{"name":"A \ud83d\ude00 \\ud800"}`})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	require.Equal(t, "A \U0001F600 \\ud800", r.json(t)["name"])
	require.EqualValues(t, 1, e.count("SELECT COUNT(*) FROM users"))
	require.EqualValues(t, 2, e.count("SELECT version FROM users"))
}

// TestValidationErrorsAreCapped: a body of a thousand bad metadata keys gets
// the first errors and a count, not a 422 as large as the body.
func TestValidationErrorsAreCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	md := map[string]string{}
	for i := range 5000 {
		md[fmt.Sprintf("tandem_%04d", i)] = "v"
	}
	r := e.do(req{Method: "POST", Path: "/v1/users", Body: map[string]any{"email": "bad", "name": "", "metadata": md}, Invalid: true})
	p := requireProblem(t, r, 422)
	fields := fieldsOf(p)
	require.Len(t, fields, 20)
	require.Equal(t, []string{"email", "metadata", "metadata.tandem_0000"}, fields[:3])
	require.EqualValues(t, 5003-20, p["errors_omitted"])
	require.Less(t, len(r.Body), 4096)
	require.EqualValues(t, 0, e.count("SELECT COUNT(*) FROM users"))
}

// TestOmittedValidationErrorsAreLogged: what the answer leaves out, the
// request's log keeps (the count at info, the errors at debug).
func TestOmittedValidationErrorsAreLogged(t *testing.T) {
	t.Parallel()
	st, _ := testutil.NewStore(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	app := api.New(st, st, api.Config{Tokens: []string{token}, Providers: []string{"stripe"}}, log, ops.NewRegistry())
	md := map[string]string{}
	for i := range 30 {
		md[fmt.Sprintf("tandem_%02d", i)] = "v"
	}
	body, err := json.Marshal(map[string]any{"email": "a@example.com", "name": "A", "metadata": md})
	require.NoError(t, err)
	hreq := httptest.NewRequest("POST", "/v1/users", bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+token)
	resp, err := app.Test(hreq, -1)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 422, resp.StatusCode)
	out := logs.String()
	require.Contains(t, out, `"omitted":10`)
	for i := 20; i < 30; i++ {
		require.Contains(t, out, fmt.Sprintf(`"field":"metadata.tandem_%02d"`, i))
	}
}

// TestEmailFilterDoesNotFoldOntoAnotherAddress: the list filter compares
// with LOWER() in MariaDB, which would answer kate@… to a search for
// \u212Aate@… (Kelvin sign). Emails are ASCII, so a non-ASCII filter is a
// 400, not somebody else's account.
func TestEmailFilterDoesNotFoldOntoAnotherAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := e.create("kate@example.com", "Kate")
	r := e.do(req{Method: "GET", Path: "/v1/users?email=KATE@Example.com"})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	data := r.json(t)["data"].([]any)
	require.Len(t, data, 1)
	require.Equal(t, u["id"], data[0].(map[string]any)["id"])
	for _, q := range []string{"%E2%84%AAate@example.com", "%C4%B0nga@example.com", "kate%00@example.com", "kate%E2%80%8B@example.com"} {
		requireProblem(t, e.do(req{Method: "GET", Path: "/v1/users?email=" + q}), 400)
	}
}
