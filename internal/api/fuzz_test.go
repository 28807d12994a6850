package api

import (
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// requireClientError checks that a refused body is a 400 or 422 problem.
func requireClientError(t *testing.T, err error) {
	t.Helper()
	var p *Problem
	require.True(t, errors.As(err, &p), "%v", err)
	require.Contains(t, []int{400, 422}, p.Status, "%v", err)
}

// FuzzParseCreate: no POST /v1/users body panics the decoder; a refused one
// is a 400 or 422 problem; an accepted one meets the documented limits.
//
//	go test -run '^$' -fuzz '^FuzzParseCreate$' -fuzztime 30s ./internal/api/
func FuzzParseCreate(f *testing.F) {
	f.Add([]byte(`{"email":"ada@example.com","name":"Ada Lovelace","phone":"+44 20 7946 0000","metadata":{"plan":"pro"}}`))
	f.Add([]byte(`{"email":"a@b.c","name":"A","metadata":null}`))
	f.Add([]byte(`{"email":"a@b.c","name":"A"} {"x":1}`))
	f.Add([]byte(`{"email":"a@b.c","email":"d@e.f","name":"A"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"name":"\ud800"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := parseCreate(body)
		if err != nil {
			requireClientError(t, err)
			return
		}
		require.NotEmpty(t, in.Email)
		require.LessOrEqual(t, len(in.Email), 254)
		n := utf8.RuneCountInString(in.Name)
		require.True(t, n >= 1 && n <= MaxNameLen, "name %q", in.Name)
		require.LessOrEqual(t, len(in.Metadata), MaxMetadataKeys)
		for k, v := range in.Metadata {
			require.LessOrEqual(t, utf8.RuneCountInString(k), MaxMetadataKeyLen, k)
			require.LessOrEqual(t, utf8.RuneCountInString(v), MaxMetadataValLen, k)
		}
	})
}

// FuzzParsePatch: no PATCH body panics the decoder; a refused one is a 400
// or 422 problem; an accepted one meets the documented limits.
//
//	go test -run '^$' -fuzz '^FuzzParsePatch$' -fuzztime 30s ./internal/api/
func FuzzParsePatch(f *testing.F) {
	f.Add([]byte(`{"name":"Ada King","metadata":{"plan":null,"tier":"gold"}}`))
	f.Add([]byte(`{"phone":null,"metadata":null}`))
	f.Add([]byte(`{"email":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"metadata":{"tandem_x":"1"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parsePatch(body)
		if err != nil {
			requireClientError(t, err)
			return
		}
		if p.Name != nil {
			n := utf8.RuneCountInString(*p.Name)
			require.True(t, n >= 1 && n <= MaxNameLen, "name %q", *p.Name)
		}
		if p.Email != nil {
			require.NotEmpty(t, *p.Email)
			require.LessOrEqual(t, len(*p.Email), 254)
		}
		for k, v := range p.Metadata {
			require.LessOrEqual(t, utf8.RuneCountInString(k), MaxMetadataKeyLen, k)
			if v != nil {
				require.LessOrEqual(t, utf8.RuneCountInString(*v), MaxMetadataValLen, k)
			}
		}
	})
}
