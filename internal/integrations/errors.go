package integrations

import (
	"errors"
	"time"
)

// ErrNotFound reports that the remote object does not exist (deleted in the
// provider, or never there). Adapters wrap it, and mark it Permanent:
// errors.Is(err, ErrNotFound) and IsPermanent(err) both hold.
//
// After an Upsert returns it, creating the object again by calling Upsert with
// an empty Link.RemoteID may, within the provider's idempotency window (Stripe:
// 24 h after the first create), return the id of the deleted object: the
// create key is the same.
var ErrNotFound = errors.New("remote object not found")

// Permanent marks err as permanent: retrying cannot help, so the message is
// dead-lettered at once. It returns nil for a nil err. The result wraps err
// (errors.Is and errors.As see through it) and has err's message.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// RateLimited marks err as the provider throttling Tandem (HTTP 429). It stays
// transient; retryAfter is how long the provider asked to wait, 0 if it did
// not say. It returns nil for a nil err.
func RateLimited(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	if retryAfter < 0 {
		retryAfter = 0
	}
	return &rateLimitedError{err: err, retryAfter: retryAfter}
}

// RetryAfter reports whether err, or an error it wraps, was marked with
// RateLimited, and the wait the provider asked for (0 if it named none, in
// which case the caller's own backoff applies).
func RetryAfter(err error) (time.Duration, bool) {
	var r *rateLimitedError
	if errors.As(err, &r) {
		return r.retryAfter, true
	}
	return 0, false
}

type rateLimitedError struct {
	err        error
	retryAfter time.Duration
}

func (e *rateLimitedError) Error() string { return e.err.Error() }
func (e *rateLimitedError) Unwrap() error { return e.err }
