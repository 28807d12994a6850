package salesforcefake

import (
	"cmp"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The one SOQL shape the fake answers: the contacts changed since a point of
// SystemModstamp (Tandem's catch-up), oldest first.
var (
	soqlShape = regexp.MustCompile(`(?is)^\s*SELECT\s+(.+?)\s+FROM\s+Contact\s+WHERE\s+(.+?)\s+ORDER\s+BY\s+SystemModstamp(?:\s+ASC)?\s*,\s*Id(?:\s+ASC)?\s+LIMIT\s+(\d+)\s*$`)
	// SystemModstamp >= T, or > T
	soqlSince = regexp.MustCompile(`(?i)^SystemModstamp\s*(>=|>)\s*(\S+)$`)
	// (SystemModstamp > T OR (SystemModstamp = T AND Id > 'id'))
	soqlAfter = regexp.MustCompile(`(?i)^\(\s*SystemModstamp\s*>\s*(\S+)\s+OR\s+\(\s*SystemModstamp\s*=\s*(\S+)\s+AND\s+Id\s*>\s*'([A-Za-z0-9]{15,18})'\s*\)\s*\)$`)
)

// maxQueryLimit is the largest LIMIT the fake serves in one answer (it
// never pages with nextRecordsUrl).
const maxQueryLimit = 2000

// query answers GET /services/data/vXX.X/query?q= (live contacts) and
// /queryAll?q= (deleted and merged ones too, as the recycle bin keeps them)
// for SELECT <fields> FROM Contact WHERE <SystemModstamp >= T | > T |
// (SystemModstamp > T OR (SystemModstamp = T AND Id > 'id'))> ORDER BY
// SystemModstamp, Id LIMIT n (n ≤ 2000): {totalSize, done: true, records}.
// Any other query is a 400 MALFORMED_QUERY. SystemModstamp is
// LastModifiedDate here.
func (s *Server) query(r *http.Request, version string, all bool) response {
	if r.Method != http.MethodGet {
		return methodNotAllowed(r.Method)
	}
	q := r.URL.Query().Get("q")
	m := soqlShape.FindStringSubmatch(q)
	if m == nil {
		return errorResponse(http.StatusBadRequest, "MALFORMED_QUERY", "this fake answers only SELECT … FROM Contact WHERE SystemModstamp … ORDER BY SystemModstamp, Id LIMIT n")
	}
	var fields []string
	for _, f := range strings.Split(m[1], ",") {
		name, ok := s.readable(strings.TrimSpace(f))
		if !ok {
			return errorResponse(http.StatusBadRequest, "INVALID_FIELD", fmt.Sprintf("No such column '%s' on entity 'Contact'.", strings.TrimSpace(f)))
		}
		fields = append(fields, name)
	}
	limit, err := strconv.Atoi(m[3])
	if err != nil || limit <= 0 || limit > maxQueryLimit {
		return errorResponse(http.StatusBadRequest, "MALFORMED_QUERY", "LIMIT must be 1-"+strconv.Itoa(maxQueryLimit))
	}
	match, bad := modstampFilter(strings.TrimSpace(m[2]))
	if bad != "" {
		return errorResponse(http.StatusBadRequest, "MALFORMED_QUERY", bad)
	}
	s.mu.Lock()
	var found []Contact
	for _, id := range s.order {
		c := s.contacts[id]
		if (all || !c.IsDeleted) && match(c.LastModifiedDate.UTC().Truncate(time.Second), c.ID) {
			found = append(found, c.clone())
		}
	}
	s.mu.Unlock()
	slices.SortFunc(found, func(a, b Contact) int {
		return cmp.Or(a.LastModifiedDate.Compare(b.LastModifiedDate), strings.Compare(a.ID, b.ID))
	})
	if len(found) > limit {
		found = found[:limit]
	}
	records := make([]map[string]any, 0, len(found))
	for _, c := range found {
		records = append(records, s.record(c, version, fields))
	}
	return jsonResponse(http.StatusOK, map[string]any{"totalSize": len(records), "done": true, "records": records})
}

// modstampFilter parses the WHERE clause of the query shape.
func modstampFilter(where string) (func(t time.Time, id string) bool, string) {
	parse := func(v string) (time.Time, bool) {
		t, err := time.Parse(time.RFC3339, v)
		return t.UTC(), err == nil
	}
	if m := soqlSince.FindStringSubmatch(where); m != nil {
		t, ok := parse(m[2])
		if !ok {
			return nil, "bad datetime " + m[2]
		}
		if m[1] == ">" {
			return func(at time.Time, _ string) bool { return at.After(t) }, ""
		}
		return func(at time.Time, _ string) bool { return !at.Before(t) }, ""
	}
	if m := soqlAfter.FindStringSubmatch(where); m != nil {
		t, ok1 := parse(m[1])
		t2, ok2 := parse(m[2])
		if !ok1 || !ok2 || !t.Equal(t2) {
			return nil, "bad datetimes " + m[1] + ", " + m[2]
		}
		return func(at time.Time, id string) bool { return at.After(t) || at.Equal(t) && id > m[3] }, ""
	}
	return nil, "unsupported WHERE clause: " + where
}

// UIMerge merges contact victim into master as a person would in
// Salesforce: edit (if not nil) changes the master's fields (the values the
// person kept), the master is saved (LastModifiedById Options.UIUserID, an
// Outbound Message notification) and the victim goes to the recycle bin
// with MasterRecordId set to the master (no notification unless
// Options.NotifyDeletes). It returns the master, or an error wrapping
// ErrNotFound if either is not a live contact.
func (s *Server) UIMerge(masterID, victimID string, edit func(*Contact)) (Contact, error) {
	mid, _ := normalizeID(masterID)
	vid, _ := normalizeID(victimID)
	s.mu.Lock()
	defer s.mu.Unlock()
	master, ok := s.contacts[mid]
	victim, ok2 := s.contacts[vid]
	if !ok || !ok2 || master.IsDeleted || victim.IsDeleted || mid == vid {
		return Contact{}, fmt.Errorf("merging contact %s into %s: %w", victimID, masterID, ErrNotFound)
	}
	upd := master.clone()
	if edit != nil {
		edit(&upd)
	}
	upd.ID, upd.IsDeleted = master.ID, false
	upd.CreatedDate, upd.CreatedByID = master.CreatedDate, master.CreatedByID
	if err := s.checkUI(upd); err != nil {
		return Contact{}, fmt.Errorf("merging contact %s into %s: %w", victimID, masterID, err)
	}
	upd.LastModifiedDate, upd.LastModifiedByID = s.stamp(), s.opts.UIUserID
	*master = upd.clone()
	s.out.enqueue(master.ID, false)
	victim.MasterRecordID = master.ID
	s.remove(victim, s.opts.UIUserID)
	return upd, nil
}
