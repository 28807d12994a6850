package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Errors of BeginIdempotent.
var (
	// ErrIdempotencyMismatch: the key was used with another request body.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrIdempotencyInFlight: the first request with the key is still running.
	ErrIdempotencyInFlight = errors.New("a request with this idempotency key is in progress")
	// ErrIdempotencyLost: the caller's claim on the key was taken over by a
	// retry (it was older than the abandon period): the caller's request
	// must not commit, and stores or releases nothing.
	ErrIdempotencyLost = errors.New("the idempotency key was taken over by another request with it")
)

// IdempotencyKey identifies one API Idempotency-Key: Scope is a hash of the
// token and the route, RequestHash a hash of the request body.
type IdempotencyKey struct {
	Scope       string
	Key         string
	RequestHash string
	// Claim identifies the caller's claim on the key (BeginIdempotent sets
	// it): FinishIdempotent, ReleaseIdempotent and a SaveResponse act only
	// while the claim is still the caller's.
	Claim time.Time
}

// StoredResponse is the response recorded for an idempotency key.
type StoredResponse struct {
	Status int
	Body   []byte
}

type idemRow struct {
	Scope        string
	IdemKey      string
	RequestHash  string
	StatusCode   *int
	ResponseBody []byte
	CreatedAt    time.Time
	ExpiresAt    time.Time
}

func (idemRow) TableName() string { return "idempotency_keys" }

// BeginIdempotent claims k for a new request, kept for ttl. It returns the
// key with the caller's Claim and no response when the caller owns the key
// and must run the request; the stored response when the request already
// ran; ErrIdempotencyMismatch when the key was used with another body;
// ErrIdempotencyInFlight while the first request runs. A claim left
// unfinished for longer than abandon (its process died, or it hangs) is
// taken over; the first claimant then gets ErrIdempotencyLost when it
// tries to store or release anything.
func (s *Store) BeginIdempotent(ctx context.Context, k IdempotencyKey, ttl, abandon time.Duration) (IdempotencyKey, *StoredResponse, error) {
	db := s.db.WithContext(ctx)
	for range 5 {
		now := s.clock()
		row := idemRow{Scope: k.Scope, IdemKey: k.Key, RequestHash: k.RequestHash, CreatedAt: now, ExpiresAt: now.Add(ttl)}
		err := translate(db.Create(&row).Error)
		if err == nil {
			k.Claim = now
			return k, nil, nil
		}
		if !errors.Is(err, ErrConflict) {
			return k, nil, fmt.Errorf("claiming idempotency key: %w", err)
		}
		var cur idemRow
		err = translate(db.Where("scope = ? AND idem_key = ?", k.Scope, k.Key).Take(&cur).Error)
		if errors.Is(err, ErrNotFound) {
			continue // released in between: claim again
		}
		if err != nil {
			return k, nil, fmt.Errorf("reading idempotency key: %w", err)
		}
		switch {
		case !cur.ExpiresAt.After(now):
			if err := db.Where("scope = ? AND idem_key = ? AND expires_at <= ?", k.Scope, k.Key, now).
				Delete(&idemRow{}).Error; err != nil {
				return k, nil, fmt.Errorf("expiring idempotency key: %w", err)
			}
			continue
		case cur.RequestHash != k.RequestHash:
			return k, nil, ErrIdempotencyMismatch
		case cur.StatusCode != nil:
			return k, &StoredResponse{Status: *cur.StatusCode, Body: cur.ResponseBody}, nil
		case now.Sub(cur.CreatedAt) < abandon:
			return k, nil, ErrIdempotencyInFlight
		}
		// Abandoned by a process that died: take it over, once.
		res := db.Model(&idemRow{}).
			Where("scope = ? AND idem_key = ? AND status_code IS NULL AND created_at = ?", k.Scope, k.Key, cur.CreatedAt).
			Update("created_at", now)
		if res.Error != nil {
			return k, nil, fmt.Errorf("taking over idempotency key: %w", res.Error)
		}
		if res.RowsAffected == 1 {
			k.Claim = now
			return k, nil, nil
		}
	}
	return k, nil, ErrIdempotencyInFlight
}

// FinishIdempotent stores the response of the request that owns k (its
// Claim). It returns ErrIdempotencyLost when the claim was taken over.
func (s *Store) FinishIdempotent(ctx context.Context, k IdempotencyKey, status int, body []byte) error {
	return s.finish(s.db.WithContext(ctx), k, status, body)
}

func (s *Store) finish(db *gorm.DB, k IdempotencyKey, status int, body []byte) error {
	res := db.Model(&idemRow{}).Where("scope = ? AND idem_key = ? AND status_code IS NULL AND created_at = ?", k.Scope, k.Key, k.Claim).
		Updates(map[string]any{"status_code": status, "response_body": body})
	if res.Error != nil {
		return fmt.Errorf("storing idempotent response: %w", translate(res.Error))
	}
	if res.RowsAffected == 0 {
		return ErrIdempotencyLost
	}
	return nil
}

func (s *Store) saveResponseTx(tx *gorm.DB, save *SaveResponse, u User) error {
	body, err := save.Render(u)
	if err != nil {
		return fmt.Errorf("rendering idempotent response: %w", err)
	}
	return s.finish(tx, save.Key, save.Status, body)
}

// ReleaseIdempotent forgets the caller's unfinished claim on k (the request
// failed in a way a retry may fix), so the client can retry with the same
// key. A claim taken over by another request is left alone.
func (s *Store) ReleaseIdempotent(ctx context.Context, k IdempotencyKey) error {
	err := s.db.WithContext(ctx).Where("scope = ? AND idem_key = ? AND status_code IS NULL AND created_at = ?", k.Scope, k.Key, k.Claim).
		Delete(&idemRow{}).Error
	if err != nil {
		return fmt.Errorf("releasing idempotency key: %w", err)
	}
	return nil
}

// PruneIdempotency deletes up to limit expired keys and returns how many.
func (s *Store) PruneIdempotency(ctx context.Context, limit int) (int64, error) {
	res := s.db.WithContext(ctx).Exec("DELETE FROM idempotency_keys WHERE expires_at < ? LIMIT ?", s.clock(), limit)
	if res.Error != nil {
		return 0, fmt.Errorf("pruning idempotency keys: %w", res.Error)
	}
	return res.RowsAffected, nil
}
