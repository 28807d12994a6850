// Package store is Tandem's MySQL storage: users, their outbox, provider
// links, inbound events, API idempotency keys and users' history (written
// in batches off the request and push paths: history.go), through GORM.
//
// It is the only package that knows SQL. It translates driver errors into the
// sentinel errors below, and only here: gorm.ErrRecordNotFound becomes
// ErrNotFound, MySQL error 1062 (duplicate key) becomes ErrConflict.
//
// Sessions run at READ COMMITTED (set once per connection, so transactions
// need no SET TRANSACTION round trip): the store's transactions lock what
// they depend on explicitly and want to read the latest committed rows.
//
// Every change to a user is written in one transaction with its outbox row
// (or, for inbound webhook changes, deliberately without one), so a change is
// either committed together with the event that announces it, or not at all.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	gormmysql "gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Sentinel errors returned by Store methods (wrapped; test with errors.Is).
var (
	// ErrNotFound: no live row with that key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique key is taken (for users: the email).
	ErrConflict = errors.New("conflict")
	// ErrVersionMismatch: an If-Match precondition named another version.
	ErrVersionMismatch = errors.New("version mismatch")
)

// Store is the MySQL store. It is safe for concurrent use.
type Store struct {
	db  *gorm.DB
	sql *sql.DB
	now func() time.Time

	history *historyWriter // nil: history off

	// committed is called (if set) after a transaction that wrote outbox
	// rows commits; the relay uses it to wake at once.
	committed func()
}

// Options tune Open.
type Options struct {
	// MaxOpenConns bounds the connection pool (default 64).
	MaxOpenConns int
	// Now overrides the clock (tests).
	Now func() time.Time
	// History says how the users' history is recorded (on by default).
	History HistoryOptions
}

// Open connects to MySQL with dsn (a go-sql-driver DSN). It sets
// parseTime=true, loc=UTC and interpolateParams=true (one round trip per
// statement), whatever the DSN says. It does not migrate: see Migrate.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	isolation, err := isolationVariable(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Params[isolation] = "'READ-COMMITTED'"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: TANDEM_MYSQL_DSN: %w", err)
	}
	sqlDB := sql.OpenDB(connector)
	if opts.MaxOpenConns <= 0 {
		opts.MaxOpenConns = 64
	}
	sqlDB.SetMaxOpenConns(opts.MaxOpenConns)
	sqlDB.SetMaxIdleConns(opts.MaxOpenConns)
	sqlDB.SetConnMaxLifetime(30 * time.Minute)
	gdb, err := gorm.Open(gormmysql.New(gormmysql.Config{Conn: sqlDB, SkipInitializeWithVersion: true}), &gorm.Config{
		SkipDefaultTransaction: true,
		Logger:                 logger.Discard,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("store: opening gorm: %w", err)
	}
	s := &Store{db: gdb, sql: sqlDB, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("store: connecting to MySQL: %w", err)
	}
	s.startHistory(opts.History)
	return s, nil
}

// ParseDSN parses a go-sql-driver DSN and applies the settings Tandem needs.
func ParseDSN(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: TANDEM_MYSQL_DSN: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.InterpolateParams = true
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// Timestamps are written as UTC; make the session agree.
	cfg.Params["time_zone"] = "'+00:00'"
	return cfg, nil
}

// isolationVariable names the session variable of the isolation level:
// tx_isolation on MariaDB, transaction_isolation on MySQL 8.
func isolationVariable(ctx context.Context, cfg *mysql.Config) (string, error) {
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return "", fmt.Errorf("store: TANDEM_MYSQL_DSN: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var version string
	if err := db.QueryRowContext(pingCtx, "SELECT VERSION()").Scan(&version); err != nil {
		return "", fmt.Errorf("store: connecting to MySQL: %w", err)
	}
	if strings.Contains(strings.ToLower(version), "mariadb") {
		return "tx_isolation", nil
	}
	return "transaction_isolation", nil
}

// OnCommit registers fn to be called after every transaction that wrote
// outbox rows commits. Call it before serving requests.
func (s *Store) OnCommit(fn func()) { s.committed = fn }

// Ping checks that MySQL answers.
func (s *Store) Ping(ctx context.Context) error { return s.sql.PingContext(ctx) }

// DB exposes the underlying pool (benchmarks, tests).
func (s *Store) DB() *sql.DB { return s.sql }

// Close writes the history entries still queued (for at most 5 s) and
// closes the connection pool.
func (s *Store) Close() error {
	s.stopHistory()
	return s.sql.Close()
}

func (s *Store) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

func (s *Store) notify() {
	if s.committed != nil {
		s.committed()
	}
}

// translate maps driver errors onto the package's sentinels.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, gorm.ErrRecordNotFound) || errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1062 {
		return fmt.Errorf("%w: %s", ErrConflict, me.Message)
	}
	return err
}
