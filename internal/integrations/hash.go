package integrations

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"slices"
	"strconv"
)

// Hash is a stable fingerprint of the state Tandem syncs: a lower-case hex
// SHA-256 over email, name, phone and the metadata in key order. UserID and
// Version are not part of it, and nil and empty metadata hash alike.
//
// The worker stores it as the pushed-state hash; the webhook hashes the
// Customer it maps from an inbound object and compares, to recognise the echo
// of Tandem's own push. Values are hashed exactly as given (no trimming or
// case folding), so both sides must build the Customer the same way. The
// encoding is length-prefixed and versioned: it never changes meaning without
// changing the version tag.
func (c Customer) Hash() string {
	h := sha256.New()
	writeField(h, "tandem.customer.v1")
	writeField(h, c.Email)
	writeField(h, c.Name)
	writeField(h, c.Phone)
	keys := make([]string, 0, len(c.Metadata))
	for k := range c.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	writeField(h, strconv.Itoa(len(keys)))
	for _, k := range keys {
		writeField(h, k)
		writeField(h, c.Metadata[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeField writes s as <byte length>:<bytes>, so no two field sequences
// encode alike.
func writeField(h hash.Hash, s string) {
	h.Write([]byte(strconv.Itoa(len(s))))
	h.Write([]byte{':'})
	h.Write([]byte(s))
}
