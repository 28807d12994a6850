package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
	// PushedHash is the state the provider is last known to hold: the last
	// confirmed push, or the state of the last inbound event seen.
	PushedHash    *string
	MetadataKeys  *string // JSON array of the metadata keys last pushed; see MetadataKeyList
	LastInboundAt *time.Time
	LastError     *string
	SyncedAt      *time.Time
	UpdatedAt     time.Time
	// AttemptVersion, AttemptHash and AttemptEmail describe a push whose
	// outcome is unknown (recorded before the call, cleared when the
	// answer is known): the provider holds PushedHash or AttemptHash.
	AttemptVersion *int64
	AttemptHash    *string
	AttemptEmail   *string
	AttemptAt      *time.Time
	// LeaseSeq is the fencing token of the per-pair lease; LeaseUntil is
	// when the current lease expires (MySQL's clock), nil when free.
	LeaseSeq   int64
	LeaseUntil *time.Time
	// PushedRemoteAt is the provider's clock when it answered the last
	// confirmed push (nil if it did not say).
	PushedRemoteAt *time.Time
	// RecentHashes is a JSON array of the states of the last pushes
	// (RecentPushes), newest last.
	RecentHashes *string

	exists bool // the row exists (Store.Sync reads links that do not yet)
}

// RecentPushesKept is how many of a link's last pushed states are kept.
const RecentPushesKept = 8

// RecentPushes returns the states of the link's last pushes, newest last.
func (l Link) RecentPushes() []string {
	if l.RecentHashes == nil {
		return nil
	}
	var hashes []string
	_ = json.Unmarshal([]byte(*l.RecentHashes), &hashes)
	return hashes
}

// withRecent returns the JSON of l's recent pushes with h added.
func (l Link) withRecent(h string) *string {
	hashes := l.RecentPushes()
	if h != "" {
		hashes = append(slices.DeleteFunc(hashes, func(x string) bool { return x == h }), h)
	}
	if len(hashes) > RecentPushesKept {
		hashes = hashes[len(hashes)-RecentPushesKept:]
	}
	if len(hashes) == 0 {
		return nil
	}
	b, _ := json.Marshal(hashes)
	s := string(b)
	return &s
}

// pushedRecently reports whether h is the state of one of l's recent
// pushes.
func (l Link) pushedRecently(h string) bool {
	return h != "" && slices.Contains(l.RecentPushes(), h)
}

// Unsure reports whether a push of this link has an unknown outcome: the
// provider may hold its state (AttemptHash) rather than PushedHash.
func (l Link) Unsure() bool { return l.AttemptHash != nil || l.AttemptVersion != nil }

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
