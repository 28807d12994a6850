package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/userimport"
)

// ImportOptions configure the import benchmark.
type ImportOptions struct {
	MySQLDSN string    // server to use; the database name is replaced
	Users    int       // rows to load (default 100,000)
	Batch    int       // rows per transaction, for both runs (default 500, tandemctl import's)
	Log      io.Writer // progress lines
}

// importUser is one generated row.
type importUser struct {
	Email    string            `json:"email"`
	Name     string            `json:"name"`
	Phone    string            `json:"phone"`
	Metadata map[string]string `json:"metadata"`
}

func importUsers(n int) []importUser {
	us := make([]importUser, n)
	for i := range us {
		us[i] = importUser{Email: fmt.Sprintf("import-%07d@example.com", i), Name: fmt.Sprintf("Imported User %d", i),
			Phone: "+44 20 7946 0000", Metadata: map[string]string{"plan": "pro", "source": "legacy-db"}}
	}
	return us
}

// Import measures tandemctl import's path (userimport.Run: read the JSON
// Lines file, validate every row as the API does, batch into
// store.ImportUsers with outbox rows) against its ceiling: the same rows,
// already in memory, written by multi-row INSERTs of users and outbox rows
// with database/sql, one transaction per batch of the same size. Each runs
// on a fresh database, one connection at a time (as the import does).
func Import(ctx context.Context, o ImportOptions) ([]Row, error) {
	if o.Users <= 0 {
		o.Users = 100_000
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	progress := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	us := importUsers(o.Users)
	dir, err := os.MkdirTemp("", "tandem-bench-import")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "users.jsonl")
	if err := writeJSONLines(file, us); err != nil {
		return nil, err
	}

	progress("import: raw batched INSERT of %d users (+ outbox), batches of %d", o.Users, o.Batch)
	raw, err := withDB(ctx, o.MySQLDSN, "import_raw", func(dsn string) (Row, error) {
		return rawImport(ctx, dsn, us, o.Batch)
	})
	if err != nil {
		return nil, fmt.Errorf("raw import: %w", err)
	}
	raw.Stage = "MySQL: raw batched INSERT users + outbox (database/sql)"

	progress("import: tandemctl import of the same %d users from JSON Lines", o.Users)
	tandem, err := withDB(ctx, o.MySQLDSN, "import", func(dsn string) (Row, error) {
		st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 2})
		if err != nil {
			return Row{}, err
		}
		defer st.Close()
		start := time.Now()
		rep, err := userimport.Run(ctx, st, file, userimport.Options{Format: userimport.JSONLines, Announce: true, BatchRows: o.Batch})
		if err != nil {
			return Row{}, err
		}
		if rep.Imported != o.Users {
			return Row{}, fmt.Errorf("imported %d of %d users (%d refused)", rep.Imported, o.Users, len(rep.Refused))
		}
		return Row{Ops: rep.Imported, Rate: float64(rep.Imported) / time.Since(start).Seconds()}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("tandemctl import: %w", err)
	}
	tandem.Stage = "tandemctl import (JSON Lines → validate → batched tx)"
	tandem.Ratios = map[string]float64{"raw": tandem.Rate / raw.Rate}
	tandem.Note = "target ≥ 50 % of raw"
	return []Row{raw, tandem}, nil
}

func writeJSONLines(path string, us []importUser) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, u := range us {
		if err := enc.Encode(u); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rawImport is the ceiling: the rows the import writes (users with
// api_version, their outbox rows), as multi-row INSERTs in one transaction
// per batch, from memory, with no validation.
func rawImport(ctx context.Context, dsn string, us []importUser, batch int) (Row, error) {
	db, err := openRaw(dsn, 1)
	if err != nil {
		return Row{}, err
	}
	defer db.Close()
	start := time.Now()
	for lo := 0; lo < len(us); lo += batch {
		part := us[lo:min(lo+batch, len(us))]
		now := time.Now().UTC().Truncate(time.Microsecond)
		var users, outbox strings.Builder
		users.WriteString("INSERT INTO users (id, email, name, phone, metadata, version, changed_by, api_version, api_changed_at, created_at, updated_at) VALUES ")
		outbox.WriteString("INSERT INTO outbox (event_id, user_id, version, type, origin, created_at) VALUES ")
		uargs := make([]any, 0, len(part)*9)
		oargs := make([]any, 0, len(part)*5)
		for i, u := range part {
			if i > 0 {
				users.WriteString(", ")
				outbox.WriteString(", ")
			}
			id := uuid.Must(uuid.NewV7()).String()
			md, _ := json.Marshal(u.Metadata)
			users.WriteString("(?, ?, ?, ?, ?, 1, ?, 1, ?, ?, ?)")
			uargs = append(uargs, id, u.Email, u.Name, u.Phone, string(md), store.OriginAPI, now, now, now)
			outbox.WriteString("(?, ?, 1, ?, ?, ?)")
			oargs = append(oargs, uuid.Must(uuid.NewV7()).String(), id, store.EventUserCreated, store.OriginImport, now)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return Row{}, err
		}
		if _, err := tx.ExecContext(ctx, users.String(), uargs...); err != nil {
			tx.Rollback()
			return Row{}, err
		}
		if _, err := tx.ExecContext(ctx, outbox.String(), oargs...); err != nil {
			tx.Rollback()
			return Row{}, err
		}
		if err := tx.Commit(); err != nil {
			return Row{}, err
		}
	}
	return Row{Ops: len(us), Rate: float64(len(us)) / time.Since(start).Seconds()}, nil
}
