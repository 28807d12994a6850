package store

import (
	"context"
	"fmt"
	"time"
)

// Link statuses (contract: the sync block of the REST API).
const (
	LinkPending  = "pending"
	LinkSynced   = "synced"
	LinkFailed   = "failed"
	LinkConflict = "conflict"
	LinkDeleted  = "deleted"
)

// Link is a provider_links row: how one user stands with one provider.
type Link struct {
	UserID        string `gorm:"primaryKey"`
	Provider      string `gorm:"primaryKey"`
	RemoteID      *string
	Status        string
	SyncedVersion int64
	PushedHash    *string
	MetadataKeys  *string // JSON array of the metadata keys last pushed; see MetadataKeyList
	LastInboundAt *time.Time
	LastError     *string
	SyncedAt      *time.Time
	UpdatedAt     time.Time
}

// TableName is the GORM table name.
func (Link) TableName() string { return "provider_links" }

// Links returns the provider links of the given users, keyed by user id.
func (s *Store) Links(ctx context.Context, userIDs ...string) (map[string][]Link, error) {
	out := make(map[string][]Link, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	var rows []Link
	if err := s.db.WithContext(ctx).Where("user_id IN ?", userIDs).Order("provider").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading provider links: %w", translate(err))
	}
	for _, l := range rows {
		out[l.UserID] = append(out[l.UserID], l)
	}
	return out, nil
}
