package salesforcefake

import (
	"math/rand/v2"
	"strings"
)

// Key prefixes of the record ids the fake makes.
const (
	contactPrefix      = "003"
	notificationPrefix = "04l"
	actionPrefix       = "04k"
)

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns a random 18-character Salesforce id with the given 3-character
// key prefix.
func newID(prefix string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len() < 15 {
		b.WriteByte(idAlphabet[rand.IntN(len(idAlphabet))])
	}
	return to18(b.String())
}

// to18 appends the case-safe checksum Salesforce adds to a 15-character id:
// for each run of five characters, one character encoding which of them are
// upper-case letters.
func to18(id15 string) string {
	const suffix = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
	b := []byte(id15)
	for i := range 3 {
		flags := 0
		for j := range 5 {
			if c := id15[i*5+j]; c >= 'A' && c <= 'Z' {
				flags |= 1 << j
			}
		}
		b = append(b, suffix[flags])
	}
	return string(b)
}

// normalizeID returns the 18-character form of a 15- or 18-character id, and
// false if id is not shaped like a Salesforce id.
func normalizeID(id string) (string, bool) {
	if len(id) != 15 && len(id) != 18 {
		return "", false
	}
	for i := range len(id) {
		if !strings.ContainsRune(idAlphabet, rune(id[i])) {
			return "", false
		}
	}
	return to18(id[:15]), true
}

// sameID reports whether a and b (15 or 18 characters) name the same record.
func sameID(a, b string) bool {
	na, ok1 := normalizeID(a)
	nb, ok2 := normalizeID(b)
	return ok1 && ok2 && na == nb
}
