package salesforce

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// Backoffs the adapter asks for (integrations.RateLimited) when Salesforce
// is throttling or failing; a longer Retry-After header wins.
const (
	// LimitBackoff follows 403 REQUEST_LIMIT_EXCEEDED: the org used up its
	// rolling 24-hour API allowance (or its concurrent long-request
	// allowance), which frees up over minutes to hours, not seconds.
	LimitBackoff = 5 * time.Minute
)

// ErrMultipleMatches reports that the user's external id matches several
// contacts (300 Multiple Choices), so Salesforce refused to pick one. It is
// permanent: someone must merge or re-tag the duplicates in Salesforce.
var ErrMultipleMatches = errors.New("salesforce: several contacts carry the user's external id")

// ErrorItem is one element of a Salesforce error body.
type ErrorItem struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields,omitempty"`
}

// APIError is an error answer of the Salesforce REST API: its status and the
// errors of its body. Its message reads like "salesforce 400
// REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (fields
// LastName)". Adapters' errors wrap it, so errors.As finds it.
type APIError struct {
	StatusCode int
	Errors     []ErrorItem

	// personal are values the request carried (email, name, phone,
	// metadata) that Error masks: Salesforce quotes refused values back,
	// and the error is logged.
	personal []string
}

// maskPersonal makes the APIError inside err, if any, mask the given
// values in its message (values shorter than 5 bytes are left: they say
// little about a person and would mask pieces of Salesforce's own words).
// It returns err.
func maskPersonal(err error, values ...string) error {
	var ae *APIError
	if errors.As(err, &ae) {
		for _, v := range values {
			if len(v) >= 5 {
				ae.personal = append(ae.personal, v)
			}
		}
	}
	return err
}

// personalValues are the values of c that Salesforce's error messages may
// quote back.
func personalValues(c integrations.Customer) []string {
	out := []string{c.Email, c.Name, c.Phone}
	for _, v := range c.Metadata {
		out = append(out, v)
	}
	return out
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "salesforce %d", e.StatusCode)
	if len(e.Errors) == 0 {
		b.WriteString(": " + http.StatusText(e.StatusCode))
	}
	for i, item := range e.Errors {
		if i > 0 {
			b.WriteString(";")
		}
		if item.ErrorCode != "" {
			b.WriteString(" " + item.ErrorCode)
		}
		msg := strings.Join(strings.Fields(item.Message), " ")
		for _, v := range e.personal {
			msg = strings.ReplaceAll(msg, v, "[redacted]")
		}
		if msg == "" {
			msg = http.StatusText(e.StatusCode)
		}
		b.WriteString(": " + msg)
		if len(item.Fields) > 0 {
			b.WriteString(" (fields " + strings.Join(item.Fields, ", ") + ")")
		}
	}
	return b.String()
}

// Has reports whether one of the errors has the given errorCode.
func (e *APIError) Has(code string) bool {
	for _, item := range e.Errors {
		if item.ErrorCode == code {
			return true
		}
	}
	return false
}

// parseErrors reads an error body: a JSON array of ErrorItem, or (some
// resources) a single one.
func parseErrors(body []byte) ([]ErrorItem, bool) {
	var items []ErrorItem
	if err := json.Unmarshal(body, &items); err == nil && len(items) > 0 {
		return items, true
	}
	var one ErrorItem
	if err := json.Unmarshal(body, &one); err == nil && (one.ErrorCode != "" || one.Message != "") {
		return []ErrorItem{one}, true
	}
	return nil, false
}

// classify translates an answer into nil (2xx) or the contract's error
// kinds. It is the only place that does (STYLE habit 6):
//
//   - 300: ErrMultipleMatches, permanent;
//   - 403 REQUEST_LIMIT_EXCEEDED (or a 429): transient, RateLimited with
//     LimitBackoff (or a longer Retry-After);
//   - 5xx: transient (not RateLimited: the request may have executed, and
//     the worker counts it towards its attempts and backs off by its retry
//     tiers);
//   - UNABLE_TO_LOCK_ROW (a record lock held by another transaction):
//     transient;
//   - 404 NOT_FOUND or ENTITY_IS_DELETED: integrations.ErrNotFound,
//     permanent;
//   - any other 4xx (a 401 is one only after the token was renewed):
//     permanent, with Salesforce's message;
//   - anything else, and a 4xx whose body is not Salesforce's JSON (a
//     proxy's error page): transient.
func classify(r response) error {
	if r.status >= 200 && r.status < 300 {
		return nil
	}
	if r.status == http.StatusMultipleChoices {
		var urls []string
		_ = json.Unmarshal(r.body, &urls)
		return integrations.Permanent(fmt.Errorf("%w (salesforce 300: %s)", ErrMultipleMatches, strings.Join(urls, ", ")))
	}
	items, ok := parseErrors(r.body)
	ae := &APIError{StatusCode: r.status, Errors: items}
	wait := retryAfter(r.header)
	switch {
	case ae.Has("REQUEST_LIMIT_EXCEEDED") || r.status == http.StatusTooManyRequests:
		return integrations.RateLimited(ae, max(LimitBackoff, wait))
	case r.status >= 500:
		if !ok {
			return unexpected(r)
		}
		return ae
	case !ok:
		return unexpected(r)
	case ae.Has("UNABLE_TO_LOCK_ROW"):
		return ae
	case r.status == http.StatusNotFound && (ae.Has("NOT_FOUND") || ae.Has("ENTITY_IS_DELETED")):
		return integrations.Permanent(fmt.Errorf("%w (%w)", integrations.ErrNotFound, ae))
	case r.status >= 400:
		return integrations.Permanent(ae)
	default:
		return ae
	}
}

// unexpected describes an answer that is not Salesforce's JSON.
func unexpected(r response) error {
	body := strings.Join(strings.Fields(string(r.body)), " ")
	if len(body) > 200 {
		body = body[:200] + "…"
	}
	return fmt.Errorf("salesforce %d %s: unexpected answer %q", r.status, http.StatusText(r.status), body)
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 0 if
// absent or unreadable.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
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

// parseLimitInfo reads the api-usage part of a Sforce-Limit-Info header
// ("api-usage=18/15000; per-app-api-usage=…").
func parseLimitInfo(h string) (used, limit float64, ok bool) {
	for part := range strings.SplitSeq(h, ";") {
		v, found := strings.CutPrefix(strings.TrimSpace(part), "api-usage=")
		if !found {
			continue
		}
		u, l, found := strings.Cut(v, "/")
		if !found {
			return 0, 0, false
		}
		un, err1 := strconv.ParseInt(strings.TrimSpace(u), 10, 64)
		ln, err2 := strconv.ParseInt(strings.TrimSpace(l), 10, 64)
		if err1 != nil || err2 != nil || un < 0 || ln < 0 {
			return 0, 0, false
		}
		return float64(un), float64(ln), true
	}
	return 0, 0, false
}
