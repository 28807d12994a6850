package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/tandem-sync/tandem/internal/userfields"
)

// OriginImport marks the outbox rows ImportUsers writes (tandemctl import).
const OriginImport = "import"

// ImportRow is one user to import and the line of the file it came from.
type ImportRow struct {
	Line int
	User NewUser
}

// ImportTaken is a row ImportUsers refused because its email belongs to a
// live user (case-insensitively, as the users' unique key compares emails).
type ImportTaken struct {
	Line   int
	UserID string // the live user holding the email
}

// importTries bounds how often ImportUsers redoes a batch whose email a
// concurrent writer (the API) took between its check and its insert.
const importTries = 5

// ImportUsers creates the users of rows in one transaction, with multi-row
// INSERTs (the rows are the caller's batch: a few hundred, validated as the
// API validates). Each user is created as POST /v1/users creates one
// (version 1, a fresh UUIDv7 id, changed by the API), in the order of rows.
// With announce, each gets its user.created outbox row (origin
// OriginImport) in the same transaction; without, none is written and the
// users are pushed nowhere until a backfill or a change announces them.
//
// A row whose email belongs to a live user, or to an earlier row of the
// batch, is not written and is returned in taken; the others are. An email
// taken by a concurrent writer between the check and the insert makes the
// batch start again (nothing of the failed attempt is kept). It returns the
// users created, in the order of rows; on an error nothing was written.
func (s *Store) ImportUsers(ctx context.Context, rows []ImportRow, announce bool) (created []User, taken []ImportTaken, err error) {
	for try := 1; ; try++ {
		created, taken, err = s.importBatch(ctx, rows, announce)
		if err == nil || !errors.Is(err, ErrConflict) || try == importTries {
			break
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("importing users: %w", err)
	}
	if announce && len(created) > 0 {
		s.notify()
	}
	return created, taken, nil
}

func (s *Store) importBatch(ctx context.Context, rows []ImportRow, announce bool) ([]User, []ImportTaken, error) {
	if len(rows) == 0 {
		return nil, nil, nil
	}
	tx, err := s.sql.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, translate(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	owners, err := liveEmailOwners(ctx, tx, rows)
	if err != nil {
		return nil, nil, err
	}
	now := s.clock()
	var (
		taken   []ImportTaken
		created = make([]User, 0, len(rows))
		users   strings.Builder
		outbox  strings.Builder
		uargs   = make([]any, 0, len(rows)*11)
		oargs   []any
	)
	users.WriteString("INSERT INTO users (id, email, name, phone, metadata, version, changed_by, api_version, api_changed_at, created_at, updated_at) VALUES ")
	outbox.WriteString("INSERT INTO outbox (event_id, user_id, version, type, origin, created_at) VALUES ")
	for _, r := range rows {
		key := userfields.EmailKey(r.User.Email)
		if owner, ok := owners[key]; ok {
			taken = append(taken, ImportTaken{Line: r.Line, UserID: owner})
			continue
		}
		u := User{ID: uuid.Must(uuid.NewV7()).String(), Email: r.User.Email, Name: r.User.Name, Phone: r.User.Phone,
			Metadata: r.User.Metadata, Version: 1, ChangedBy: OriginAPI, APIVersion: 1, APIChangedAt: now, CreatedAt: now, UpdatedAt: now}
		if u.Metadata == nil {
			u.Metadata = map[string]string{}
		}
		md, err := json.Marshal(u.Metadata)
		if err != nil {
			return nil, nil, fmt.Errorf("encoding metadata of line %d: %w", r.Line, err)
		}
		owners[key] = u.ID
		if len(created) > 0 {
			users.WriteString(", ")
		}
		users.WriteString("(?, ?, ?, ?, ?, 1, ?, 1, ?, ?, ?)")
		uargs = append(uargs, u.ID, u.Email, u.Name, u.Phone, string(md), OriginAPI, now, now, now)
		if announce {
			if len(created) > 0 {
				outbox.WriteString(", ")
			}
			outbox.WriteString("(?, ?, 1, ?, ?, ?)")
			oargs = append(oargs, uuid.Must(uuid.NewV7()).String(), u.ID, EventUserCreated, OriginImport, now)
		}
		created = append(created, u)
	}
	if len(created) == 0 {
		return nil, taken, nil
	}
	if _, err := tx.ExecContext(ctx, users.String(), uargs...); err != nil {
		return nil, nil, fmt.Errorf("inserting users: %w", translate(err))
	}
	if announce {
		if _, err := tx.ExecContext(ctx, outbox.String(), oargs...); err != nil {
			return nil, nil, fmt.Errorf("inserting outbox rows: %w", translate(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, translate(err)
	}
	return created, taken, nil
}

// liveEmailOwners maps the email keys of rows that live users hold to those
// users' ids (one indexed read).
func liveEmailOwners(ctx context.Context, tx *sql.Tx, rows []ImportRow) (map[string]string, error) {
	q := strings.Builder{}
	q.WriteString("SELECT live_email, id FROM users WHERE live_email IN (")
	args := make([]any, len(rows))
	for i, r := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args[i] = userfields.EmailKey(r.User.Email)
	}
	q.WriteString(")")
	res, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("reading taken emails: %w", translate(err))
	}
	defer res.Close()
	owners := make(map[string]string, len(rows))
	for res.Next() {
		var key, id string
		if err := res.Scan(&key, &id); err != nil {
			return nil, fmt.Errorf("reading taken emails: %w", translate(err))
		}
		owners[key] = id
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("reading taken emails: %w", translate(err))
	}
	return owners, nil
}
