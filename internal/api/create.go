package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tandem-sync/tandem/internal/store"
)

// ParseCreate validates body as POST /v1/users validates its request body,
// for callers that create users by another path (tandemctl import), so that
// what one path accepts the other accepts too. A body over BodyLimit is
// refused as the API refuses it (413). The error is a *Problem (400, 413 or
// 422); Describe renders it on one line. Email uniqueness is not checked
// here: the store checks it when the user is written (store.ErrConflict).
func ParseCreate(body []byte) (store.NewUser, error) {
	if len(body) > BodyLimit {
		return store.NewUser{}, problem(413, "too-large", fmt.Sprintf("larger than the API's body limit of %d bytes", BodyLimit))
	}
	return parseCreate(body)
}

// Describe renders an error of ParseCreate on one line: the field errors as
// "field: message; …" (all of them, not only the first MaxListedErrors), or
// the problem's detail.
func Describe(err error) string {
	var p *Problem
	if !errors.As(err, &p) {
		return err.Error()
	}
	errs := append(append([]FieldError(nil), p.Errors...), p.omitted...)
	if len(errs) == 0 {
		return p.Detail
	}
	parts := make([]string, len(errs))
	for i, e := range errs {
		if e.Field == "" {
			parts[i] = e.Message
		} else {
			parts[i] = e.Error()
		}
	}
	return strings.Join(parts, "; ")
}
