// Package userfields holds the rules a user's fields must follow, wherever
// the state comes from: the REST API (internal/api) validates with it, and
// inbound provider states (webhooks, catch-up) are to be validated with the
// same functions, so that a state one path accepts the other accepts too.
// It depends on nothing but the standard library.
//
// The rules:
//
//   - email: required, at most MaxEmailLen bytes, a plain address
//     local@domain in ASCII only. The local part is an RFC 5322 dot-atom of
//     at most 64 bytes (letters, digits and ! # $ % & ' * + - / = ? ^ _ ` { | } ~,
//     dots between them); the domain is at least two DNS labels of letters,
//     digits and inner hyphens, at most 63 bytes each, the last not all
//     digits. An internationalised domain is written as its IDNA A-label
//     (xn--…); a non-ASCII local part (SMTPUTF8) is refused. Quoted local
//     parts, comments, display names, IP literals, spaces, control and
//     format characters are refused by construction.
//   - name: required (not blank), at most MaxNameLen characters.
//   - phone: optional, at most MaxPhoneLen characters: digits, spaces,
//     parentheses, dots, hyphens and an optional leading plus sign.
//   - metadata: at most MaxMetadataKeys keys; keys 1 to MaxMetadataKeyLen
//     characters without [ or ] and not starting with ReservedPrefix;
//     values at most MaxMetadataValueLen characters (Stripe's limits).
//   - every text (name, metadata keys and values) is valid UTF-8 without
//     invisible or control characters (see CleanText).
//
// Why emails are ASCII: emails are unique among live users
// case-insensitively, and the database enforces it with a unique index on
// LOWER(email) (users.live_email). MariaDB's LOWER() folds more than ASCII
// (U+212A KELVIN SIGN into k, U+0130 İ into i), other implementations
// (Go's, a provider's) follow other tables, and Unicode offers look-alikes
// no fold joins.
// Restricting emails to ASCII makes the database's fold and the
// application's (EmailKey) agree by construction, and leaves nothing
// invisible and no letter of another script in an address. Rows written
// before the rule keep working: reads and deletes never validate, and a
// PATCH validates only the fields it sends. A caller holding a state that
// may predate the rule (an inbound event about an existing user) should
// check the fields that changed, not refuse the whole state for an email
// it already had.
package userfields

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Field limits. Metadata follows Stripe's limits so that what Tandem
// accepts can be carried to Stripe.
const (
	MaxEmailLen         = 254 // bytes (all ASCII)
	MaxEmailLocalLen    = 64  // bytes of the part before @
	MaxNameLen          = 256 // characters
	MaxPhoneLen         = 20  // characters
	MaxMetadataKeys     = 50
	MaxMetadataKeyLen   = 40  // characters
	MaxMetadataValueLen = 500 // characters
	// ReservedPrefix marks metadata keys Tandem sets itself (tandem_user_id).
	ReservedPrefix = "tandem_"
)

// FieldError is one invalid field. Field is the field's name ("email",
// "name", "phone", "metadata") or "metadata.<key>" for one metadata entry.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error returns "field: message".
func (e FieldError) Error() string { return e.Field + ": " + e.Message }

func fail(field, format string, args ...any) []FieldError {
	return []FieldError{{Field: field, Message: fmt.Sprintf(format, args...)}}
}

// Validate checks a whole user state and returns every invalid field,
// sorted by field name (nil when the state is valid). metadata may be nil.
func Validate(email, name, phone string, metadata map[string]string) []FieldError {
	var errs []FieldError
	errs = append(errs, CheckEmail(email)...)
	errs = append(errs, CheckName(name)...)
	errs = append(errs, CheckPhone(phone)...)
	errs = append(errs, CheckMetadataCount(len(metadata))...)
	for k, v := range metadata {
		errs = append(errs, CheckMetadataKey(k)...)
		errs = append(errs, CheckMetadataValue(k, v)...)
	}
	Sort(errs)
	return errs
}

// Sort orders errs by field name, keeping the order of errors of one field.
func Sort(errs []FieldError) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
}

// CheckEmail checks an email against the rule of the package comment.
func CheckEmail(email string) []FieldError {
	switch {
	case email == "":
		return fail("email", "is required")
	case len(email) > MaxEmailLen:
		return fail("email", "must be at most %d bytes", MaxEmailLen)
	}
	at := strings.LastIndexByte(email, '@')
	if at < 0 || !dotAtom(email[:at]) || !hostname(email[at+1:]) {
		return fail("email", "must be a plain ASCII email address such as ada@example.com (write an internationalised domain as its xn-- A-label)")
	}
	if at > MaxEmailLocalLen {
		return fail("email", "the part before @ must be at most %d bytes", MaxEmailLocalLen)
	}
	return nil
}

// EmailKey is the key under which emails are unique: the email with ASCII
// letters in lower case. For every email CheckEmail accepts it equals
// MariaDB's (and MySQL's) LOWER(email), which the users.live_email unique
// index holds, so the application and the database agree on which emails
// are the same.
func EmailKey(email string) string {
	b := []byte(email)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// atext is RFC 5322's atext: the characters of a dot-atom other than dots.
func atext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// dotAtom reports whether s is atoms of atext joined by single dots.
func dotAtom(s string) bool {
	if s == "" {
		return false
	}
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if !atext(atom[i]) {
				return false
			}
		}
	}
	return true
}

// hostname reports whether s is two or more LDH labels (letters, digits,
// inner hyphens; 1-63 bytes each; 253 bytes in all), the last not numeric.
func hostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	tld := labels[len(labels)-1]
	return strings.Trim(tld, "0123456789") != ""
}

// CheckName checks a name: not blank, at most MaxNameLen characters,
// CleanText.
func CheckName(name string) []FieldError {
	switch {
	case strings.TrimSpace(name) == "":
		return fail("name", "is required")
	case !utf8.ValidString(name):
		return fail("name", "must be valid UTF-8")
	case utf8.RuneCountInString(name) > MaxNameLen:
		return fail("name", "must be at most %d characters", MaxNameLen)
	case !CleanText(name):
		return fail("name", "must not contain control or invisible formatting characters")
	}
	return nil
}

var phoneRE = regexp.MustCompile(`^\+?[0-9][0-9 ().\-]*$`)

// CheckPhone checks a phone number; "" (no phone) is valid.
func CheckPhone(phone string) []FieldError {
	if phone == "" {
		return nil
	}
	if len(phone) > MaxPhoneLen || !phoneRE.MatchString(phone) {
		return fail("phone", "must be a phone number of at most %d characters: digits, spaces, ( ) . - and an optional leading +", MaxPhoneLen)
	}
	return nil
}

// CheckMetadataCount checks the number of metadata keys of a whole state.
func CheckMetadataCount(n int) []FieldError {
	if n > MaxMetadataKeys {
		return fail("metadata", "must have at most %d keys (has %d)", MaxMetadataKeys, n)
	}
	return nil
}

// CheckMetadataKey checks one metadata key.
func CheckMetadataKey(key string) []FieldError {
	if errs := CheckRemovedMetadataKey(key); errs != nil {
		return errs
	}
	if !CleanText(key) {
		return fail("metadata."+key, "key must not contain control or invisible formatting characters")
	}
	return nil
}

// CheckRemovedMetadataKey checks a key named to be removed (a PATCH that
// sets it to null): every rule of CheckMetadataKey but CleanText, so that a
// key stored before that rule existed can still be removed.
func CheckRemovedMetadataKey(key string) []FieldError {
	field := "metadata." + key
	switch {
	case key == "":
		return fail("metadata", "keys must not be empty")
	case !utf8.ValidString(key):
		return fail(field, "key must be valid UTF-8")
	case utf8.RuneCountInString(key) > MaxMetadataKeyLen:
		return fail(field, "key must be at most %d characters", MaxMetadataKeyLen)
	case strings.ContainsAny(key, "[]"):
		return fail(field, "key must not contain [ or ]")
	case strings.HasPrefix(key, ReservedPrefix):
		return fail(field, "keys starting with %q are reserved for Tandem", ReservedPrefix)
	}
	return nil
}

// CheckMetadataValue checks the value of metadata key key.
func CheckMetadataValue(key, value string) []FieldError {
	field := "metadata." + key
	switch {
	case !utf8.ValidString(value):
		return fail(field, "value must be valid UTF-8")
	case utf8.RuneCountInString(value) > MaxMetadataValueLen:
		return fail(field, "value must be at most %d characters", MaxMetadataValueLen)
	case !CleanText(value):
		return fail(field, "value must not contain control or invisible formatting characters")
	}
	return nil
}

// CleanText reports whether s is valid UTF-8 without control characters
// (Unicode category Cc: NUL, tab, newline, DEL, C1 controls), line or
// paragraph separators (Zl, Zp) or format characters (Cf: bidirectional
// overrides and isolates such as U+202E, zero-width spaces, U+FEFF, soft
// hyphens, tag characters), except ZERO WIDTH NON-JOINER and ZERO WIDTH
// JOINER (U+200C, U+200D), which Persian and Indic scripts and emoji
// sequences need. Such characters let a value look like another, or reorder
// what an operator reads in the console, logs and CSV exports.
func CleanText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
		if r < 0x80 {
			continue
		}
		if r == '\u200c' || r == '\u200d' {
			continue
		}
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return false
		}
	}
	return true
}
