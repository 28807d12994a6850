package ops

import "errors"

// DetailError is a readiness check's error whose message is meant for
// /readyz (public, free of addresses and secrets): Mount shows it instead of
// "unavailable".
type DetailError struct {
	Detail string
	Err    error
}

func (e *DetailError) Error() string { return e.Err.Error() }
func (e *DetailError) Unwrap() error { return e.Err }

// Detail wraps err so that /readyz shows detail for it.
func Detail(detail string, err error) error { return &DetailError{Detail: detail, Err: err} }

// publicDetail is what /readyz shows for a failed check.
func publicDetail(err error) string {
	var d *DetailError
	if errors.As(err, &d) {
		return d.Detail
	}
	return "unavailable"
}
