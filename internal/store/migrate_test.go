package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// logLines is a slog destination that tests can wait on.
type logLines struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{}, 1)} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.b.Write(p)
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the log holds s, failing t after 30 s.
func (l *logLines) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(l.String(), s) {
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("never logged %q; log:\n%s", s, l.String())
		}
	}
}

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func schemaVersion(t *testing.T, dsn string) (version int64, dirty bool) {
	t.Helper()
	require.NoError(t, openDB(t, dsn).QueryRow("SELECT version, dirty FROM schema_migrations").Scan(&version, &dirty))
	return version, dirty
}

func dbName(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := store.ParseDSN(dsn)
	require.NoError(t, err)
	return cfg.DBName
}

// TestMigrateWaitsForAnotherProcesssMigration: a replica that starts while
// another one migrates waits for the migration lock (logging that it
// does), beyond golang-migrate's own 10 s, then finds the schema current;
// past LockWait it gives up with an error that says why.
func TestMigrateWaitsForAnotherProcesssMigration(t *testing.T) {
	t.Parallel()
	dsn := testutil.NewDatabase(t)
	ctx := context.Background()
	// Another process migrating holds golang-migrate's advisory lock.
	lockName, err := database.GenerateAdvisoryLockId(dbName(t, dsn) + ":schema_migrations")
	require.NoError(t, err)
	holder, err := openDB(t, dsn).Conn(ctx)
	require.NoError(t, err)
	defer holder.Close()
	var got int
	require.NoError(t, holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", lockName).Scan(&got))
	require.Equal(t, 1, got)

	err = store.MigrateWith(ctx, dsn, store.MigrateOptions{LockPoll: 50 * time.Millisecond, LockWait: 200 * time.Millisecond})
	require.ErrorContains(t, err, "another process has been migrating")

	logs := newLogLines()
	done := make(chan error, 1)
	go func() {
		done <- store.MigrateWith(ctx, dsn, store.MigrateOptions{Logger: logs.logger(), LockPoll: 50 * time.Millisecond})
	}()
	logs.waitFor(t, "waiting for another process's schema migration")
	select {
	case err := <-done:
		t.Fatalf("migrated while another process held the lock: %v", err)
	default:
	}
	_, err = holder.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", lockName)
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("never migrated after the lock was released")
	}
	v, dirty := schemaVersion(t, dsn)
	require.False(t, dirty)
	require.GreaterOrEqual(t, v, int64(4))
}

// TestMigrateRecoversAnInterruptedMigration: a process killed during a
// migration leaves the version dirty. The next start finds whether the
// migration applied (then marks it done) or not (then runs it again),
// instead of refusing to start until an operator forces the version.
func TestMigrateRecoversAnInterruptedMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, applied := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			t.Parallel()
			dsn := testutil.NewDatabase(t)
			// Killed during migration 4, the last applied one.
			require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 4}))
			if !applied {
				testutil.Exec(t, dsn, "ALTER TABLE users DROP COLUMN changed_by")
			}
			testutil.Exec(t, dsn, "UPDATE schema_migrations SET version = 4, dirty = 1")
			require.NoError(t, store.Migrate(ctx, dsn))
			v, dirty := schemaVersion(t, dsn)
			require.False(t, dirty)
			require.GreaterOrEqual(t, v, int64(6))
			require.EqualValues(t, 1, testutil.QueryInt(t, dsn, `SELECT COUNT(*) FROM information_schema.COLUMNS
				WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users' AND COLUMN_NAME = 'changed_by'`))
		})
	}
	// Interrupted between the two statements of migration 2: the table
	// exists, the column does not.
	dsn := testutil.NewDatabase(t)
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 2}))
	testutil.Exec(t, dsn, "ALTER TABLE provider_links DROP COLUMN metadata_keys", "UPDATE schema_migrations SET dirty = 1")
	require.NoError(t, store.Migrate(ctx, dsn))
	_, dirty := schemaVersion(t, dsn)
	require.False(t, dirty)
}

// TestMigrationGivesWayToOpenTransactions: an ALTER TABLE waits for every
// transaction open on its table, and every query on the table queues
// behind it (MariaDB's lock_wait_timeout is a day). Tandem's DDL gives up
// after DDLLockWait, lets the queue through, and tries again until it
// succeeds.
func TestMigrationGivesWayToOpenTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testutil.NewDatabase(t)
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 3}))
	db := openDB(t, dsn)
	// A long transaction has read users (it holds a metadata lock on it).
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	var n int
	require.NoError(t, tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM users").Scan(&n))

	logs := newLogLines()
	done := make(chan error, 1)
	go func() {
		done <- store.MigrateWith(ctx, dsn, store.MigrateOptions{Logger: logs.logger(),
			DDLLockWait: time.Second, DDLRetryPause: 50 * time.Millisecond})
	}()
	logs.waitFor(t, "retrying")
	// Between attempts, other queries on users are served.
	qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	require.NoError(t, db.QueryRowContext(qctx, "SELECT COUNT(*) FROM users").Scan(&n), "a query on users queued behind the ALTER")
	require.NoError(t, tx.Rollback())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the migration never completed")
	}
	v, dirty := schemaVersion(t, dsn)
	require.False(t, dirty)
	require.GreaterOrEqual(t, v, int64(4))
}

// TestCopyingMigrationIsRefusedOnALargeTable: migration 3 copies users,
// blocking writes while it does; on a table above CopyRowLimit it fails
// at once with directions, unless AllowCopy.
func TestCopyingMigrationIsRefusedOnALargeTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testutil.NewDatabase(t)
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 2}))
	var rows []string
	for i := range 40 {
		rows = append(rows, fmt.Sprintf("('%036d', 'u%d@example.com', 'U', '', '{}', 1, NOW(6), NOW(6))", i, i))
	}
	testutil.Exec(t, dsn, "INSERT INTO users (id, email, name, phone, metadata, version, created_at, updated_at) VALUES "+
		strings.Join(rows, ","), "ANALYZE TABLE users")
	err := store.MigrateWith(ctx, dsn, store.MigrateOptions{CopyRowLimit: 10})
	require.ErrorContains(t, err, "migration 3 copies the whole users table")
	require.ErrorContains(t, err, "Upgrading a large table")
	v, dirty := schemaVersion(t, dsn)
	require.Equal(t, int64(2), v)
	require.False(t, dirty)
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{CopyRowLimit: 10, AllowCopy: true}))
	v, _ = schemaVersion(t, dsn)
	require.GreaterOrEqual(t, v, int64(4))
}

// TestStatusIndexMigration: migration 13 adds provider_links_status, its
// down file drops it, and a run interrupted before or after its ALTER is
// recovered by looking for the index.
func TestStatusIndexMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testutil.NewDatabase(t)
	columns := func() string {
		var cols sql.NullString
		require.NoError(t, openDB(t, dsn).QueryRow(`SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)
			FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()
			AND TABLE_NAME = 'provider_links' AND INDEX_NAME = 'provider_links_status'`).Scan(&cols))
		return cols.String
	}
	at := func(want int64) {
		t.Helper()
		v, dirty := schemaVersion(t, dsn)
		require.Equal(t, want, v)
		require.False(t, dirty)
	}
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 12}))
	require.Empty(t, columns())
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 13}))
	at(13)
	require.Equal(t, "provider,status,updated_at", columns())
	require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 12}), "down")
	at(12)
	require.Empty(t, columns())

	for _, applied := range []bool{true, false} {
		if applied {
			require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 13}))
		}
		testutil.Exec(t, dsn, "UPDATE schema_migrations SET version = 13, dirty = 1")
		require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 13}), "applied=%v", applied)
		at(13)
		require.Equal(t, "provider,status,updated_at", columns(), "applied=%v", applied)
		require.NoError(t, store.MigrateWith(ctx, dsn, store.MigrateOptions{Target: 12}))
	}
}
