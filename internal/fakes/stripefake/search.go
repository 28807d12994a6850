package stripefake

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Customer search (GET /v1/customers/search), as Stripe's Search API
// answers it: {"object": "search_result", "data", "has_more", "next_page",
// "url"}, paged with limit (1 to 100, default 10) and page (the next_page of
// the previous answer). The query language is the part of Stripe's that
// Tandem uses: clauses field:'value' (or "value") on email, name, phone and
// metadata['key'], joined by AND or by OR (not both, as Stripe requires).
// email matches case-insensitively, the others exactly. Anything else is a
// 400 naming what this fake does not implement.
//
// Stripe's search index lags writes by up to a minute; SetSearchLag makes
// customers created less than that long ago invisible to search (the list
// endpoint sees them at once), so a test can show what a caller does while
// the index catches up.

// searchClause is one field:'value' of a query.
type searchClause struct {
	field string // "email", "name", "phone" or "metadata"
	key   string // the metadata key
	value string
}

func (q searchClause) match(c Customer) bool {
	switch q.field {
	case "email":
		return strings.EqualFold(c.Email, q.value)
	case "name":
		return c.Name == q.value
	case "phone":
		return c.Phone == q.value
	}
	v, ok := c.Metadata[q.key]
	return ok && v == q.value
}

// parseSearchQuery reads a query; or reports whether clauses are ORed.
func parseSearchQuery(s string) (clauses []searchClause, or bool, err *apiError) {
	bad := func(format string, args ...any) ([]searchClause, bool, *apiError) {
		return nil, false, invalidRequest("query", "", format, args...)
	}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return bad("Missing required param: query.")
	}
	joiner := ""
	for {
		var c searchClause
		switch {
		case strings.HasPrefix(rest, "metadata["):
			rest = rest[len("metadata["):]
			key, after, ok := quoted(rest)
			if !ok || !strings.HasPrefix(after, "]") {
				return bad("Invalid query: expected metadata['key'] near %q", truncate(rest, 30))
			}
			c.field, c.key, rest = "metadata", key, after[1:]
		default:
			i := strings.IndexByte(rest, ':')
			if i < 0 {
				return bad("Invalid query: expected field:'value' near %q", truncate(rest, 30))
			}
			c.field = rest[:i]
			switch c.field {
			case "email", "name", "phone":
			default:
				return bad("stripefake: search on field %q exists in Stripe (or not) but this fake does not implement it", c.field)
			}
			rest = rest[i:]
		}
		if !strings.HasPrefix(rest, ":") {
			return bad("stripefake: only the exact-match operator ':' is implemented (near %q)", truncate(rest, 30))
		}
		v, after, ok := quoted(rest[1:])
		if !ok {
			return bad("Invalid query: the value must be quoted, near %q", truncate(rest, 30))
		}
		c.value = v
		clauses = append(clauses, c)
		rest = strings.TrimSpace(after)
		if rest == "" {
			return clauses, joiner == "OR", nil
		}
		word, tail, _ := strings.Cut(rest, " ")
		if word != "AND" && word != "OR" {
			return bad("Invalid query: expected AND or OR near %q", truncate(rest, 30))
		}
		if joiner != "" && joiner != word {
			return bad("Invalid query: AND and OR cannot be combined in one query")
		}
		joiner, rest = word, strings.TrimSpace(tail)
	}
}

// quoted reads a value in single or double quotes (a backslash escapes the
// quote) at the start of s and returns it and what follows.
func quoted(s string) (string, string, bool) {
	if s == "" || (s[0] != '\'' && s[0] != '"') {
		return "", s, false
	}
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case q:
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(s[i])
		}
	}
	return "", s, false
}

// SetSearchLag makes customers created less than d ago (Clock time)
// invisible to GET /v1/customers/search, as Stripe's lagging index would.
// 0 (the default) shows every customer at once.
func (s *Server) SetSearchLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searchLag = d
}

func (s *Server) searchCustomers(c *call) response {
	var (
		query  string
		limit  = 10
		offset int
	)
	for _, f := range c.fields {
		if len(f.path) != 0 && f.root != "expand" {
			return unknownParameter(f.key).response()
		}
		switch f.root {
		case "query":
			query = f.last()
		case "limit":
			n, err := strconv.Atoi(f.last())
			switch {
			case err != nil:
				return invalidRequest("limit", codeInvalidInteger, "Invalid integer: %s", f.last()).response()
			case n < 1 || n > 100:
				return invalidRequest("limit", "", "This value must be between 1 and 100 (it currently is %d).", n).response()
			}
			limit = n
		case "page":
			n, ok := decodePage(f.last())
			if !ok {
				return invalidRequest("page", "", "Invalid page token: %s", f.last()).response()
			}
			offset = n
		case "expand":
		default:
			return unknownParameter(f.key).response()
		}
	}
	clauses, or, aerr := parseSearchQuery(query)
	if aerr != nil {
		return aerr.response()
	}
	return s.execute(c, func(now time.Time) response {
		var items []*customerRecord
		for _, rec := range s.customers {
			if rec.c.Deleted || (s.searchLag > 0 && now.Sub(rec.c.Created) < s.searchLag) {
				continue
			}
			matched := !or
			for _, q := range clauses {
				if or {
					matched = matched || q.match(rec.c)
				} else {
					matched = matched && q.match(rec.c)
				}
			}
			if matched {
				items = append(items, rec)
			}
		}
		sortNewestFirst(items, (*customerRecord).key)
		items = items[min(offset, len(items)):]
		more := len(items) > limit
		if more {
			items = items[:limit]
		}
		data := make([]Customer, len(items))
		for i, rec := range items {
			data[i] = rec.c
		}
		var next *string
		if more {
			p := encodePage(offset + limit)
			next = &p
		}
		return jsonResponse(struct {
			Object   string     `json:"object"`
			Data     []Customer `json:"data"`
			HasMore  bool       `json:"has_more"`
			NextPage *string    `json:"next_page"`
			URL      string     `json:"url"`
		}{"search_result", data, more, next, "/v1/customers/search"})
	})
}

// Page tokens are opaque to clients; here they hold an offset into the
// result.
func encodePage(offset int) string {
	return "page_" + base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(offset)))
}

func decodePage(p string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(p, "page_"))
	if err != nil || !strings.HasPrefix(p, "page_") {
		return 0, false
	}
	n, err := strconv.Atoi(string(b))
	return n, err == nil && n >= 0
}
