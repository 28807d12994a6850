package salesforcefake

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SOQL queries (GET /services/data/vXX.X/query?q=…, and queryAll, which
// also returns deleted contacts), answered as Salesforce does:
// {totalSize, done, nextRecordsUrl, records}, each record with its
// attributes. A result larger than one batch (2,000 records, or the
// batchSize of a Sforce-Query-Options header, 200 to 2,000) is continued
// at nextRecordsUrl (GET /services/data/vXX.X/query/<locator>-<offset>),
// which serves the snapshot taken when the query ran.
//
// The SOQL understood is the part Tandem uses:
//
//	SELECT field, … FROM Contact
//	  [WHERE cond {AND cond} | cond {OR cond}]   (parentheses group; AND and OR need them to mix)
//	  [ORDER BY field [ASC|DESC]] [LIMIT n]
//
// where cond is field = value, field != value, field IN (value, …),
// field NOT IN (…), field LIKE 'pattern%' or, on date fields, field < > <=
// >= a datetime (2024-01-01T00:00:00Z). Text comparisons ignore case, as
// Salesforce's do; null matches an empty field. Anything else is a 400
// MALFORMED_QUERY naming what this fake does not implement.

// queryBatch is Salesforce's default batch of query results.
const queryBatch = 2000

// maxLocators bounds the query cursors the fake keeps (the oldest go first;
// a request for a forgotten one is a 400 INVALID_QUERY_LOCATOR, as after
// Salesforce's 15 minutes of inactivity).
const maxLocators = 200

// queryCursor is the rest of a query result.
type queryCursor struct {
	records []map[string]any
	batch   int
}

// serveQuery routes /query and /queryAll (segs: services data vXX.X query[All] [locator]).
func (s *Server) serveQuery(r *http.Request, segs []string) response {
	if r.Method != http.MethodGet {
		return methodNotAllowed(r.Method)
	}
	version := segs[2]
	if len(segs) == 5 {
		return s.moreResults(version, segs[4])
	}
	q := r.URL.Query().Get("q")
	if q == "" {
		return errorResponse(http.StatusBadRequest, "MALFORMED_QUERY", "The query string is empty: send ?q=<SOQL>")
	}
	parsed, err := s.parseSOQL(q)
	if err != nil {
		return errorResponse(http.StatusBadRequest, "MALFORMED_QUERY", err.Error())
	}
	batch := queryBatch
	if opt := r.Header.Get("Sforce-Query-Options"); opt != "" {
		for _, part := range strings.Split(opt, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if strings.EqualFold(k, "batchSize") {
				n, err := strconv.Atoi(v)
				if err != nil {
					return errorResponse(http.StatusBadRequest, "INVALID_QUERY_OPTIONS", "batchSize must be a number: "+v)
				}
				batch = min(max(n, 200), queryBatch)
			}
		}
	}
	all := segs[3] == "queryAll"

	s.mu.Lock()
	var matched []*Contact
	for _, id := range s.order {
		c := s.contacts[id]
		if (!c.IsDeleted || all) && parsed.where.eval(c) {
			matched = append(matched, c)
		}
	}
	if parsed.orderBy != "" {
		slices.SortStableFunc(matched, func(a, b *Contact) int {
			d := compareField(a, b, parsed.orderBy)
			if parsed.desc {
				d = -d
			}
			return d
		})
	}
	if parsed.limit >= 0 && len(matched) > parsed.limit {
		matched = matched[:parsed.limit]
	}
	records := make([]map[string]any, len(matched))
	for i, c := range matched {
		records[i] = s.record(*c, version, parsed.fields)
	}
	cur := &queryCursor{records: records, batch: batch}
	var locator string
	if len(records) > batch {
		locator = newID("01g")
		if s.cursors == nil {
			s.cursors = map[string]*queryCursor{}
		}
		s.cursors[locator] = cur
		s.cursorOrder = append(s.cursorOrder, locator)
		if len(s.cursorOrder) > maxLocators {
			delete(s.cursors, s.cursorOrder[0])
			s.cursorOrder = s.cursorOrder[1:]
		}
	}
	s.mu.Unlock()
	return queryPage(version, locator, cur, 0)
}

func (s *Server) moreResults(version, ref string) response {
	locator, off, ok := strings.Cut(ref, "-")
	offset, err := strconv.Atoi(off)
	s.mu.Lock()
	cur := s.cursors[locator]
	s.mu.Unlock()
	if !ok || err != nil || cur == nil || offset < 0 || offset > len(cur.records) {
		return errorResponse(http.StatusBadRequest, "INVALID_QUERY_LOCATOR", "invalid query locator")
	}
	return queryPage(version, locator, cur, offset)
}

func queryPage(version, locator string, cur *queryCursor, offset int) response {
	end := min(offset+cur.batch, len(cur.records))
	body := map[string]any{
		"totalSize": len(cur.records),
		"done":      end == len(cur.records),
		"records":   cur.records[offset:end],
	}
	if end < len(cur.records) {
		body["nextRecordsUrl"] = fmt.Sprintf("%s%s/query/%s-%d", dataPrefix, version, locator, end)
	}
	return jsonResponse(http.StatusOK, body)
}

// soql is a parsed query.
type soql struct {
	fields  []string
	where   cond
	orderBy string
	desc    bool
	limit   int // -1: none
}

// dateFields are compared as times.
var dateFields = []string{"CreatedDate", "LastModifiedDate", "SystemModstamp"}

func (s *Server) parseSOQL(q string) (soql, error) {
	p := &soqlParser{toks: tokenize(q), s: s}
	out := soql{limit: -1, where: always{}}
	if !p.keyword("SELECT") {
		return out, fmt.Errorf("unexpected token %q: a query starts with SELECT", p.peek())
	}
	for {
		f, err := p.field()
		if err != nil {
			return out, err
		}
		out.fields = append(out.fields, f)
		if !p.punct(",") {
			break
		}
	}
	if !p.keyword("FROM") {
		return out, fmt.Errorf("unexpected token %q: expecting FROM", p.peek())
	}
	if obj := p.next(); !strings.EqualFold(obj, "Contact") {
		return out, fmt.Errorf("sObject type '%s' is not supported by this fake (only Contact)", obj)
	}
	if p.keyword("WHERE") {
		c, err := p.expr()
		if err != nil {
			return out, err
		}
		out.where = c
	}
	if p.keyword("ORDER") {
		if !p.keyword("BY") {
			return out, fmt.Errorf("unexpected token %q: expecting BY", p.peek())
		}
		f, err := p.field()
		if err != nil {
			return out, err
		}
		out.orderBy = f
		if p.keyword("DESC") {
			out.desc = true
		} else {
			p.keyword("ASC")
		}
	}
	if p.keyword("LIMIT") {
		n, err := strconv.Atoi(p.next())
		if err != nil || n < 0 {
			return out, fmt.Errorf("LIMIT must be a non-negative integer")
		}
		out.limit = n
	}
	if t := p.peek(); t != "" {
		return out, fmt.Errorf("unexpected token %q (this fake implements SELECT … FROM Contact WHERE … ORDER BY … LIMIT …)", t)
	}
	return out, nil
}

// tokenize splits SOQL into words, quoted strings (kept with their quote),
// and punctuation.
func tokenize(q string) []string {
	var toks []string
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'':
			j := i + 1
			var b strings.Builder
			b.WriteByte('\'')
			for j < len(q) && q[j] != '\'' {
				if q[j] == '\\' && j+1 < len(q) {
					j++
				}
				b.WriteByte(q[j])
				j++
			}
			toks = append(toks, b.String()) // unterminated: the parser sees no closing quote
			i = j + 1
		case strings.IndexByte("(),", c) >= 0:
			toks = append(toks, string(c))
			i++
		case c == '!' || c == '<' || c == '>' || c == '=':
			j := i + 1
			if j < len(q) && q[j] == '=' {
				j++
			}
			toks = append(toks, q[i:j])
			i = j
		default:
			j := i
			for j < len(q) && strings.IndexByte(" \t\n\r(),!<>='", q[j]) < 0 {
				j++
			}
			toks = append(toks, q[i:j])
			i = j
		}
	}
	return toks
}

type soqlParser struct {
	toks []string
	s    *Server
}

func (p *soqlParser) peek() string {
	if len(p.toks) == 0 {
		return ""
	}
	return p.toks[0]
}

func (p *soqlParser) next() string {
	t := p.peek()
	if t != "" {
		p.toks = p.toks[1:]
	}
	return t
}

func (p *soqlParser) keyword(k string) bool {
	if strings.EqualFold(p.peek(), k) {
		p.toks = p.toks[1:]
		return true
	}
	return false
}

func (p *soqlParser) punct(s string) bool {
	if p.peek() == s {
		p.toks = p.toks[1:]
		return true
	}
	return false
}

func (p *soqlParser) field() (string, error) {
	name := p.next()
	f, ok := p.s.readable(name)
	if !ok {
		return "", fmt.Errorf("No such column '%s' on entity 'Contact'", name)
	}
	return f, nil
}

// expr reads cond {AND cond} or cond {OR cond}.
func (p *soqlParser) expr() (cond, error) {
	first, err := p.term()
	if err != nil {
		return nil, err
	}
	terms := []cond{first}
	joiner := ""
	for {
		var j string
		switch {
		case p.keyword("AND"):
			j = "AND"
		case p.keyword("OR"):
			j = "OR"
		default:
			if joiner == "OR" {
				return anyOf(terms), nil
			}
			return allOf(terms), nil
		}
		if joiner != "" && joiner != j {
			return nil, fmt.Errorf("unexpected token '%s': AND and OR cannot be mixed without parentheses", j)
		}
		joiner = j
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		terms = append(terms, t)
	}
}

func (p *soqlParser) term() (cond, error) {
	if p.punct("(") {
		c, err := p.expr()
		if err != nil {
			return nil, err
		}
		if !p.punct(")") {
			return nil, fmt.Errorf("unexpected token %q: expecting ')'", p.peek())
		}
		return c, nil
	}
	if p.keyword("NOT") {
		c, err := p.term()
		if err != nil {
			return nil, err
		}
		return not{c}, nil
	}
	f, err := p.field()
	if err != nil {
		return nil, err
	}
	op := p.next()
	switch strings.ToUpper(op) {
	case "=", "!=", "<", ">", "<=", ">=", "LIKE":
		v, err := p.value(f)
		if err != nil {
			return nil, err
		}
		if op != "=" && op != "!=" && strings.ToUpper(op) != "LIKE" && !slices.Contains(dateFields, f) {
			return nil, fmt.Errorf("this fake compares with %s only date fields (%s)", op, strings.Join(dateFields, ", "))
		}
		return compare{field: f, op: strings.ToUpper(op), value: v}, nil
	case "NOT", "IN":
		negate := strings.ToUpper(op) == "NOT"
		if negate && !p.keyword("IN") {
			return nil, fmt.Errorf("unexpected token %q: expecting IN", p.peek())
		}
		if !p.punct("(") {
			return nil, fmt.Errorf("unexpected token %q: expecting '('", p.peek())
		}
		var vals []string
		for {
			v, err := p.value(f)
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
			if p.punct(")") {
				break
			}
			if !p.punct(",") {
				return nil, fmt.Errorf("unexpected token %q: expecting ',' or ')'", p.peek())
			}
		}
		var c cond = in{field: f, values: vals}
		if negate {
			c = not{c}
		}
		return c, nil
	}
	return nil, fmt.Errorf("unexpected token %q: this fake implements = != < > <= >= LIKE IN NOT IN", op)
}

// value reads a literal: a quoted string, null, a boolean, or (for a date
// field) a datetime.
func (p *soqlParser) value(field string) (string, error) {
	t := p.next()
	switch {
	case strings.HasPrefix(t, "'") && slices.Contains(dateFields, field):
		return "", fmt.Errorf("value of filter criterion for field '%s' must be of type dateTime and should not be enclosed in quotes", field)
	case strings.HasPrefix(t, "'"):
		return t[1:], nil
	case strings.EqualFold(t, "null"):
		return "", nil
	case strings.EqualFold(t, "true"), strings.EqualFold(t, "false"):
		return strings.ToLower(t), nil
	case slices.Contains(dateFields, field):
		if _, err := parseDateTime(t); err != nil {
			return "", fmt.Errorf("value of filter criterion for field '%s' must be of type dateTime and should not be enclosed in quotes: %s", field, t)
		}
		return t, nil
	}
	return "", fmt.Errorf("unexpected token %q: expecting a quoted string, null, true or false", t)
}

func parseDateTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05-0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not a datetime: %s", v)
}

// cond is a WHERE condition.
type cond interface{ eval(c *Contact) bool }

type always struct{}

func (always) eval(*Contact) bool { return true }

type allOf []cond

func (a allOf) eval(c *Contact) bool {
	for _, x := range a {
		if !x.eval(c) {
			return false
		}
	}
	return true
}

type anyOf []cond

func (a anyOf) eval(c *Contact) bool {
	for _, x := range a {
		if x.eval(c) {
			return true
		}
	}
	return false
}

type not struct{ c cond }

func (n not) eval(c *Contact) bool { return !n.c.eval(c) }

type in struct {
	field  string
	values []string
}

func (i in) eval(c *Contact) bool {
	for _, v := range i.values {
		if (compare{field: i.field, op: "=", value: v}).eval(c) {
			return true
		}
	}
	return false
}

type compare struct {
	field, op, value string
}

func (x compare) eval(c *Contact) bool {
	if slices.Contains(dateFields, x.field) && x.value != "" {
		want, _ := parseDateTime(x.value)
		have := fieldTime(c, x.field)
		switch x.op {
		case "=":
			return have.Equal(want)
		case "!=":
			return !have.Equal(want)
		case "<":
			return have.Before(want)
		case ">":
			return have.After(want)
		case "<=":
			return !have.After(want)
		case ">=":
			return !have.Before(want)
		}
		return false
	}
	have := fieldText(c, x.field)
	switch x.op {
	case "=":
		return textEqual(x.field, have, x.value)
	case "!=":
		return !textEqual(x.field, have, x.value)
	case "LIKE":
		return like(strings.ToLower(have), strings.ToLower(x.value))
	}
	return false
}

func textEqual(field, a, b string) bool {
	if field == "Id" || field == "CreatedById" || field == "LastModifiedById" {
		return a == b || sameID(a, b)
	}
	return strings.EqualFold(a, b)
}

// like matches SOQL's LIKE: % any run, _ one character.
func like(s, pattern string) bool {
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '%':
		for i := 0; i <= len(s); i++ {
			if like(s[i:], pattern[1:]) {
				return true
			}
		}
		return false
	case '_':
		return s != "" && like(s[1:], pattern[1:])
	}
	return s != "" && s[0] == pattern[0] && like(s[1:], pattern[1:])
}

func fieldTime(c *Contact, field string) time.Time {
	if field == "CreatedDate" {
		return c.CreatedDate
	}
	return c.LastModifiedDate
}

func fieldText(c *Contact, field string) string {
	switch field {
	case "Id":
		return c.ID
	case "IsDeleted":
		return strconv.FormatBool(c.IsDeleted)
	case "Name":
		return c.Name()
	case "CreatedById":
		return c.CreatedByID
	case "LastModifiedById":
		return c.LastModifiedByID
	}
	return c.get(field)
}

func compareField(a, b *Contact, field string) int {
	if slices.Contains(dateFields, field) {
		return fieldTime(a, field).Compare(fieldTime(b, field))
	}
	return strings.Compare(fieldText(a, field), fieldText(b, field))
}
