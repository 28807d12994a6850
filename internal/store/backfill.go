package store

import (
	"context"
	"fmt"
)

// Unsynced is a live user whose current version a provider does not hold
// yet, as tandemctl backfill plans it.
type Unsynced struct {
	UserID   string
	Email    string
	Version  int64
	RemoteID string // the linked remote object, "" if none
	Status   string // the link's status, "" if there is no link
}

// UnsyncedUsers returns up to limit live users with an id greater than
// after, in id order, that provider does not hold at their current
// version: no link, or a link whose synced version is older.
func (s *Store) UnsyncedUsers(ctx context.Context, provider, after string, limit int) ([]Unsynced, error) {
	rows, err := s.sql.QueryContext(ctx, `
		SELECT u.id, u.email, u.version, COALESCE(l.remote_id, ''), COALESCE(l.status, '')
		FROM users u LEFT JOIN provider_links l ON l.user_id = u.id AND l.provider = ?
		WHERE u.deleted_at IS NULL AND u.id > ? AND (l.user_id IS NULL OR l.synced_version < u.version)
		ORDER BY u.id LIMIT ?`, provider, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing users not synced to %s: %w", provider, translate(err))
	}
	defer rows.Close()
	var out []Unsynced
	for rows.Next() {
		var u Unsynced
		if err := rows.Scan(&u.UserID, &u.Email, &u.Version, &u.RemoteID, &u.Status); err != nil {
			return nil, fmt.Errorf("listing users not synced to %s: %w", provider, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing users not synced to %s: %w", provider, translate(err))
	}
	return out, nil
}
