package salesforcefake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNotFound is returned by the UI methods when the contact does not exist
// or is deleted.
var ErrNotFound = errors.New("salesforcefake: no such contact")

// Contact is a Contact record as the fake stores it. Empty strings are
// nulls.
type Contact struct {
	ID           string // 18-character record id ("003...")
	FirstName    string // up to 40 characters
	LastName     string // required, up to 80 characters
	Email        string // up to 80 characters, must look like an address
	Phone        string // up to 40 characters
	TandemUserID string // Tandem_User_Id__c, the external id (up to 255)
	// Custom holds the custom fields of Options.CustomFields that are set.
	Custom map[string]string

	IsDeleted bool // in the recycle bin
	// MasterRecordID is, for a contact deleted by a merge (UIMerge), the
	// contact it was merged into; "" otherwise.
	MasterRecordID   string
	CreatedDate      time.Time
	CreatedByID      string
	LastModifiedDate time.Time
	LastModifiedByID string
}

func (c Contact) clone() Contact {
	c.Custom = maps.Clone(c.Custom)
	return c
}

// Name is the compound name Salesforce shows: FirstName LastName.
func (c Contact) Name() string { return strings.TrimSpace(c.FirstName + " " + c.LastName) }

// Field limits (characters) of the writable fields.
const (
	maxFirstName   = 40
	maxLastName    = 80
	maxEmail       = 80
	maxPhone       = 40
	maxExternalID  = 255
	maxLongText    = 131072
	restTimeLayout = "2006-01-02T15:04:05.000+0000"
)

// readOnlyFields are Contact fields that exist but cannot be written.
var readOnlyFields = []string{
	"Id", "IsDeleted", "Name", "CreatedDate", "CreatedById", "LastModifiedDate",
	"LastModifiedById", "SystemModstamp", "MasterRecordId",
}

// writable returns the canonical name and length limit of a writable field
// (matched case-insensitively, like Salesforce).
func (s *Server) writable(name string) (string, int, bool) {
	for _, f := range []struct {
		name string
		max  int
	}{
		{"FirstName", maxFirstName}, {"LastName", maxLastName}, {"Email", maxEmail},
		{"Phone", maxPhone}, {ExternalIDField, maxExternalID},
	} {
		if strings.EqualFold(name, f.name) {
			return f.name, f.max, true
		}
	}
	for _, f := range s.opts.CustomFields {
		if strings.EqualFold(name, f) {
			return f, maxLongText, true
		}
	}
	return "", 0, false
}

// readable returns the canonical name of any field (for ?fields=).
func (s *Server) readable(name string) (string, bool) {
	if f, _, ok := s.writable(name); ok {
		return f, true
	}
	for _, f := range readOnlyFields {
		if strings.EqualFold(name, f) {
			return f, true
		}
	}
	return "", false
}

func (c *Contact) get(field string) string {
	switch field {
	case "FirstName":
		return c.FirstName
	case "LastName":
		return c.LastName
	case "Email":
		return c.Email
	case "Phone":
		return c.Phone
	case ExternalIDField:
		return c.TandemUserID
	}
	return c.Custom[field]
}

func (c *Contact) set(field, v string) {
	switch field {
	case "FirstName":
		c.FirstName = v
	case "LastName":
		c.LastName = v
	case "Email":
		c.Email = v
	case "Phone":
		c.Phone = v
	case ExternalIDField:
		c.TandemUserID = v
	default:
		if v == "" {
			delete(c.Custom, field)
			return
		}
		if c.Custom == nil {
			c.Custom = map[string]string{}
		}
		c.Custom[field] = v
	}
}

// parseFields reads a PATCH body: a JSON object of writable fields with
// string or null values. It returns them by canonical name ("" for null).
func (s *Server) parseFields(body []byte) (map[string]string, *response) {
	fail := func(r response) (map[string]string, *response) { return nil, &r }
	if len(bytes.TrimSpace(body)) == 0 {
		return fail(errorResponse(http.StatusBadRequest, "JSON_PARSER_ERROR", "No content to map due to end-of-input"))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return fail(errorResponse(http.StatusBadRequest, "JSON_PARSER_ERROR", "Unexpected character: the body must be a JSON object: "+err.Error()))
	}
	out := make(map[string]string, len(raw))
	for name, v := range raw {
		field, maxLen, ok := s.writable(name)
		if !ok {
			if _, exists := s.readable(name); exists {
				return fail(errorResponse(http.StatusBadRequest, "INVALID_FIELD_FOR_INSERT_UPDATE",
					"Unable to create/update fields: "+name+". Please check the security settings of this field and verify that it is read/write for your profile or permission set.", name))
			}
			return fail(errorResponse(http.StatusBadRequest, "INVALID_FIELD", "No such column '"+name+"' on sobject of type Contact"))
		}
		var str *string
		if err := json.Unmarshal(v, &str); err != nil {
			return fail(errorResponse(http.StatusBadRequest, "JSON_PARSER_ERROR",
				"Cannot deserialize instance of string from "+string(v)+" value for field "+name))
		}
		val := ""
		if str != nil {
			val = *str
		}
		if n := utf8.RuneCountInString(val); n > maxLen {
			return fail(errorResponse(http.StatusBadRequest, "STRING_TOO_LONG",
				fmt.Sprintf("%s: data value too large: %.40s (max length=%d)", field, val, maxLen), field))
		}
		out[field] = val
	}
	return out, nil
}

var emailShape = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s.]+$`)

// validate checks the rules every saved contact meets.
func validate(c Contact) *response {
	if strings.TrimSpace(c.LastName) == "" {
		r := errorResponse(http.StatusBadRequest, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", "LastName")
		return &r
	}
	if c.Email != "" && !emailShape.MatchString(c.Email) {
		r := errorResponse(http.StatusBadRequest, "INVALID_EMAIL_ADDRESS", "Email: invalid email address: "+c.Email, "Email")
		return &r
	}
	return nil
}

// responseError turns an error response into an error for the UI methods.
func responseError(r *response) error {
	var items []apiError
	_ = json.Unmarshal(r.body, &items)
	if len(items) == 0 {
		return fmt.Errorf("salesforcefake: status %d", r.status)
	}
	return fmt.Errorf("salesforcefake: %s: %s", items[0].ErrorCode, items[0].Message)
}

// recordURL is the REST path of a contact.
func recordURL(version, id string) string {
	return dataPrefix + version + "/sobjects/Contact/" + id
}

// record renders a contact as the REST API returns it, limited to fields
// (canonical names) when fields is not nil.
func (s *Server) record(c Contact, version string, fields []string) map[string]any {
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	all := map[string]any{
		"Id":               c.ID,
		"IsDeleted":        c.IsDeleted,
		"FirstName":        nullable(c.FirstName),
		"LastName":         nullable(c.LastName),
		"Name":             nullable(c.Name()),
		"Email":            nullable(c.Email),
		"Phone":            nullable(c.Phone),
		ExternalIDField:    nullable(c.TandemUserID),
		"CreatedDate":      c.CreatedDate.UTC().Format(restTimeLayout),
		"CreatedById":      c.CreatedByID,
		"LastModifiedDate": c.LastModifiedDate.UTC().Format(restTimeLayout),
		"LastModifiedById": c.LastModifiedByID,
		"SystemModstamp":   c.LastModifiedDate.UTC().Format(restTimeLayout),
		"MasterRecordId":   nullable(c.MasterRecordID),
	}
	for _, f := range s.opts.CustomFields {
		all[f] = nullable(c.Custom[f])
	}
	out := map[string]any{"attributes": map[string]string{"type": "Contact", "url": recordURL(version, c.ID)}}
	if fields == nil {
		maps.Copy(out, all)
		return out
	}
	for _, f := range fields {
		out[f] = all[f]
	}
	return out
}

// fieldsParam reads ?fields=A,B into canonical names (nil without it).
func (s *Server) fieldsParam(r *http.Request) ([]string, *response) {
	v := r.URL.Query().Get("fields")
	if v == "" {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		f, ok := s.readable(name)
		if !ok {
			resp := errorResponse(http.StatusBadRequest, "INVALID_FIELD",
				"\n"+v+"\n^\nERROR at Row:1:Column:1\nNo such column '"+name+"' on entity 'Contact'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.")
			return nil, &resp
		}
		out = append(out, f)
	}
	return out, nil
}

// stamp returns the Clock time truncated to the second, as Salesforce
// stores LastModifiedDate.
func (s *Server) stamp() time.Time { return s.now().UTC().Truncate(time.Second) }

// liveByExternalID returns the live contacts whose external id matches v
// (case-insensitively), in creation order. s.mu is held.
func (s *Server) liveByExternalID(v string) []*Contact {
	var out []*Contact
	for _, id := range s.order {
		if c := s.contacts[id]; !c.IsDeleted && strings.EqualFold(c.TandemUserID, v) {
			out = append(out, c)
		}
	}
	return out
}

// insert stores a new contact and queues its notification. s.mu is held.
func (s *Server) insert(c Contact) {
	stored := c.clone()
	s.contacts[c.ID] = &stored
	s.order = append(s.order, c.ID)
	s.out.enqueue(c.ID, false)
}

// multipleChoices is the 300 answer listing the matching records.
func multipleChoices(version string, matches []*Contact) response {
	urls := make([]string, len(matches))
	for i, c := range matches {
		urls[i] = recordURL(version, c.ID)
	}
	return jsonResponse(http.StatusMultipleChoices, urls)
}

type saveResult struct {
	ID      string     `json:"id"`
	Success bool       `json:"success"`
	Errors  []apiError `json:"errors"`
	Created bool       `json:"created"`
}

// byID serves /sobjects/Contact/{id}.
func (s *Server) byID(r *http.Request, version, rawID string, body []byte, rec *Request) response {
	id, ok := normalizeID(rawID)
	if !ok {
		return notFound()
	}
	rec.ContactID = id
	var patch map[string]string
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
	case http.MethodPatch:
		fields, bad := s.parseFields(body)
		if bad != nil {
			return *bad
		}
		patch = fields
	default:
		return methodNotAllowed(r.Method)
	}
	fields, bad := s.fieldsParam(r)
	if bad != nil {
		return *bad
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[id]
	if !ok {
		return notFound()
	}
	if c.IsDeleted {
		return errorResponse(http.StatusNotFound, "ENTITY_IS_DELETED", "entity is deleted")
	}
	switch r.Method {
	case http.MethodPatch:
		upd := c.clone()
		for f, v := range patch {
			upd.set(f, v)
		}
		if bad := validate(upd); bad != nil {
			return *bad
		}
		upd.LastModifiedDate, upd.LastModifiedByID = s.stamp(), s.opts.IntegrationUserID
		*c = upd
		s.stats.ContactsUpdated++
		s.out.enqueue(c.ID, false)
		return response{status: http.StatusNoContent}
	case http.MethodDelete:
		s.remove(c, s.opts.IntegrationUserID)
		s.stats.ContactsDeleted++
		return response{status: http.StatusNoContent}
	default:
		return jsonResponse(http.StatusOK, s.record(*c, version, fields))
	}
}

// byExternalID serves /sobjects/Contact/Tandem_User_Id__c/{value}.
func (s *Server) byExternalID(r *http.Request, version, value string, body []byte, rec *Request) response {
	var patch map[string]string
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
	case http.MethodPatch:
		fields, bad := s.parseFields(body)
		if bad != nil {
			return *bad
		}
		if v, ok := fields[ExternalIDField]; ok && !strings.EqualFold(v, value) {
			return errorResponse(http.StatusBadRequest, "INVALID_FIELD",
				"The value of the external id field in the request body ("+v+") does not match the URL ("+value+")", ExternalIDField)
		}
		patch = fields
	default:
		return methodNotAllowed(r.Method)
	}
	fields, bad := s.fieldsParam(r)
	if bad != nil {
		return *bad
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	matches := s.liveByExternalID(value)
	if len(matches) > 1 {
		return multipleChoices(version, matches)
	}
	if r.Method != http.MethodPatch {
		if len(matches) == 0 {
			return notFound()
		}
		c := matches[0]
		rec.ContactID = c.ID
		if r.Method == http.MethodDelete {
			s.remove(c, s.opts.IntegrationUserID)
			s.stats.ContactsDeleted++
			return response{status: http.StatusNoContent}
		}
		return jsonResponse(http.StatusOK, s.record(*c, version, fields))
	}

	now := s.stamp()
	if len(matches) == 0 {
		c := Contact{
			ID: newID(contactPrefix), TandemUserID: value,
			CreatedDate: now, CreatedByID: s.opts.IntegrationUserID,
			LastModifiedDate: now, LastModifiedByID: s.opts.IntegrationUserID,
		}
		for f, v := range patch {
			c.set(f, v)
		}
		c.TandemUserID = value
		if bad := validate(c); bad != nil {
			return *bad
		}
		rec.ContactID = c.ID
		s.insert(c)
		s.stats.ContactsCreated++
		resp := jsonResponse(http.StatusCreated, saveResult{ID: c.ID, Success: true, Errors: []apiError{}, Created: true})
		resp.header = http.Header{"Location": {recordURL(version, c.ID)}}
		return resp
	}
	c := matches[0]
	rec.ContactID = c.ID
	upd := c.clone()
	for f, v := range patch {
		upd.set(f, v)
	}
	if bad := validate(upd); bad != nil {
		return *bad
	}
	upd.LastModifiedDate, upd.LastModifiedByID = now, s.opts.IntegrationUserID
	*c = upd
	s.stats.ContactsUpdated++
	s.out.enqueue(c.ID, false)
	if s.opts.LegacyUpsertNoContent {
		return response{status: http.StatusNoContent}
	}
	return jsonResponse(http.StatusOK, saveResult{ID: c.ID, Success: true, Errors: []apiError{}, Created: false})
}

// remove moves c to the recycle bin. s.mu is held.
func (s *Server) remove(c *Contact, by string) {
	c.IsDeleted = true
	c.LastModifiedDate, c.LastModifiedByID = s.stamp(), by
	if s.opts.NotifyDeletes {
		s.out.enqueue(c.ID, true)
	}
}

// checkUI validates a contact edited through the UI methods, including the
// field limits the API enforces.
func (s *Server) checkUI(c Contact) error {
	body := map[string]any{
		"FirstName": c.FirstName, "LastName": c.LastName, "Email": c.Email,
		"Phone": c.Phone, ExternalIDField: c.TandemUserID,
	}
	for k, v := range c.Custom {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	if _, bad := s.parseFields(b); bad != nil {
		return responseError(bad)
	}
	if bad := validate(c); bad != nil {
		return responseError(bad)
	}
	return nil
}

// UICreate adds a contact as if a person created it in Salesforce: c.ID,
// the dates and IsDeleted are ignored; CreatedById and LastModifiedById are
// Options.UIUserID. It queues an Outbound Message notification and returns
// the stored contact, or an error if c breaks the API's rules (LastName
// required, email format, field lengths, unknown custom fields).
func (s *Server) UICreate(c Contact) (Contact, error) {
	if err := s.checkUI(c); err != nil {
		return Contact{}, err
	}
	now := s.stamp()
	c = c.clone()
	c.ID, c.IsDeleted = newID(contactPrefix), false
	c.CreatedDate, c.CreatedByID = now, s.opts.UIUserID
	c.LastModifiedDate, c.LastModifiedByID = now, s.opts.UIUserID
	s.mu.Lock()
	defer s.mu.Unlock()
	s.insert(c)
	return c.clone(), nil
}

// UIUpdate edits a live contact as if a person saved it in Salesforce: edit
// gets a copy to change (changes to ID, IsDeleted and the audit fields are
// ignored); LastModifiedById becomes Options.UIUserID and LastModifiedDate
// the Clock time. It queues an Outbound Message notification (a save always
// does, changed or not) and returns the stored contact, or an error wrapping
// ErrNotFound, or an error if the edit breaks the API's rules (nothing
// changes then).
func (s *Server) UIUpdate(id string, edit func(*Contact)) (Contact, error) {
	nid, _ := normalizeID(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[nid]
	if !ok || c.IsDeleted {
		return Contact{}, fmt.Errorf("updating contact %s: %w", id, ErrNotFound)
	}
	upd := c.clone()
	edit(&upd)
	upd.ID, upd.IsDeleted = c.ID, false
	upd.CreatedDate, upd.CreatedByID = c.CreatedDate, c.CreatedByID
	if err := s.checkUI(upd); err != nil {
		return Contact{}, fmt.Errorf("updating contact %s: %w", id, err)
	}
	upd.LastModifiedDate, upd.LastModifiedByID = s.stamp(), s.opts.UIUserID
	*c = upd.clone()
	s.out.enqueue(c.ID, false)
	return upd, nil
}

// UIDelete deletes a live contact as if a person deleted it in Salesforce
// (no notification unless Options.NotifyDeletes). It returns an error
// wrapping ErrNotFound if there is no such live contact.
func (s *Server) UIDelete(id string) error {
	nid, _ := normalizeID(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[nid]
	if !ok || c.IsDeleted {
		return fmt.Errorf("deleting contact %s: %w", id, ErrNotFound)
	}
	s.remove(c, s.opts.UIUserID)
	return nil
}

// DuplicateExternalID makes the external id userID match one more live
// contact, as when the field is not unique and a person created a second
// contact with it: upserts, reads and deletes by that external id then get
// 300 Multiple Choices. The new contact copies the names and email of the
// first live match, if any (LastName "Duplicate" otherwise). It returns the
// new contact.
func (s *Server) DuplicateExternalID(userID string) (Contact, error) {
	c := Contact{LastName: "Duplicate", TandemUserID: userID}
	s.mu.Lock()
	if m := s.liveByExternalID(userID); len(m) > 0 {
		c.FirstName, c.LastName, c.Email, c.Phone = m[0].FirstName, m[0].LastName, m[0].Email, m[0].Phone
	}
	s.mu.Unlock()
	return s.UICreate(c)
}

// Contact returns the contact with the given id (15 or 18 characters),
// deleted or not, and whether it exists.
func (s *Server) Contact(id string) (Contact, bool) {
	nid, ok := normalizeID(id)
	if !ok {
		return Contact{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[nid]
	if !ok {
		return Contact{}, false
	}
	return c.clone(), true
}

// Contacts returns every contact ever created, deleted ones included, in
// creation order.
func (s *Server) Contacts() []Contact {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Contact, len(s.order))
	for i, id := range s.order {
		out[i] = s.contacts[id].clone()
	}
	return out
}

// ContactsByExternalID returns the live contacts whose Tandem_User_Id__c
// matches userID (case-insensitively, as Salesforce matches external ids):
// the answer to "how many contacts exist for this user".
func (s *Server) ContactsByExternalID(userID string) []Contact {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Contact
	for _, c := range s.liveByExternalID(userID) {
		out = append(out, c.clone())
	}
	return out
}
