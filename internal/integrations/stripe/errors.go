package stripe

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// apiError is an error answer of the Stripe API with a readable message
// ("stripe 400 invalid_request_error email_invalid: Invalid email address:
// x (param email) [request req_123]"). It wraps the *stripego.Error, so
// errors.As still finds Stripe's fields.
type apiError struct {
	err *stripego.Error
	// personal are the values the request carried (email, name, phone,
	// metadata): Stripe's messages quote them ("Invalid email address:
	// <it>"), and the error is logged, so Error masks them.
	personal []string
}

// maskPersonal makes the Stripe API error inside err, if any, mask the
// given values in its message. Values shorter than 5 bytes are left: they
// say little about a person and would mask pieces of Stripe's own words.
// It returns err.
func maskPersonal(err error, values ...string) error {
	var ae *apiError
	if errors.As(err, &ae) {
		for _, v := range values {
			if len(v) >= 5 {
				ae.personal = append(ae.personal, v)
			}
		}
	}
	return err
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stripe %d", e.err.HTTPStatusCode)
	if e.err.Type != "" {
		b.WriteString(" " + string(e.err.Type))
	}
	if e.err.Code != "" {
		b.WriteString(" " + string(e.err.Code))
	}
	msg := e.err.Msg
	if msg == "" {
		msg = http.StatusText(e.err.HTTPStatusCode)
	}
	for _, v := range e.personal {
		msg = strings.ReplaceAll(msg, v, "[redacted]")
	}
	b.WriteString(": " + msg)
	if e.err.Param != "" {
		b.WriteString(" (param " + e.err.Param + ")")
	}
	if e.err.RequestID != "" {
		b.WriteString(" [request " + e.err.RequestID + "]")
	}
	return b.String()
}

func (e *apiError) Unwrap() error { return e.err }

// stripeError returns the Stripe API error inside err, if any.
func stripeError(err error) (*stripego.Error, bool) {
	var se *stripego.Error
	ok := errors.As(err, &se)
	return se, ok
}

// classify translates an error of stripe-go into the contract's error kinds.
// It is the only place that does (STYLE habit 6):
//
//   - 429: transient, RateLimited with Stripe's Retry-After (0 if none); the
//     adapter's own limiter slows down too;
//   - 409 (another request with the same idempotency key is still running,
//     or a lock conflict; Stripe asks to retry) and 5xx: transient;
//   - 404 resource_missing: ErrNotFound, permanent;
//   - any other 4xx: permanent, with Stripe's message;
//   - anything that is not an API answer (network failure, timeout, a body
//     that is not Stripe's JSON, such as a proxy's error page): transient,
//     returned unchanged.
func (a *Adapter) classify(err error) error {
	se, ok := stripeError(err)
	if !ok {
		return err
	}
	ae := &apiError{err: se}
	switch status := se.HTTPStatusCode; {
	case status == http.StatusTooManyRequests:
		wait := retryAfter(se)
		a.limiter.throttled(wait)
		return integrations.RateLimited(ae, wait)
	case status == http.StatusConflict, status >= 500, status < 400:
		return ae
	case status == http.StatusNotFound && se.Code == stripego.ErrorCodeResourceMissing:
		return integrations.Permanent(fmt.Errorf("%w (%w)", integrations.ErrNotFound, ae))
	default:
		return integrations.Permanent(ae)
	}
}

// isNotFound reports whether err is Stripe's 404 resource_missing.
func isNotFound(err error) bool {
	se, ok := stripeError(err)
	return ok && se.HTTPStatusCode == http.StatusNotFound && se.Code == stripego.ErrorCodeResourceMissing
}

// isIdempotencyMismatch reports whether Stripe refused an idempotency key
// because it was first used with other parameters (400 idempotency_error; a
// key in use by a concurrent request is a 409).
func isIdempotencyMismatch(err error) bool {
	se, ok := stripeError(err)
	return ok && se.HTTPStatusCode == http.StatusBadRequest && se.Type == stripego.ErrorTypeIdempotency
}

// retryAfter reads the Retry-After header (seconds or an HTTP date) of a
// Stripe error answer; 0 if absent or unreadable.
func retryAfter(se *stripego.Error) time.Duration {
	if se.LastResponse == nil {
		return 0
	}
	v := strings.TrimSpace(se.LastResponse.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if at, err := http.ParseTime(v); err == nil {
		if d := time.Until(at); d > 0 {
			return d
		}
	}
	return 0
}
