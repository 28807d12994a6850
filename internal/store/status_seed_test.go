package store_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
)

var seedProviders = []string{"stripe", "hubspot"}

type seedLink struct {
	Status    string
	UpdatedAt time.Time
	LastError string
}

type seedUser struct {
	ID, Email string
	UpdatedAt time.Time
	Deleted   bool
	Links     map[string]seedLink // by provider; absent: not linked yet
}

// seedStatusViews writes n users, created a minute apart until now, with
// links to seedProviders: per provider about 3 % not linked yet, 4 %
// pending, 4 % failed, 2 % conflict and the rest synced (a healthy
// system); 2 % of the users are deleted. Every link has its own
// updated_at. Multi-row INSERTs, then ANALYZE TABLE: the optimizer sees
// the table as it is.
func seedStatusViews(t testing.TB, dsn string, n int, now time.Time) []seedUser {
	t.Helper()
	now = now.UTC().Truncate(time.Second)
	users := make([]seedUser, n)
	for i := range users {
		created := now.Add(-time.Duration(n-i) * time.Minute)
		ms := created.UnixMilli()
		u := seedUser{
			ID:        fmt.Sprintf("%08x-%04x-7000-8000-%012x", ms>>16, ms&0xffff, i),
			Email:     fmt.Sprintf("u%06d@example.com", i),
			UpdatedAt: created,
			Deleted:   i%50 == 7,
			Links:     map[string]seedLink{},
		}
		for k, p := range seedProviders {
			h := (i*37 + k*61) % 100
			l := seedLink{UpdatedAt: created.Add(time.Duration((i*7919+k*104729)%3600)*time.Second + time.Duration(2*i+k)*time.Microsecond)}
			switch {
			case h < 3:
				continue
			case h < 7:
				l.Status = store.LinkPending
			case h < 11:
				l.Status, l.LastError = store.LinkFailed, fmt.Sprintf("refused %d by %s", i, p)
			case h < 13:
				l.Status, l.LastError = store.LinkConflict, fmt.Sprintf("remote edit %d on %s", i, p)
			default:
				l.Status = store.LinkSynced
			}
			u.Links[p] = l
		}
		users[i] = u
	}

	db := openStore(t, dsn)
	for start := 0; start < n; start += 500 {
		chunk := users[start:min(start+500, n)]
		var ur, lr []string
		var ua, la []any
		for _, u := range chunk {
			var deleted *time.Time
			if u.Deleted {
				deleted = &u.UpdatedAt
			}
			ur = append(ur, "(?, ?, 'U', '', '{}', 1, ?, ?, ?)")
			ua = append(ua, u.ID, u.Email, u.UpdatedAt, u.UpdatedAt, deleted)
			for _, p := range seedProviders {
				l, ok := u.Links[p]
				if !ok {
					continue
				}
				var lastError *string
				if l.LastError != "" {
					lastError = &l.LastError
				}
				lr = append(lr, "(?, ?, ?, ?, ?)")
				la = append(la, u.ID, p, l.Status, lastError, l.UpdatedAt)
			}
		}
		_, err := db.Exec("INSERT INTO users (id, email, name, phone, metadata, version, created_at, updated_at, deleted_at) VALUES "+
			strings.Join(ur, ", "), ua...)
		require.NoError(t, err)
		_, err = db.Exec("INSERT INTO provider_links (user_id, provider, status, last_error, updated_at) VALUES "+
			strings.Join(lr, ", "), la...)
		require.NoError(t, err)
	}
	_, err := db.Exec("ANALYZE TABLE users, provider_links")
	require.NoError(t, err)
	return users
}

// openStore opens the database dsn names with the session settings the
// store uses (UTC, interpolated parameters).
func openStore(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	cfg, err := store.ParseDSN(dsn)
	require.NoError(t, err)
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}
