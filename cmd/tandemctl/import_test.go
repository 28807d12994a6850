package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/testutil"
)

// ctl runs tandemctl against the database dsn and returns its exit code,
// stdout and stderr.
func ctl(t *testing.T, dsn string, args ...string) (int, string, string) {
	t.Helper()
	return ctlEnv(t, dsn, nil, args...)
}

// ctlEnv is ctl with more environment variables.
func ctlEnv(t *testing.T, dsn string, more []string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	environ := append([]string{"TANDEM_CONFIG=", "TANDEM_MYSQL_DSN=" + dsn, "TANDEM_LOG_LEVEL=error"}, more...)
	code := run(context.Background(), args, environ, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestImportCommand(t *testing.T) {
	t.Parallel()
	_, dsn := testutil.NewStore(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	require.NoError(t, os.WriteFile(good, []byte(`{"email":"a@example.com","name":"A"}
{"email":"b@example.com","name":"B","metadata":{"plan":"pro"}}
`), 0o600))

	code, out, errs := ctl(t, dsn, "import", "-json", "-no-push", "-file", good)
	require.Equal(t, exitOK, code, errs)
	var doc struct {
		Imported int  `json:"imported"`
		Rows     int  `json:"rows"`
		Pushed   bool `json:"pushed"`
		Refused  []struct {
			Line   int    `json:"line"`
			Reason string `json:"reason"`
		} `json:"refused"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	require.Equal(t, 2, doc.Imported)
	require.False(t, doc.Pushed)
	require.NotNil(t, doc.Refused)
	require.Empty(t, doc.Refused)
	require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"))

	// Again: every row is refused (the emails are taken), exit 1, one line
	// on stderr, the report on stdout.
	code, out, errs = ctl(t, dsn, "import", "-json", "-file", good)
	require.Equal(t, exitError, code)
	require.Equal(t, "tandemctl import: 2 of 2 rows refused (the others are imported)\n", errs)
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	require.Zero(t, doc.Imported)
	require.Len(t, doc.Refused, 2)
	require.Equal(t, 2, doc.Refused[1].Line)
	require.Contains(t, doc.Refused[1].Reason, "belongs to the live user")

	// Human output, with pushing.
	mixed := filepath.Join(dir, "mixed.csv")
	require.NoError(t, os.WriteFile(mixed, []byte("email,name\nc@example.com,C\nbad,D\n"), 0o600))
	code, out, _ = ctl(t, dsn, "import", "-file", mixed)
	require.Equal(t, exitError, code)
	require.Contains(t, out, "2 rows, 1 users imported (announced to the workers), 1 refused")
	require.Contains(t, out, "line 3: email: must be a plain ASCII email address")
	require.Equal(t, int64(1), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"))

	// Bad usage and bad files: one line, nothing written, no report.
	malformed := filepath.Join(dir, "bad.csv")
	require.NoError(t, os.WriteFile(malformed, []byte("e@example.com,E\nf@example.com,\"F\n"), 0o600))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import"}, exitUsage, "-file is required"},
		{[]string{"import", "-file", filepath.Join(dir, "users.xml")}, exitUsage, `unknown format "xml"`},
		{[]string{"import", "-file", filepath.Join(dir, "missing.csv")}, exitError, "no such file"},
		{[]string{"import", "-file", malformed}, exitError, "malformed file: " + malformed + ":2: CSV:"},
	} {
		code, out, errs := ctl(t, dsn, tc.args...)
		require.Equal(t, tc.code, code, tc.args)
		require.Contains(t, errs, tc.want, tc.args)
		require.Equal(t, 1, strings.Count(errs, "\n"), "not one line: %q", errs)
		require.Empty(t, out, tc.args)
	}
	require.Equal(t, int64(3), testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users"))
}
