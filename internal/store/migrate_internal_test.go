package store

import (
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEveryAlterStatesAlgorithmAndLock: an ALTER TABLE that states neither
// lets MariaDB pick a table copy that blocks writes, silently. Every ALTER
// of an up migration states ALGORITHM, and LOCK unless INSTANT; only the
// migrations listed in copyingMigrations may say ALGORITHM=COPY. Every migration has a check
// for recovering an interrupted run.
func TestEveryAlterStatesAlgorithmAndLock(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(migrationFS, "migrations/*.up.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	alter := regexp.MustCompile(`(?is)\bALTER\s+TABLE\b[^;]*;`)
	for _, name := range names {
		body, err := fs.ReadFile(migrationFS, name)
		require.NoError(t, err)
		version, err := strconv.ParseUint(strings.SplitN(strings.TrimPrefix(name, "migrations/"), "_", 2)[0], 10, 32)
		require.NoError(t, err)
		require.Contains(t, migrationApplied, uint(version), "%s: add its check to migrationApplied", name)
		for _, stmt := range alter.FindAllString(stripComments(string(body)), -1) {
			upper := strings.ToUpper(stmt)
			require.Regexp(t, `ALGORITHM\s*=\s*(INSTANT|INPLACE|NOCOPY|COPY)`, upper, "%s: %s", name, stmt)
			if !regexp.MustCompile(`ALGORITHM\s*=\s*INSTANT`).MatchString(upper) {
				// INSTANT changes only metadata: it never copies nor
				// blocks writes beyond the metadata lock.
				require.Regexp(t, `LOCK\s*=\s*(NONE|SHARED|EXCLUSIVE)`, upper, "%s: %s", name, stmt)
			}
			if regexp.MustCompile(`ALGORITHM\s*=\s*COPY`).MatchString(upper) {
				require.Contains(t, copyingMigrations, uint(version), "%s copies a table: list it in copyingMigrations", name)
			}
		}
	}
}

func stripComments(sql string) string {
	var out []string
	for _, l := range strings.Split(sql, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
