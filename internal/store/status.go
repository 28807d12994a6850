package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// UsersByStatus counts the live users by the status of their link to each
// of providers: provider → status → users. A live user with no link to a
// provider yet counts as pending. It reads every user, and every link's
// entry in provider_links_status (not the links themselves): callers share
// one result between viewers (the console) and do not ask more than every
// few seconds.
func (s *Store) UsersByStatus(ctx context.Context, providers []string) (map[string]map[string]int64, error) {
	type count struct {
		Provider string
		Status   string
		N        int64
	}
	var live int64
	var all, deleted []count
	// One snapshot for the three counts: a user deleted, or a link changing
	// status, between two of them would be counted twice or not at all.
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Table("users").Where("deleted_at IS NULL").Count(&live).Error; err != nil {
			return err
		}
		if err := tx.Raw(linksByStatusSQL).Scan(&all).Error; err != nil {
			return err
		}
		return tx.Raw(deletedLinksByStatusSQL).Scan(&deleted).Error
	}, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("counting users by sync status: %w", translate(err))
	}
	out := make(map[string]map[string]int64, len(providers))
	linked := map[string]int64{}
	for _, p := range providers {
		out[p] = map[string]int64{LinkPending: 0, LinkSynced: 0, LinkFailed: 0, LinkConflict: 0}
	}
	add := func(rows []count, sign int64) {
		for _, r := range rows {
			if out[r.Provider] == nil {
				continue
			}
			out[r.Provider][r.Status] += sign * r.N
			linked[r.Provider] += sign * r.N
		}
	}
	// The live users' links are all links but the deleted users': a link
	// is only created for a user that exists (INSERT … SELECT … FROM
	// users), and users are marked deleted, never removed.
	add(all, 1)
	add(deleted, -1)
	for _, p := range providers {
		out[p][LinkPending] += max(live-linked[p], 0)
	}
	return out, nil
}

// linksByStatusSQL counts every link by provider and status: a read of
// provider_links_status alone (migration 13), in its order.
const linksByStatusSQL = `SELECT provider, status, COUNT(*) AS n FROM provider_links GROUP BY provider, status`

// deletedLinksByStatusSQL counts the links of deleted users by provider
// and status, looked up by user.
const deletedLinksByStatusSQL = `SELECT l.provider, l.status, COUNT(*) AS n
		FROM users u JOIN provider_links l ON l.user_id = u.id
		WHERE u.deleted_at IS NOT NULL GROUP BY l.provider, l.status`

// PushesSince counts the pushes per provider recorded in the history since
// t, by outcome: provider → outcome → pushes (zero with history off).
func (s *Store) PushesSince(ctx context.Context, t time.Time) (map[string]map[string]int64, error) {
	s.FlushHistory(ctx)
	var rows []struct {
		Provider string
		Outcome  string
		N        int64
	}
	err := s.db.WithContext(ctx).Raw(`SELECT provider, outcome, COUNT(*) AS n FROM sync_history FORCE INDEX (sync_history_at)
		WHERE at >= ? AND kind = ? GROUP BY provider, outcome`, t.UTC(), HistoryPush).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("counting pushes: %w", translate(err))
	}
	out := map[string]map[string]int64{}
	for _, r := range rows {
		if out[r.Provider] == nil {
			out[r.Provider] = map[string]int64{}
		}
		out[r.Provider][r.Outcome] += r.N
	}
	return out, nil
}

// UnlinkedWindow is how far back Attention looks for users no worker
// picked up (created before its pendingBefore, with no link).
const UnlinkedWindow = 7 * 24 * time.Hour

// idAt is the smallest UUIDv7 (as text) made at t: ids compare as text in
// creation order.
func idAt(t time.Time) string {
	ms := uint64(max(t.UnixMilli(), 0))
	return fmt.Sprintf("%08x-%04x", ms>>16, ms&0xffff)
}

// AttentionItem is a user whose link to a provider needs an operator's
// look: failed, conflict, or pending for longer than expected.
type AttentionItem struct {
	UserID   string
	Email    string
	Provider string
	Status   string
	Reason   string    // the link's last error ("" if none)
	Since    time.Time // the link's (or, with no link, the user's) last change
}

// attentionLinksSQL lists up to limit live users whose link to a provider is
// failed, in conflict or pending since before a time, newest first
// (arguments: attentionLinksArgs). One part per status, each reading that
// status's links from provider_links_status newest first and stopping at
// the limit: one range over the three statuses would read every failed,
// conflicting and old pending link and sort them (in an outage, all of
// them) to keep the newest.
const attentionLinksSQL = `SELECT * FROM (
			(SELECT l.user_id, u.email, l.status, l.last_error, l.updated_at
				FROM provider_links l JOIN users u ON u.id = l.user_id
				WHERE l.provider = ? AND l.status = ? AND u.deleted_at IS NULL
				ORDER BY l.updated_at DESC LIMIT ?)
			UNION ALL
			(SELECT l.user_id, u.email, l.status, l.last_error, l.updated_at
				FROM provider_links l JOIN users u ON u.id = l.user_id
				WHERE l.provider = ? AND l.status = ? AND u.deleted_at IS NULL
				ORDER BY l.updated_at DESC LIMIT ?)
			UNION ALL
			(SELECT l.user_id, u.email, l.status, l.last_error, l.updated_at
				FROM provider_links l JOIN users u ON u.id = l.user_id
				WHERE l.provider = ? AND l.status = ? AND l.updated_at < ? AND u.deleted_at IS NULL
				ORDER BY l.updated_at DESC LIMIT ?)
		) a ORDER BY updated_at DESC LIMIT ?`

func attentionLinksArgs(provider string, pendingBefore time.Time, limit int) []any {
	return []any{provider, LinkFailed, limit, provider, LinkConflict, limit,
		provider, LinkPending, pendingBefore.UTC(), limit, limit}
}

// Attention lists up to limit live users needing attention for each of
// providers: links failed or in conflict, links pending since before
// pendingBefore, and users with no link yet created in the UnlinkedWindow
// before pendingBefore (no worker picked them up), newest first per
// provider.
func (s *Store) Attention(ctx context.Context, providers []string, pendingBefore time.Time, limit int) ([]AttentionItem, error) {
	var out []AttentionItem
	for _, p := range providers {
		var rows []struct {
			UserID    string
			Email     string
			Status    string
			LastError *string
			UpdatedAt time.Time
		}
		err := s.db.WithContext(ctx).Raw(attentionLinksSQL, attentionLinksArgs(p, pendingBefore, limit)...).Scan(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("listing users needing attention: %w", translate(err))
		}
		for _, r := range rows {
			out = append(out, AttentionItem{UserID: r.UserID, Email: r.Email, Provider: p, Status: r.Status,
				Reason: deref(r.LastError), Since: r.UpdatedAt.UTC()})
		}
		if len(rows) >= limit {
			continue
		}
		var unlinked []struct {
			ID        string
			Email     string
			UpdatedAt time.Time
		}
		// Ids are UUIDv7, so a range of the primary key is a range of
		// creation times: only the users created in the week before
		// pendingBefore are looked at (a bounded scan, not the table).
		err = s.db.WithContext(ctx).Raw(`SELECT u.id, u.email, u.updated_at FROM users u
			WHERE u.id >= ? AND u.id < ? AND u.deleted_at IS NULL AND u.updated_at < ?
			  AND NOT EXISTS (SELECT 1 FROM provider_links l WHERE l.user_id = u.id AND l.provider = ?)
			ORDER BY u.id DESC LIMIT ?`, idAt(pendingBefore.Add(-UnlinkedWindow)), idAt(pendingBefore), pendingBefore.UTC(), p,
			limit-len(rows)).Scan(&unlinked).Error
		if err != nil {
			return nil, fmt.Errorf("listing users needing attention: %w", translate(err))
		}
		for _, r := range unlinked {
			out = append(out, AttentionItem{UserID: r.ID, Email: r.Email, Provider: p, Status: LinkPending,
				Reason: "not picked up by a " + p + " worker yet", Since: r.UpdatedAt.UTC()})
		}
	}
	return out, nil
}
