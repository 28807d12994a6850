package userimport_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/userimport"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func users(t *testing.T, dsn string) int64 {
	return testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users")
}

// reasons maps refused lines to their reasons.
func reasons(rep userimport.Report) map[int]string {
	m := map[int]string{}
	for _, r := range rep.Refused {
		m[r.Line] = r.Reason
	}
	return m
}

func TestJSONLinesAreValidatedLikeTheAPI(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	owner, err := st.CreateUser(ctx, store.NewUser{Email: "owner@example.com", Name: "Owner"}, nil)
	require.NoError(t, err)

	lines := []string{
		"\ufeff" + `{"email":"ada@example.com","name":"Ada","phone":"+44 20 7946 0000","metadata":{"plan":"pro"}}`, // 1 (a BOM)
		``,                                    // 2: blank, skipped
		`{"email":"not-an-email","name":"X"}`, // 3
		`{"email":"b@example.com","name":"B","nickname":"bee"}`,                  // 4: unknown field
		`{"email":"c@example.com","name":"C"`,                                    // 5: bad JSON
		`{"email":"d@example.com","name":"D\ud800"}`,                             // 6: lone surrogate
		`{"email":"e@example.com","name":"E","name":"E2"}`,                       // 7: a key twice
		`{"email":"f@example.com","name":"F","metadata":{"tandem_user_id":"x"}}`, // 8: reserved key
		`{"email":"ADA@example.com","name":"Ada again"}`,                         // 9: same as line 1
		`{"email":"Owner@Example.com","name":"Squatter"}`,                        // 10: a live user's
		`["g@example.com","G"]`,                                                  // 11: not an object
		"\t{\"email\":\"h@example.com\",\"name\":\"H\"}  \r",                     // 12: spaces, CRLF: fine
		`{"email":"i@example.com","name":"\u202eevil"}`,                          // 13: bidi override
		`{"email":"j@example.com","name":"J","phone":null,"metadata":null}`,      // 14: nulls, as the API takes them
	}
	path := write(t, "users.jsonl", strings.Join(lines, "\n")+"\n")
	before := users(t, dsn)

	rep, err := userimport.Run(ctx, st, path, userimport.Options{Format: userimport.JSONLines, Announce: true, BatchRows: 2})
	require.NoError(t, err)
	require.Equal(t, 13, rep.Rows)
	require.Equal(t, 3, rep.Imported)
	got := reasons(rep)
	require.Len(t, got, 10)
	for line, want := range map[int]string{
		3:  "email: must be a plain ASCII email address",
		4:  "nickname: unknown field",
		5:  "not valid JSON",
		6:  "not valid UTF-8",
		7:  `names the key "name" twice`,
		8:  "metadata.tandem_user_id",
		9:  "email: the same address as line 1",
		10: "email: belongs to the live user " + owner.ID,
		11: "must be a JSON object",
		13: "name:",
	} {
		require.Contains(t, got[line], want, "line %d", line)
	}
	require.Equal(t, before+3, users(t, dsn))
	require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users WHERE name IN ('Ada again', 'Squatter')"))
	require.Equal(t, int64(3), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE origin = ?", store.OriginImport))
	var md string
	require.NoError(t, st.DB().QueryRow("SELECT metadata FROM users WHERE email = 'ada@example.com'").Scan(&md))
	require.JSONEq(t, `{"plan":"pro"}`, md)
	for i := 1; i < len(rep.Refused); i++ {
		require.Less(t, rep.Refused[i-1].Line, rep.Refused[i].Line, "refusals are in line order")
	}
}

func TestCSVWithAHeaderInAnyOrderAndQuotedFields(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	csv := "\ufeffName,Email,Metadata,Phone\r\n" + // 1
		`"King, Ada",ada@example.com,"{""plan"":""pro""}",+1 555 0100` + "\r\n" + // 2
		`"Multi` + "\n" + `line",ml@example.com,,` + "\n" + // 3-4: a name with a newline: refused by the name rule
		`Bob,bob@example.com,{not json},` + "\n" + // 5
		`Carol,carol@example.com,,` + "\n" + // 6
		`Dan,dan@example.com` + "\n" + // 7: too few columns
		"Eve,eve@example.com,\"{\"\"k\"\":\"\"\xff\"\"}\",\n" + // 8: invalid UTF-8
		`Fay,fay@example.com,"{""a"":1}",` + "\n" // 9: metadata values must be strings
	path := write(t, "users.csv", csv)

	rep, err := userimport.Run(ctx, st, path, userimport.Options{Format: userimport.CSV, Announce: false})
	require.NoError(t, err)
	require.Equal(t, 7, rep.Rows)
	require.Equal(t, 2, rep.Imported)
	got := reasons(rep)
	require.Len(t, got, 5)
	require.Contains(t, got[3], "name:")
	require.Contains(t, got[5], "metadata: must be a JSON object")
	require.Contains(t, got[7], "has 2 columns; the header has 4")
	require.Contains(t, got[8], "metadata: not valid UTF-8")
	require.Contains(t, got[9], "metadata")
	require.Equal(t, int64(2), users(t, dsn))
	require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"), "-no-push wrote outbox rows")
	var name, phone, md string
	require.NoError(t, st.DB().QueryRow("SELECT name, phone, metadata FROM users WHERE email = 'ada@example.com'").Scan(&name, &phone, &md))
	require.Equal(t, "King, Ada", name)
	require.Equal(t, "+1 555 0100", phone)
	require.JSONEq(t, `{"plan":"pro"}`, md)
}

func TestCSVWithoutAHeader(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	path := write(t, "u.csv", "a@example.com,A\nb@example.com,B,+1 555\nc@example.com,C,,\"{\"\"x\"\":\"\"y\"\"}\"\nd@example.com\n")
	rep, err := userimport.Run(context.Background(), st, path, userimport.Options{Format: userimport.CSV, Announce: true})
	require.NoError(t, err)
	require.Equal(t, 3, rep.Imported)
	require.Equal(t, []userimport.Refusal{{Line: 4, Reason: "has 1 columns; want email,name[,phone[,metadata]]"}}, rep.Refused)
	require.Equal(t, int64(3), users(t, dsn))
}

// A file that cannot be read as its format is refused whole, even when the
// fault comes after thousands of good rows.
func TestAMalformedFileWritesNothing(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	var b strings.Builder
	for i := range 3000 {
		b.WriteString("u" + strconv.Itoa(i) + "@example.com,User\n")
	}
	b.WriteString(`bad@example.com,"unterminated` + "\n")
	for _, tc := range []struct {
		name, content string
		format        userimport.Format
		want          string
	}{
		{"late-quote.csv", b.String(), userimport.CSV, "users.csv:3001"},
		{"array.jsonl", `[{"email":"a@example.com","name":"A"}]`, userimport.JSONLines, "a JSON array, not JSON Lines"},
		{"header.csv", "email,name,age\na@example.com,A,3\n", userimport.CSV, `unknown column "age"`},
		{"header2.csv", "name,phone\nA,1\n", userimport.CSV, "email and name are required"},
	} {
		path := write(t, "users.csv", tc.content)
		_, err := userimport.Run(context.Background(), st, path, userimport.Options{Format: tc.format, Announce: true, BatchRows: 100})
		require.ErrorIs(t, err, userimport.ErrMalformed, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.Zero(t, users(t, dsn), tc.name)
	}
}

func TestALineOverTheAPIBodyLimitIsRefused(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	big := `{"email":"big@example.com","name":"` + strings.Repeat("x", 3<<20) + `"}`
	path := write(t, "u.jsonl", big+"\n"+`{"email":"ok@example.com","name":"OK"}`)
	rep, err := userimport.Run(context.Background(), st, path, userimport.Options{Format: userimport.JSONLines})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Imported)
	require.Len(t, rep.Refused, 1)
	require.Equal(t, 1, rep.Refused[0].Line)
	require.Contains(t, rep.Refused[0].Reason, "body limit")
	require.Equal(t, int64(1), users(t, dsn))
}

func TestFormatOf(t *testing.T) {
	for _, tc := range []struct{ path, name, want string }{
		{"a.jsonl", "", "jsonl"}, {"a.NDJSON", "", "jsonl"}, {"a.csv", "", "csv"}, {"a.txt", "csv", "csv"}, {"a", "JSONL", "jsonl"},
	} {
		f, err := userimport.FormatOf(tc.path, tc.name)
		require.NoError(t, err, tc.path)
		require.Equal(t, tc.want, string(f), tc.path)
	}
	for _, tc := range []struct{ path, name string }{{"a.json", ""}, {"a", ""}, {"a.csv", "xml"}} {
		_, err := userimport.FormatOf(tc.path, tc.name)
		require.ErrorIs(t, err, userimport.ErrUnknownFormat, tc.path)
	}
}

// failingStore writes batches until the failAt-th, which fails.
type failingStore struct {
	failAt, calls int
}

func (f *failingStore) ImportUsers(_ context.Context, rows []store.ImportRow, _ bool) ([]store.User, []store.ImportTaken, error) {
	f.calls++
	if f.calls == f.failAt {
		return nil, nil, errors.New("MySQL went away")
	}
	return make([]store.User, len(rows)), nil, nil
}

// A failure of the database stops the run; the report counts the whole
// batches written before it, and no batch is attempted after it.
func TestADatabaseFailureStopsTheRun(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 100 {
		b.WriteString(`{"email":"f` + strconv.Itoa(i) + `@example.com","name":"F"}` + "\n")
	}
	path := write(t, "u.jsonl", b.String())
	fs := &failingStore{failAt: 3}
	rep, err := userimport.Run(context.Background(), fs, path, userimport.Options{Format: userimport.JSONLines, BatchRows: 10})
	require.ErrorContains(t, err, "rows from line 21: MySQL went away")
	require.Equal(t, 20, rep.Imported)
	require.Equal(t, 2, rep.Batches)
	require.LessOrEqual(t, fs.calls, 3, "batches were written after the failure")
}
