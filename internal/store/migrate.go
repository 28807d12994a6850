package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

var dbNameRE = regexp.MustCompile(`^[A-Za-z0-9_\-]{1,64}$`)

//go:embed migrations/*.sql
var migrationFS embed.FS

// MigrateOptions tune MigrateWith. The zero value gives the defaults.
type MigrateOptions struct {
	// Logger receives a line while the process waits for another one's
	// migration, when a DDL statement is retried, and when an interrupted
	// migration is recovered. Default: discarded.
	Logger *slog.Logger
	// LockWait bounds the wait for the migration lock that another process
	// holds while it migrates (replicas that start together during a long
	// migration wait for it, then find nothing to do). Default 30m.
	LockWait time.Duration
	// LockPoll is the length of one attempt to take the lock; a line is
	// logged after each failed attempt. Default 10s.
	LockPoll time.Duration
	// DDLLockWait is the session's lock_wait_timeout while migrating: how
	// long an ALTER TABLE may wait for the transactions open on its table
	// (every other query on the table queues behind the waiting ALTER).
	// Beyond it the statement gives up, and is retried after a pause.
	// Default 5s (MariaDB's own is one day).
	DDLLockWait time.Duration
	// DDLRetries is how many times a migration that gave up waiting for
	// its table lock is tried again before Migrate fails. Default 30.
	DDLRetries int
	// DDLRetryPause is the pause before such a retry. Default 2s.
	DDLRetryPause time.Duration
	// AllowCopy lets a migration that copies a whole table (see
	// copyingMigrations) run on a table holding more than CopyRowLimit
	// rows, blocking writes to it while it copies. Default false: such a
	// migration fails at once, naming the table (README: "Upgrading a
	// large table").
	AllowCopy bool
	// CopyRowLimit is the table size (rows, InnoDB's estimate) up to which a
	// copying migration runs without AllowCopy. Default 100,000.
	CopyRowLimit int64
	// Target, when not zero, migrates up to that version only (tests).
	Target uint
}

func (o *MigrateOptions) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LockWait <= 0 {
		o.LockWait = 30 * time.Minute
	}
	if o.LockPoll <= 0 {
		o.LockPoll = 10 * time.Second
	}
	if o.DDLLockWait <= 0 {
		o.DDLLockWait = 5 * time.Second
	}
	if o.DDLRetries <= 0 {
		o.DDLRetries = 30
	}
	if o.DDLRetryPause <= 0 {
		o.DDLRetryPause = 2 * time.Second
	}
	if o.CopyRowLimit <= 0 {
		o.CopyRowLimit = 100_000
	}
}

// Migrate is MigrateWith with the default options.
func Migrate(ctx context.Context, dsn string) error {
	return MigrateWith(ctx, dsn, MigrateOptions{})
}

// MigrateWith applies pending schema migrations to the database dsn names,
// creating the database first if it does not exist. It is idempotent and
// safe under a rolling deploy:
//
//   - processes that migrate at once are serialised by a MySQL advisory
//     lock (the one golang-migrate itself takes, so older releases are
//     serialised with this one); a process waits for it up to LockWait,
//     logging while it waits;
//   - every DDL statement waits at most DDLLockWait for the transactions
//     open on its table, then gives up and is retried (DDLRetries), so an
//     ALTER TABLE never holds every query on the table behind it for long;
//   - a migration interrupted by a crash (golang-migrate's "dirty" version)
//     is recovered: Tandem checks whether its last statement applied and
//     marks it done, or runs it again;
//   - a migration that copies a whole table is refused on a large table
//     unless AllowCopy (see copyingMigrations).
//
// It returns an error naming what to do when none of that helps.
func MigrateWith(ctx context.Context, dsn string, o MigrateOptions) error {
	o.setDefaults()
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return err
	}
	if err := createDatabase(ctx, cfg); err != nil {
		return err
	}
	cfg.MultiStatements = true
	cfg.Params["lock_wait_timeout"] = strconv.Itoa(max(1, int(o.DDLLockWait.Round(time.Second)/time.Second)))
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: migrate: connecting: %w", err)
	}

	unlock, err := migrationLock(ctx, db, cfg.DBName, o)
	if err != nil {
		return err
	}
	defer unlock()

	// The lock is ours: golang-migrate must not take it again.
	driver, err := migratemysql.WithInstance(db, &migratemysql.Config{DatabaseName: cfg.DBName, NoLock: true})
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	src, err := iofs.New(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("store: migrate: reading embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, cfg.DBName, driver)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	for attempt := 1; ; attempt++ {
		if err := recoverDirty(ctx, db, m, src, o.Logger); err != nil {
			return err
		}
		if err := checkCopies(ctx, db, m, src, o); err != nil {
			return err
		}
		if o.Target != 0 {
			err = m.Migrate(o.Target)
		} else {
			err = m.Up()
		}
		if err == nil || errors.Is(err, migrate.ErrNoChange) {
			return nil
		}
		if !isLockWaitTimeout(err) || attempt >= o.DDLRetries {
			return fmt.Errorf("store: migrate: %w", err)
		}
		// The statement gave up waiting for transactions open on its
		// table; golang-migrate left the version dirty, which the next
		// round recovers.
		o.Logger.Warn("schema migration waited too long for a table lock held by open transactions; retrying",
			"lock_wait_timeout", o.DDLLockWait.String(), "attempt", attempt, "retry_in", o.DDLRetryPause.String())
		t := time.NewTimer(o.DDLRetryPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("store: migrate: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// migrationLock takes the advisory lock golang-migrate uses for dbName on a
// connection of its own, waiting up to o.LockWait, and returns its release.
func migrationLock(ctx context.Context, db *sql.DB, dbName string, o MigrateOptions) (func(), error) {
	name, err := database.GenerateAdvisoryLockId(fmt.Sprintf("%s:%s", dbName, migratemysql.DefaultMigrationsTable))
	if err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	start := time.Now()
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, o.LockPoll.Seconds()).Scan(&got); err != nil {
			conn.Close()
			return nil, fmt.Errorf("store: migrate: taking the migration lock: %w", err)
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		waited := time.Since(start)
		if waited >= o.LockWait {
			conn.Close()
			return nil, fmt.Errorf("store: migrate: another process has been migrating %s for over %s (it holds the migration lock); run again once it is done, or find it with SELECT * FROM information_schema.PROCESSLIST",
				dbName, o.LockWait)
		}
		o.Logger.Info("waiting for another process's schema migration", "database", dbName,
			"waited", waited.Round(time.Second).String(), "gives_up_after", o.LockWait.String())
	}
	return func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", name)
		conn.Close()
	}, nil
}

// isLockWaitTimeout reports MySQL error 1205 (lock_wait_timeout exceeded),
// also inside golang-migrate's database.Error (which has no Unwrap).
func isLockWaitTimeout(err error) bool {
	var de database.Error
	if errors.As(err, &de) {
		err = de.OrigErr
	}
	var dep *database.Error
	if errors.As(err, &dep) {
		err = dep.OrigErr
	}
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1205
}

// migrationApplied tells, for each migration, whether its last statement
// took effect: every statement before the last is idempotent (CREATE TABLE
// IF NOT EXISTS), so a migration interrupted anywhere is either complete or
// safe to run again. A new migration must keep that rule and add its check
// here; otherwise an interrupted run of it needs an operator (Migrate says
// what to do).
var migrationApplied = map[uint]func(ctx context.Context, db *sql.DB) (bool, error){
	1: func(ctx context.Context, db *sql.DB) (bool, error) { return tableExists(ctx, db, "idempotency_keys") },
	2: func(ctx context.Context, db *sql.DB) (bool, error) {
		return columnType(ctx, db, "provider_links", "metadata_keys", "")
	},
	3: func(ctx context.Context, db *sql.DB) (bool, error) {
		return columnType(ctx, db, "users", "metadata", "mediumtext")
	},
	4: func(ctx context.Context, db *sql.DB) (bool, error) {
		return columnType(ctx, db, "users", "changed_by", "")
	},
	5: func(ctx context.Context, db *sql.DB) (bool, error) {
		return columnType(ctx, db, "provider_links", "recent_hashes", "")
	},
	6: func(ctx context.Context, db *sql.DB) (bool, error) {
		return columnType(ctx, db, "users", "api_changed_at", "")
	},
	7: func(ctx context.Context, db *sql.DB) (bool, error) {
		return indexExists(ctx, db, "inbound_events", "inbound_events_received")
	},
	8: func(ctx context.Context, db *sql.DB) (bool, error) {
		return columnType(ctx, db, "inbound_events", "payload_at", "")
	},
	9: func(ctx context.Context, db *sql.DB) (bool, error) {
		return indexExists(ctx, db, "inbound_events", "inbound_events_payload")
	},
	11: func(ctx context.Context, db *sql.DB) (bool, error) { return tableExists(ctx, db, "provider_cursors") },
	12: func(ctx context.Context, db *sql.DB) (bool, error) { return tableExists(ctx, db, "sync_history") },
	13: func(ctx context.Context, db *sql.DB) (bool, error) {
		return indexExists(ctx, db, "provider_links", "provider_links_status")
	},
}

// copyingMigrations are the migrations that copy a whole table (MariaDB
// has no in-place way to make them), blocking writes to it meanwhile; they
// state ALGORITHM=COPY. Every other ALTER TABLE states ALGORITHM=INSTANT,
// or ALGORITHM=INPLACE with LOCK=NONE, so that a change that would copy
// fails instead of blocking.
var copyingMigrations = map[uint]string{3: "users"}

// recoverDirty repairs a version golang-migrate left dirty (the process
// running the migration died, or its statement failed).
func recoverDirty(ctx context.Context, db *sql.DB, m *migrate.Migrate, src interface {
	Prev(uint) (uint, error)
}, log *slog.Logger) error {
	v, dirty, err := m.Version()
	if err != nil || !dirty {
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("store: migrate: reading the schema version: %w", err)
		}
		return nil
	}
	check, ok := migrationApplied[v]
	if !ok {
		return fmt.Errorf("store: migrate: the schema is dirty at version %d (a migration was interrupted) and Tandem cannot tell whether it applied: "+
			"compare the database with internal/store/migrations/%06d_*.up.sql, complete or undo it by hand, then "+
			"UPDATE schema_migrations SET version = <the last complete version>, dirty = 0", v, v)
	}
	applied, err := check(ctx, db)
	if err != nil {
		return fmt.Errorf("store: migrate: checking interrupted migration %d: %w", v, err)
	}
	if applied {
		log.Warn("schema migration was interrupted after it applied; marking it done", "version", v)
		if err := m.Force(int(v)); err != nil {
			return fmt.Errorf("store: migrate: %w", err)
		}
		return nil
	}
	prev := database.NilVersion
	if p, err := src.Prev(v); err == nil {
		prev = int(p)
	}
	log.Warn("schema migration was interrupted before it applied; running it again", "version", v)
	if err := m.Force(prev); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}

// checkCopies refuses a pending copying migration on a large table unless
// o.AllowCopy.
func checkCopies(ctx context.Context, db *sql.DB, m *migrate.Migrate, src interface {
	Next(uint) (uint, error)
	First() (uint, error)
}, o MigrateOptions) error {
	if o.AllowCopy {
		return nil
	}
	v, _, err := m.Version()
	var next uint
	switch {
	case errors.Is(err, migrate.ErrNilVersion):
		next, err = src.First()
	case err != nil:
		return fmt.Errorf("store: migrate: reading the schema version: %w", err)
	default:
		next, err = src.Next(v)
	}
	for ; err == nil && (o.Target == 0 || next <= o.Target); next, err = src.Next(next) {
		table, copies := copyingMigrations[next]
		if !copies {
			continue
		}
		var rows sql.NullInt64
		if err := db.QueryRowContext(ctx, `SELECT TABLE_ROWS FROM information_schema.TABLES
			WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, table).Scan(&rows); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: migrate: sizing %s: %w", table, err)
		}
		if rows.Int64 > o.CopyRowLimit {
			return fmt.Errorf("store: migrate: migration %d copies the whole %s table (about %d rows), blocking writes to it while it runs: "+
				"follow README \"Upgrading a large table\", or accept the pause with -migrate-allow-copy", next, table, rows.Int64)
		}
	}
	return nil
}

func tableExists(ctx context.Context, db *sql.DB, table string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, table).Scan(&n)
	return n > 0, err
}

func indexExists(ctx context.Context, db *sql.DB, table, index string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ?`, table, index).Scan(&n)
	return n > 0, err
}

// columnType reports whether table.column exists and, if dataType is not
// empty, has that DATA_TYPE.
func columnType(ctx context.Context, db *sql.DB, table, column, dataType string) (bool, error) {
	var got string
	err := db.QueryRowContext(ctx, `SELECT DATA_TYPE FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?`, table, column).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return dataType == "" || got == dataType, nil
}

// createDatabase creates cfg.DBName if it is missing.
func createDatabase(ctx context.Context, cfg *mysql.Config) error {
	if cfg.DBName == "" {
		return errors.New("store: TANDEM_MYSQL_DSN names no database")
	}
	if !dbNameRE.MatchString(cfg.DBName) {
		return fmt.Errorf("store: TANDEM_MYSQL_DSN: database name %q: use letters, digits, _ and -", cfg.DBName)
	}
	server := cfg.Clone()
	server.DBName = ""
	connector, err := mysql.NewConnector(server)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	q := fmt.Sprintf("CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", cfg.DBName)
	if _, err := db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("store: creating database %s: %w", cfg.DBName, err)
	}
	return nil
}
