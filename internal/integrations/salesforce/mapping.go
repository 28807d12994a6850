package salesforce

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// splitName maps a user's name to Contact fields. Salesforce requires
// LastName, so a one-word name is the LastName; otherwise the first word is
// the FirstName and the rest, as written, the LastName ("Ada King Lovelace"
// → "Ada", "King Lovelace"). Surrounding white space is dropped.
func splitName(name string) (first, last string) {
	name = strings.TrimSpace(name)
	i := strings.IndexFunc(name, unicode.IsSpace)
	if i < 0 {
		return "", name
	}
	return name[:i], strings.TrimLeftFunc(name[i:], unicode.IsSpace)
}

// joinName is the inverse of splitName: FirstName + " " + LastName, trimmed.
func joinName(first, last string) string {
	return strings.TrimSpace(strings.TrimSpace(first) + " " + strings.TrimSpace(last))
}

// nullable is v, or JSON null (which clears a field) for "".
func nullable(v string) any {
	if v == "" {
		return nil
	}
	return v
}

// contactFields is the body of a write: every field Tandem owns, an empty
// one as null. It returns the warnings of what the contact cannot hold
// exactly, and a permanent error for a user Salesforce cannot hold at all.
func (a *Adapter) contactFields(c integrations.Customer) (map[string]any, []string, error) {
	first, last := splitName(c.Name)
	if last == "" {
		return nil, nil, integrations.Permanent(fmt.Errorf("salesforce: user %s has no name, and Salesforce requires a contact's LastName", c.UserID))
	}
	var warnings []string
	if back := joinName(first, last); back != c.Name {
		warnings = append(warnings, fmt.Sprintf("name %q is stored as FirstName %q and LastName %q, which read back as %q", c.Name, first, last, back))
	}
	fields := map[string]any{
		"FirstName": nullable(first),
		"LastName":  last,
		"Email":     nullable(c.Email),
		"Phone":     nullable(c.Phone),
	}
	switch {
	case a.cfg.MetadataField != "":
		md, err := encodeMetadata(c.Metadata)
		if err != nil {
			return nil, nil, integrations.Permanent(fmt.Errorf("salesforce: user %s: %w", c.UserID, err))
		}
		fields[a.cfg.MetadataField] = nullable(md)
	case len(c.Metadata) > 0:
		warnings = append(warnings, fmt.Sprintf("Salesforce contacts carry no metadata (SALESFORCE_METADATA_FIELD is not set): keys %s not pushed",
			strings.Join(slices.Sorted(maps.Keys(c.Metadata)), ", ")))
	}
	return fields, warnings, nil
}

// metadataKeys is Result.MetadataKeys: the user's keys, sorted, if the
// contact carries metadata; none otherwise. Never nil.
func (a *Adapter) metadataKeys(c integrations.Customer) []string {
	if a.cfg.MetadataField == "" {
		return []string{}
	}
	keys := slices.Sorted(maps.Keys(c.Metadata))
	if keys == nil {
		keys = []string{}
	}
	return keys
}

// encodeMetadata renders metadata as a JSON object with sorted keys; ""
// (null) for none.
func encodeMetadata(md map[string]string) (string, error) {
	if len(md) == 0 {
		return "", nil
	}
	b, err := json.Marshal(md)
	if err != nil {
		return "", fmt.Errorf("encoding metadata: %w", err)
	}
	return string(b), nil
}

// decodeMetadata reads a metadata field; "" is no metadata (nil).
func decodeMetadata(v string) (map[string]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var md map[string]string
	if err := json.Unmarshal([]byte(v), &md); err != nil {
		return nil, fmt.Errorf("metadata field is not a JSON object of strings: %w", err)
	}
	if len(md) == 0 {
		return nil, nil
	}
	return md, nil
}

// CustomerFrom maps a Contact notification to the provider-neutral Customer
// the adapter would push to produce it: UserID from Tandem_User_Id__c ("" for
// a contact Tandem did not create), Email, Phone, Name = FirstName + " " +
// LastName trimmed, and, when metadataField is set
// (SALESFORCE_METADATA_FIELD), the metadata decoded from that field. Version
// is left 0.
//
// Its Hash equals the pushed-state hash of the Upsert that left the contact
// this way when the name round-trips (see the package documentation) and
// metadata is carried. Without a metadata field the mapped Customer has no
// metadata: compare only email, name and phone, and never apply its (empty)
// metadata to the user. It returns an error only if the metadata field holds
// something other than a JSON object of strings.
func CustomerFrom(n Notification, metadataField string) (integrations.Customer, error) {
	c := integrations.Customer{
		UserID: n.TandemUserID,
		Email:  n.Email,
		Name:   joinName(n.FirstName, n.LastName),
		Phone:  n.Phone,
	}
	if metadataField == "" {
		return c, nil
	}
	md, err := decodeMetadata(n.Fields[metadataField])
	if err != nil {
		return c, fmt.Errorf("salesforce: contact %s, %s: %w", n.ContactID, metadataField, err)
	}
	c.Metadata = md
	return c, nil
}

// SameID reports whether two Salesforce ids name the same record: ids come
// in a 15-character, case-sensitive form and an 18-character form that adds
// a checksum, so they are compared on their first 15 characters. Ids of
// other lengths are equal only if identical; "" equals nothing.
func SameID(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if (len(a) == 15 || len(a) == 18) && (len(b) == 15 || len(b) == 18) {
		return a[:15] == b[:15]
	}
	return a == b
}
