package integrations_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/integrations"
)

func TestChooseLink(t *testing.T) {
	const me, other = "u-me", "u-other"
	obj := func(id, tag, email string) integrations.RemoteObject {
		return integrations.RemoteObject{ID: id, UserID: tag, Customer: integrations.Customer{Email: email}}
	}
	for _, tc := range []struct {
		name    string
		byEmail bool
		cands   []integrations.RemoteObject
		want    integrations.LinkChoice
	}{
		{"nothing: create", true, nil, integrations.LinkChoice{}},
		{"tagged wins over email", true, []integrations.RemoteObject{obj("c2", "", "a@x.io"), obj("c1", me, "old@x.io")},
			integrations.LinkChoice{RemoteID: "c1", Tagged: true}},
		{"tagged twice: conflict", true, []integrations.RemoteObject{obj("c2", me, "a@x.io"), obj("c1", me, "b@x.io")},
			integrations.LinkChoice{Conflict: []string{"c1", "c2"}}},
		{"one untagged, case-insensitive", true, []integrations.RemoteObject{obj("c1", "", "A@X.io")},
			integrations.LinkChoice{RemoteID: "c1"}},
		{"by email off", false, []integrations.RemoteObject{obj("c1", "", "a@x.io")}, integrations.LinkChoice{}},
		{"by email off, tagged still linked", false, []integrations.RemoteObject{obj("c1", me, "z@x.io")},
			integrations.LinkChoice{RemoteID: "c1", Tagged: true}},
		{"two untagged: conflict", true, []integrations.RemoteObject{obj("c9", "", "a@x.io"), obj("c3", "", "a@x.io"), obj("c9", "", "a@x.io")},
			integrations.LinkChoice{Conflict: []string{"c3", "c9"}}},
		{"another user's object is not a candidate", true, []integrations.RemoteObject{obj("c1", other, "a@x.io")}, integrations.LinkChoice{}},
		{"another email is not a candidate", true, []integrations.RemoteObject{obj("c1", "", "b@x.io")}, integrations.LinkChoice{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, integrations.ChooseLink(me, "a@x.io", tc.byEmail, tc.cands))
		})
	}
	require.False(t, integrations.SameEmail("", ""))
}
