package store

import "gorm.io/gorm"

// ListUsersSQL is the statement ListUsers runs for q, its arguments
// inlined (for the tests that EXPLAIN it: status_plan_test.go).
func (s *Store) ListUsersSQL(q ListQuery) string {
	return s.db.ToSQL(func(tx *gorm.DB) *gorm.DB { return listUsersQuery(tx, q).Find(&[]userRow{}) })
}
