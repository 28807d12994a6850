package stripefake

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// field is one form key split the way Stripe reads it: "metadata[plan]" has
// root "metadata" and path ["plan"]; "expand[]" has path [""].
type field struct {
	key    string
	root   string
	path   []string
	values []string
}

// last returns the value that wins when a scalar key is sent more than once.
func (f field) last() string { return f.values[len(f.values)-1] }

// parseFields splits form keys into fields, sorted by key so the first
// reported problem is deterministic. Keys with malformed brackets keep the
// whole key as root, so they surface as unknown parameters.
func parseFields(v url.Values) []field {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fields := make([]field, 0, len(keys))
	for _, k := range keys {
		f := field{key: k, root: k, values: v[k]}
		if i := strings.IndexByte(k, '['); i > 0 {
			if path, ok := splitBrackets(k[i:]); ok {
				f.root, f.path = k[:i], path
			}
		}
		fields = append(fields, f)
	}
	return fields
}

func splitBrackets(s string) ([]string, bool) {
	var path []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, false
		}
		path = append(path, s[1:end])
		s = s[end+1:]
	}
	return path, true
}

// stringList reads an array parameter sent as name[]=a&name[]=b or
// name[0]=a&name[1]=b (the form stripe-go uses). fields must all share a root.
func stringList(fields []field) ([]string, *apiError) {
	type item struct {
		idx int
		val string
	}
	var items []item
	for _, f := range fields {
		if len(f.path) != 1 {
			return nil, invalidRequest(f.root, "", "Invalid array")
		}
		if f.path[0] == "" {
			for _, v := range f.values {
				items = append(items, item{idx: len(items), val: v})
			}
			continue
		}
		idx, err := strconv.Atoi(f.path[0])
		if err != nil || idx < 0 {
			return nil, invalidRequest(f.root, "", "Invalid array")
		}
		items = append(items, item{idx: idx, val: f.last()})
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.idx - b.idx })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.val
	}
	return out, nil
}

// listParams are the pagination parameters shared by list endpoints.
type listParams struct {
	limit         int
	startingAfter string
	endingBefore  string
	created       createdFilter
}

// createdFilter is Stripe's created=<ts> / created[gt|gte|lt|lte]=<ts> filter.
type createdFilter struct {
	eq, gt, gte, lt, lte *int64
}

func (c createdFilter) match(ts int64) bool {
	switch {
	case c.eq != nil && ts != *c.eq,
		c.gt != nil && ts <= *c.gt,
		c.gte != nil && ts < *c.gte,
		c.lt != nil && ts >= *c.lt,
		c.lte != nil && ts > *c.lte:
		return false
	}
	return true
}

// parseListField consumes the pagination and created-filter fields common to
// list endpoints. It reports whether f was one of them.
func parseListField(p *listParams, f field) (bool, *apiError) {
	switch f.root {
	case "limit":
		if len(f.path) != 0 {
			return true, unknownParameter(f.key)
		}
		n, err := strconv.Atoi(f.last())
		if err != nil {
			return true, invalidRequest("limit", codeInvalidInteger, "Invalid integer: %s", f.last())
		}
		if n < 1 {
			return true, invalidRequest("limit", "", "This value must be greater than or equal to 1.")
		}
		if n > 100 {
			return true, invalidRequest("limit", "", "This value must be less than or equal to 100 (it currently is %d).", n)
		}
		p.limit = n
	case "starting_after", "ending_before":
		if len(f.path) != 0 {
			return true, unknownParameter(f.key)
		}
		if f.root == "starting_after" {
			p.startingAfter = f.last()
		} else {
			p.endingBefore = f.last()
		}
	case "created":
		var dst **int64
		switch {
		case len(f.path) == 0:
			dst = &p.created.eq
		case len(f.path) == 1 && f.path[0] == "gt":
			dst = &p.created.gt
		case len(f.path) == 1 && f.path[0] == "gte":
			dst = &p.created.gte
		case len(f.path) == 1 && f.path[0] == "lt":
			dst = &p.created.lt
		case len(f.path) == 1 && f.path[0] == "lte":
			dst = &p.created.lte
		default:
			return true, unknownParameter(f.key)
		}
		n, err := strconv.ParseInt(f.last(), 10, 64)
		if err != nil {
			return true, invalidRequest(f.key, codeInvalidInteger, "Invalid integer: %s", f.last())
		}
		*dst = &n
	case "expand":
		// Expansion is accepted and ignored: customers and events have no
		// expandable fields this fake fills in.
	default:
		return false, nil
	}
	return true, nil
}

// page selects one page of items already sorted newest first. key returns an
// item's sort position; cursorKey resolves a starting_after/ending_before id
// to a position (ok false when unknown).
func page[T any](items []T, p listParams, key func(T) sortKey, cursorKey func(id string) (sortKey, bool), kind string) ([]T, bool, *apiError) {
	if p.limit == 0 {
		p.limit = 10
	}
	if p.startingAfter != "" && p.endingBefore != "" {
		return nil, false, invalidRequest("ending_before", "",
			"You may only specify one of these parameters: ending_before, starting_after.")
	}
	switch {
	case p.startingAfter != "":
		cur, ok := cursorKey(p.startingAfter)
		if !ok {
			return nil, false, invalidRequest("starting_after", codeResourceMissing, "No such %s: '%s'", kind, p.startingAfter)
		}
		i := 0
		for i < len(items) && !key(items[i]).less(cur) {
			i++
		}
		items = items[i:]
	case p.endingBefore != "":
		cur, ok := cursorKey(p.endingBefore)
		if !ok {
			return nil, false, invalidRequest("ending_before", codeResourceMissing, "No such %s: '%s'", kind, p.endingBefore)
		}
		i := 0
		for i < len(items) && cur.less(key(items[i])) {
			i++
		}
		items = items[:i]
		if len(items) > p.limit {
			return items[len(items)-p.limit:], true, nil
		}
		return items, false, nil
	}
	if len(items) > p.limit {
		return items[:p.limit], true, nil
	}
	return items, false, nil
}

// sortKey orders objects the way Stripe lists them: by created, then by
// creation sequence to break ties within one second.
type sortKey struct {
	created int64
	seq     uint64
}

func (a sortKey) less(b sortKey) bool {
	if a.created != b.created {
		return a.created < b.created
	}
	return a.seq < b.seq
}

// sortNewestFirst orders items the way Stripe lists return them.
func sortNewestFirst[T any](items []T, key func(T) sortKey) {
	slices.SortStableFunc(items, func(a, b T) int {
		ka, kb := key(a), key(b)
		switch {
		case kb.less(ka):
			return -1
		case ka.less(kb):
			return 1
		}
		return 0
	})
}
