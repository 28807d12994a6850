package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"regexp"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

var dbNameRE = regexp.MustCompile(`^[A-Za-z0-9_\-]{1,64}$`)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate applies pending schema migrations to the database dsn names,
// creating the database first if it does not exist. It is idempotent and
// safe when several processes call it at once: golang-migrate serialises
// them with a MySQL advisory lock (GET_LOCK).
func Migrate(ctx context.Context, dsn string) error {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return err
	}
	if err := createDatabase(ctx, cfg); err != nil {
		return err
	}
	cfg.MultiStatements = true
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: migrate: connecting: %w", err)
	}
	driver, err := migratemysql.WithInstance(db, &migratemysql.Config{DatabaseName: cfg.DBName})
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
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
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
