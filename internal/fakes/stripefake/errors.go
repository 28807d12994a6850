package stripefake

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrNotFound is returned by the Dashboard methods when the customer does not
// exist or is already deleted.
var ErrNotFound = errors.New("stripefake: no such customer")

// Error types and codes used in Stripe error bodies.
const (
	errTypeInvalidRequest = "invalid_request_error"
	errTypeAPI            = "api_error"
	errTypeIdempotency    = "idempotency_error"

	codeResourceMissing     = "resource_missing"
	codeParameterUnknown    = "parameter_unknown"
	codeRateLimit           = "rate_limit"
	codeIdempotencyKeyInUse = "idempotency_key_in_use"
	codeEmailInvalid        = "email_invalid"
	codeInvalidInteger      = "parameter_invalid_integer"
	codeStringTooLong       = "parameter_invalid_string_too_long"
)

// apiError is the body of a Stripe error response plus its HTTP status.
type apiError struct {
	status  int
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	DocURL  string `json:"doc_url,omitempty"`
}

func (e *apiError) response() response {
	body, err := json.MarshalIndent(struct {
		Error *apiError `json:"error"`
	}{e}, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("stripefake: encoding error body: %v", err))
	}
	return response{status: e.status, body: body}
}

func invalidRequest(param, code, format string, args ...any) *apiError {
	e := &apiError{
		status:  http.StatusBadRequest,
		Type:    errTypeInvalidRequest,
		Code:    code,
		Message: fmt.Sprintf(format, args...),
		Param:   param,
	}
	if code != "" {
		e.DocURL = "https://stripe.com/docs/error-codes/" + dashed(code)
	}
	return e
}

func noSuchCustomer(param, id string) *apiError {
	e := invalidRequest(param, codeResourceMissing, "No such customer: '%s'", id)
	e.status = http.StatusNotFound
	return e
}

func noSuchEvent(param, id string) *apiError {
	e := invalidRequest(param, codeResourceMissing, "No such event: '%s'", id)
	e.status = http.StatusNotFound
	return e
}

func unknownParameter(key string) *apiError {
	return invalidRequest(key, codeParameterUnknown, "Received unknown parameter: %s", key)
}

func unrecognizedURL(method, path string) *apiError {
	return &apiError{
		status: http.StatusNotFound,
		Type:   errTypeInvalidRequest,
		Message: fmt.Sprintf("Unrecognized request URL (%s: %s). Please see https://stripe.com/docs "+
			"or we can help at https://support.stripe.com/.", method, path),
	}
}

func rateLimitError() *apiError {
	return &apiError{
		status: http.StatusTooManyRequests,
		Type:   errTypeInvalidRequest,
		Code:   codeRateLimit,
		Message: "Request rate limit exceeded. Learn more about rate limits here " +
			"https://stripe.com/docs/rate-limits.",
		DocURL: "https://stripe.com/docs/error-codes/rate-limit",
	}
}

func serverError() *apiError {
	return &apiError{
		status: http.StatusInternalServerError,
		Type:   errTypeAPI,
		Message: "Sorry, something went wrong. We've already been notified of the problem, " +
			"but if you need any help, you can reach out to support: https://support.stripe.com/contact",
	}
}

func dashed(code string) string {
	b := []byte(code)
	for i, c := range b {
		if c == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}
