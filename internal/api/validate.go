package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/mail"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tandem-sync/tandem/internal/store"
)

// Field limits. Metadata follows Stripe's limits so that what the API
// accepts can be carried to Stripe.
const (
	MaxEmailLen       = 254
	MaxNameLen        = 256
	MaxPhoneLen       = 20
	MaxMetadataKeys   = 50
	MaxMetadataKeyLen = 40
	MaxMetadataValLen = 500
	// ReservedPrefix marks metadata keys Tandem sets itself (tandem_user_id).
	ReservedPrefix = "tandem_"
)

var phoneRE = regexp.MustCompile(`^\+?[0-9][0-9 ().\-]*$`)

// decodeObject parses body as one JSON object into raw fields. Malformed JSON
// is a 400; JSON that is not an object is a 422.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem(400, "bad-json", "the request body is empty; send a JSON object")
	}
	if !json.Valid(body) {
		return nil, problem(400, "bad-json", "the request body is not valid JSON")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, invalid([]FieldError{{Field: "", Message: "the request body must be a JSON object"}})
	}
	return fields, nil
}

type fieldErrors []FieldError

func (e *fieldErrors) add(field, format string, args ...any) {
	*e = append(*e, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	sort.SliceStable(e, func(i, j int) bool { return e[i].Field < e[j].Field })
	return invalid(e)
}

// str decodes a JSON string field; null gives (nil, true).
func (e *fieldErrors) str(fields map[string]json.RawMessage, name string) (val *string, null, present bool) {
	raw, ok := fields[name]
	if !ok {
		return nil, false, false
	}
	if string(raw) == "null" {
		return nil, true, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		e.add(name, "must be a string")
		return nil, false, true
	}
	return &s, false, true
}

func checkUnknown(e *fieldErrors, fields map[string]json.RawMessage, known ...string) {
	for name := range fields {
		found := false
		for _, k := range known {
			if name == k {
				found = true
			}
		}
		if !found {
			e.add(name, "unknown field")
		}
	}
}

func checkEmail(e *fieldErrors, s string) {
	switch {
	case s == "":
		e.add("email", "is required")
	case len(s) > MaxEmailLen:
		e.add("email", "must be at most %d bytes", MaxEmailLen)
	default:
		a, err := mail.ParseAddress(s)
		if err != nil || a.Address != s || a.Name != "" || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
			e.add("email", "must be a plain email address such as ada@example.com")
		}
	}
}

// printable reports whether s is valid UTF-8 without control characters,
// as checkText requires of text fields.
func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0
}

func checkText(e *fieldErrors, field, s string, max int, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		e.add(field, "is required")
	case !utf8.ValidString(s):
		e.add(field, "must be valid UTF-8")
	case utf8.RuneCountInString(s) > max:
		e.add(field, "must be at most %d characters", max)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		e.add(field, "must not contain control characters")
	}
}

func checkPhone(e *fieldErrors, s string) {
	if s == "" {
		return
	}
	if len(s) > MaxPhoneLen || !phoneRE.MatchString(s) {
		e.add("phone", "must be a phone number of at most %d characters: digits, spaces, ( ) . - and an optional leading +", MaxPhoneLen)
	}
}

func checkMetaKey(e *fieldErrors, k string) {
	field := "metadata." + k
	switch {
	case k == "":
		e.add("metadata", "keys must not be empty")
	case utf8.RuneCountInString(k) > MaxMetadataKeyLen:
		e.add(field, "key must be at most %d characters", MaxMetadataKeyLen)
	case strings.ContainsAny(k, "[]"):
		e.add(field, "key must not contain [ or ]")
	case strings.HasPrefix(k, ReservedPrefix):
		e.add(field, "keys starting with %q are reserved for Tandem", ReservedPrefix)
	}
}

func checkMetaValue(e *fieldErrors, k, v string) {
	if utf8.RuneCountInString(v) > MaxMetadataValLen {
		e.add("metadata."+k, "value must be at most %d characters", MaxMetadataValLen)
	}
}

func checkMetaCount(e *fieldErrors, n int) {
	if n > MaxMetadataKeys {
		e.add("metadata", "must have at most %d keys (has %d)", MaxMetadataKeys, n)
	}
}

// parseCreate validates a POST /v1/users body.
func parseCreate(body []byte) (store.NewUser, error) {
	fields, err := decodeObject(body)
	if err != nil {
		return store.NewUser{}, err
	}
	var e fieldErrors
	checkUnknown(&e, fields, "email", "name", "phone", "metadata")
	var in store.NewUser
	if s, _, _ := e.str(fields, "email"); s != nil {
		in.Email = *s
	}
	if s, _, _ := e.str(fields, "name"); s != nil {
		in.Name = *s
	}
	if s, _, _ := e.str(fields, "phone"); s != nil {
		in.Phone = *s
	}
	if len(e) == 0 {
		checkEmail(&e, in.Email)
		checkText(&e, "name", in.Name, MaxNameLen, true)
		checkPhone(&e, in.Phone)
	}
	in.Metadata = map[string]string{}
	if raw, ok := fields["metadata"]; ok && string(raw) != "null" {
		var md map[string]string
		if err := json.Unmarshal(raw, &md); err != nil {
			e.add("metadata", "must be an object of string values")
		} else {
			checkMetaCount(&e, len(md))
			for k, v := range md {
				checkMetaKey(&e, k)
				checkMetaValue(&e, k, v)
			}
			in.Metadata = md
		}
	}
	return in, e.err()
}

// parsePatch validates a PATCH /v1/users/{id} body. Metadata merges: a key
// set to null is removed; "metadata": null removes every key.
func parsePatch(body []byte) (store.Patch, error) {
	fields, err := decodeObject(body)
	if err != nil {
		return store.Patch{}, err
	}
	var e fieldErrors
	checkUnknown(&e, fields, "email", "name", "phone", "metadata")
	var p store.Patch
	if s, null, present := e.str(fields, "email"); present {
		if null {
			e.add("email", "cannot be null")
		} else if s != nil {
			checkEmail(&e, *s)
			p.Email = s
		}
	}
	if s, null, present := e.str(fields, "name"); present {
		if null {
			e.add("name", "cannot be null")
		} else if s != nil {
			checkText(&e, "name", *s, MaxNameLen, true)
			p.Name = s
		}
	}
	if s, null, present := e.str(fields, "phone"); present {
		empty := ""
		if null {
			p.Phone = &empty
		} else if s != nil {
			checkPhone(&e, *s)
			p.Phone = s
		}
	}
	if raw, ok := fields["metadata"]; ok {
		if string(raw) == "null" {
			p.ClearMetadata = true
		} else {
			var md map[string]*string
			if err := json.Unmarshal(raw, &md); err != nil {
				e.add("metadata", "must be an object of string (or null) values")
			} else {
				for k, v := range md {
					checkMetaKey(&e, k)
					if v != nil {
						checkMetaValue(&e, k, *v)
					}
				}
				p.Metadata = md
			}
		}
	}
	return p, e.err()
}

// checkMerged validates the whole user after a patch (the metadata key
// count depends on what the user already had).
func checkMerged(u store.User) error {
	var e fieldErrors
	checkMetaCount(&e, len(u.Metadata))
	return e.err()
}
