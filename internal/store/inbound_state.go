package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// invalidState describes why st cannot be a user's state, or returns "".
func invalidState(st RemoteState) string {
	switch {
	case st.Email == "":
		return "has no email (a Tandem user needs one)"
	case utf8.RuneCountInString(st.Email) > maxEmailChars:
		return fmt.Sprintf("has an email longer than %d characters", maxEmailChars)
	case utf8.RuneCountInString(st.Name) > maxNameChars:
		return fmt.Sprintf("has a name longer than %d characters", maxNameChars)
	case utf8.RuneCountInString(st.Phone) > maxPhoneChars:
		return fmt.Sprintf("has a phone number longer than %d characters", maxPhoneChars)
	}
	if b, err := json.Marshal(st.Metadata); err != nil || len(b) > maxMetadataBytes {
		return fmt.Sprintf("has more metadata than Tandem stores (%d bytes of JSON)", maxMetadataBytes)
	}
	return ""
}

// metadataKeys is the JSON array of md's keys, sorted.
func metadataKeys(md map[string]string) string {
	keys := slices.Sorted(maps.Keys(md))
	if keys == nil {
		keys = []string{}
	}
	b, _ := json.Marshal(keys)
	return string(b)
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
