package store

import (
	"time"

	"gorm.io/gorm"
)

// The statements behind the operator's views, for the tests that EXPLAIN
// them (status_plan_test.go).

// LinksByStatusSQL and DeletedLinksByStatusSQL are the statements
// UsersByStatus runs on provider_links.
var (
	LinksByStatusSQL        = linksByStatusSQL
	DeletedLinksByStatusSQL = deletedLinksByStatusSQL
)

// AttentionLinksSQL is the statement Attention runs for provider's links,
// and its arguments.
func AttentionLinksSQL(provider string, pendingBefore time.Time, limit int) (string, []any) {
	return attentionLinksSQL, attentionLinksArgs(provider, pendingBefore, limit)
}

// ListUsersSQL is the statement ListUsers runs for q, its arguments
// inlined.
func (s *Store) ListUsersSQL(q ListQuery) string {
	return s.db.ToSQL(func(tx *gorm.DB) *gorm.DB { return listUsersQuery(tx, q).Find(&[]userRow{}) })
}
