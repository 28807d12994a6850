package stripe

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// Stripe's metadata limits (https://docs.stripe.com/metadata): 50 keys per
// object, keys up to 40 characters without square brackets, values up to 500
// characters. An empty value means "no such key" to Stripe.
const (
	MaxMetadataKeys   = 50
	MaxMetadataKeyLen = 40
	MaxMetadataValLen = 500
)

// checkMetadata reports, as one permanent error listing every problem, user
// metadata that Stripe cannot hold exactly. The adapter never pushes part of a
// user's metadata: a customer whose metadata differs from the user's would
// come back through the webhook and overwrite the user.
func checkMetadata(c integrations.Customer) error {
	var problems []string
	n := 1 // tandem_user_id
	for _, k := range slices.Sorted(maps.Keys(c.Metadata)) {
		v := c.Metadata[k]
		if k == MetadataUserIDKey {
			if v != c.UserID {
				problems = append(problems, fmt.Sprintf("key %s is reserved for Tandem's user id (holds %q)", MetadataUserIDKey, v))
			}
			continue
		}
		n++
		switch {
		case k == "":
			problems = append(problems, "a key is empty")
		case utf8.RuneCountInString(k) > MaxMetadataKeyLen:
			problems = append(problems, fmt.Sprintf("key %q has %d characters (Stripe allows %d)", k, utf8.RuneCountInString(k), MaxMetadataKeyLen))
		case strings.ContainsAny(k, "[]"):
			problems = append(problems, fmt.Sprintf("key %q contains square brackets (Stripe does not allow them)", k))
		}
		switch {
		case v == "":
			problems = append(problems, fmt.Sprintf("value of key %q is empty (Stripe stores an empty value as no key)", k))
		case utf8.RuneCountInString(v) > MaxMetadataValLen:
			problems = append(problems, fmt.Sprintf("value of key %q has %d characters (Stripe allows %d)", k, utf8.RuneCountInString(v), MaxMetadataValLen))
		}
	}
	if n > MaxMetadataKeys {
		problems = append([]string{fmt.Sprintf("%d keys with %s (Stripe allows %d)", n, MetadataUserIDKey, MaxMetadataKeys)}, problems...)
	}
	if len(problems) == 0 {
		return nil
	}
	return integrations.Permanent(errors.New("metadata Stripe cannot hold: " + strings.Join(problems, "; ")))
}

// userKeys returns the user's metadata keys as pushed to Stripe: sorted,
// without tandem_user_id, never nil.
func userKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != MetadataUserIDKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// metadataParams is the metadata to send so that the customer ends up holding
// exactly the user's metadata plus tandem_user_id: Stripe merges metadata on
// update, so every key the remote holds (remoteKeys) that the user no longer
// has is sent with an empty value, which unsets it.
func metadataParams(c integrations.Customer, remoteKeys []string) map[string]string {
	m := make(map[string]string, len(c.Metadata)+len(remoteKeys)+1)
	for _, k := range remoteKeys {
		if _, keep := c.Metadata[k]; !keep && k != MetadataUserIDKey {
			m[k] = ""
		}
	}
	maps.Copy(m, c.Metadata)
	m[MetadataUserIDKey] = c.UserID
	return m
}

// staleKeys returns the keys of got (a customer's metadata as Stripe returned
// it) that the customer should not hold, sorted.
func staleKeys(c integrations.Customer, got map[string]string) []string {
	var stale []string
	for k := range got {
		if _, keep := c.Metadata[k]; !keep && k != MetadataUserIDKey {
			stale = append(stale, k)
		}
	}
	slices.Sort(stale)
	return stale
}
