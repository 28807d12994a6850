// Package testutil gives each test its own real MariaDB database and its own
// RabbitMQ vhost, so tests run in parallel, in parallel packages, and twice in
// a row without seeing each other.
//
// Servers come from the environment, with localhost defaults:
// TANDEM_TEST_MYSQL_DSN (a DSN without a database name, default
// root@tcp(127.0.0.1:3306)/), TANDEM_TEST_AMQP_URL (default
// amqp://guest:guest@127.0.0.1:5672/) and TANDEM_TEST_RABBIT_API (the
// management API, default http://guest:guest@127.0.0.1:15672).
package testutil

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/tandem-sync/tandem/internal/store"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Suffix returns a short random hex string for unique names.
func Suffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewDatabase creates an empty database for t, dropped when t ends, and
// returns its DSN (parseTime=true).
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := env("TANDEM_TEST_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/")
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("TANDEM_TEST_MYSQL_DSN: %v", err)
	}
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("opening MySQL: %v", err)
	}
	name := "tandem_test_" + Suffix()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		admin.Close()
		t.Fatalf("creating test database (is MariaDB running on %s?): %v", cfg.Addr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
		admin.Close()
	})
	cfg.DBName = name
	cfg.ParseTime = true
	return cfg.FormatDSN()
}

// NewStore creates a migrated database for t and opens a Store on it. It
// returns the store and the DSN.
func NewStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	dsn := NewDatabase(t)
	ctx := context.Background()
	if err := store.Migrate(ctx, dsn); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st, dsn
}

// Exec runs statements against the database dsn names (test setup).
func Exec(t testing.TB, dsn string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// QueryInt runs a query returning one integer.
func QueryInt(t testing.TB, dsn, q string, args ...any) int64 {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// NewVhost creates a RabbitMQ vhost for t (deleted when t ends) and returns
// an AMQP URL for it.
func NewVhost(t testing.TB) string {
	t.Helper()
	api := env("TANDEM_TEST_RABBIT_API", "http://guest:guest@127.0.0.1:15672")
	amqpURL := env("TANDEM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("TANDEM_TEST_AMQP_URL: %v", err)
	}
	user := u.User.Username()
	vhost := "tandem-test-" + Suffix()
	call := func(method, path, body string) {
		req, err := http.NewRequest(method, api+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		apiURL, _ := url.Parse(api)
		if apiURL.User != nil {
			pw, _ := apiURL.User.Password()
			req.SetBasicAuth(apiURL.User.Username(), pw)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("RabbitMQ management API %s (is rabbitmq_management enabled?): %v", method+" "+path, err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 && !(method == http.MethodDelete && resp.StatusCode == 404) {
			t.Fatalf("RabbitMQ management API %s %s: %s", method, path, resp.Status)
		}
	}
	call(http.MethodPut, "/api/vhosts/"+url.PathEscape(vhost), "")
	call(http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(user),
		`{"configure":".*","write":".*","read":".*"}`)
	t.Cleanup(func() { call(http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), "") })
	u.Path = "/" + vhost
	u.RawPath = "/" + url.PathEscape(vhost)
	return fmt.Sprint(u)
}
