package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
)

// duplicateKeyByTokens is duplicateKey written with encoding/json's Token
// API: slow, plainly right; the reference the scanner is fuzzed against.
func duplicateKeyByTokens(b []byte) (string, bool) {
	type frame struct {
		keys    map[string]struct{} // nil for an array
		wantKey bool
	}
	var stack []frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) || err != nil {
			return "", false
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].wantKey {
			if key, ok := tok.(string); ok {
				if _, seen := stack[n-1].keys[key]; seen {
					return key, true
				}
				stack[n-1].keys[key] = struct{}{}
				stack[n-1].wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]struct{}{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// FuzzDecodeObjectChecks: on valid JSON in valid UTF-8, the byte scanner finds the same
// duplicate key as the Token-based reference, and decodeObject accepts a
// body only if it is valid UTF-8 without lone surrogates or duplicates.
func FuzzDecodeObjectChecks(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, `[{"a":1},{"a":1}]`, `{"a":[1,{"a":1}],"b":"a"}`,
		`{"n\u0061me":1,"name":2}`, `{"\\":1,"\\\\":2,"\"":3,"\"":4}`, `{"k":"\ud83d\ude00"}`, `{"k":"\ud800"}`,
		`{"k":"\\ud800"}`, `{"a":"x","b":{"a":"x"},"c":[],"d":{}}`, `"a"`, `1`, `{}`, `{"email":"a@example.com","name":"A"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, err := decodeObject(b)
		if !json.Valid(b) {
			if err == nil {
				t.Fatalf("accepted invalid JSON %q", b)
			}
			return
		}
		key, dup := duplicateKey(b)
		refKey, refDup := duplicateKeyByTokens(b)
		// On invalid UTF-8 (refused before keys are compared) the
		// reference sees U+FFFD where the scanner sees bytes.
		if utf8.Valid(b) && (dup != refDup || key != refKey) {
			t.Fatalf("%q: scanner says %q %v, reference %q %v", b, key, dup, refKey, refDup)
		}
		if err == nil {
			if dup {
				t.Fatalf("%q: accepted with duplicate key %q", b, key)
			}
			if !bytes.Equal(bytes.ToValidUTF8(b, nil), b) || loneSurrogate(b) {
				t.Fatalf("%q: accepted with invalid UTF-8", b)
			}
			if fields == nil {
				t.Fatalf("%q: accepted without fields", b)
			}
		}
	})
}
