package integrations_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/integrations"
)

func TestKeys(t *testing.T) {
	t.Parallel()
	const uid = "0190a5d2-7c3e-7b1a-9f00-000000000001"
	require.Equal(t, "tandem-stripe-create-"+uid, integrations.CreateKey("stripe", uid))
	require.Equal(t, "tandem-stripe-update-"+uid+"-v42", integrations.UpdateKey("stripe", uid, 42))
	require.Equal(t, "tandem-stripe-delete-"+uid, integrations.DeleteKey("stripe", uid))
	for _, k := range []string{
		integrations.CreateKey("salesforce", uid),
		integrations.UpdateKey("salesforce", uid, 1),
		integrations.DeleteKey("salesforce", uid),
	} {
		require.True(t, integrations.IsTandemKey(k), k)
	}
	require.False(t, integrations.IsTandemKey("f3b1c2d4-idem"))
	require.False(t, integrations.IsTandemKey(""))
	require.False(t, integrations.IsTandemKey("Tandem-stripe-create-x"))
}

func TestHash(t *testing.T) {
	t.Parallel()
	base := integrations.Customer{
		UserID: "u1", Email: "ada@example.com", Name: "Ada", Phone: "+44 20 7946 0000",
		Metadata: map[string]string{"plan": "pro", "team": "core"}, Version: 3,
	}
	h := base.Hash()
	require.Len(t, h, 64)

	same := base
	same.UserID, same.Version = "u2", 9
	same.Metadata = map[string]string{"team": "core", "plan": "pro"}
	require.Equal(t, h, same.Hash(), "user id, version and map order are not state")

	require.Equal(t,
		integrations.Customer{Email: "a@b.c"}.Hash(),
		integrations.Customer{Email: "a@b.c", Metadata: map[string]string{}}.Hash(),
		"nil and empty metadata hash alike")

	differ := []integrations.Customer{
		{Email: "Ada@example.com", Name: base.Name, Phone: base.Phone, Metadata: base.Metadata},
		{Email: base.Email, Name: "Ada ", Phone: base.Phone, Metadata: base.Metadata},
		{Email: base.Email, Name: base.Name, Metadata: base.Metadata},
		{Email: base.Email, Name: base.Name, Phone: base.Phone, Metadata: map[string]string{"plan": "pro"}},
		{Email: base.Email, Name: base.Name, Phone: base.Phone, Metadata: map[string]string{"plan": "pro", "team": ""}},
		// Field boundaries matter: moving text between fields changes the hash.
		{Email: base.Email + "Ada", Name: "", Phone: base.Phone, Metadata: base.Metadata},
		{Email: base.Email, Name: base.Name, Phone: base.Phone, Metadata: map[string]string{"planpro": "", "team": "core"}},
	}
	seen := map[string]int{h: -1}
	for i, c := range differ {
		got := c.Hash()
		prev, dup := seen[got]
		require.False(t, dup, "case %d hashes like case %d", i, prev)
		seen[got] = i
	}

	// The encoding is part of the contract (stored hashes are compared
	// across releases): pin one value, computed independently as
	// sha256("18:tandem.customer.v1" "5:a@b.c" "1:A" "0:" "1:1" "1:k" "1:v").
	require.Equal(t, "ee3d654876a53419e7f6021acb26c41e0fc25876f4b4df45efea1b2ea9fec881",
		integrations.Customer{Email: "a@b.c", Name: "A", Metadata: map[string]string{"k": "v"}}.Hash())
}

func TestErrorKinds(t *testing.T) {
	t.Parallel()
	require.NoError(t, integrations.Permanent(nil))
	require.NoError(t, integrations.RateLimited(nil, time.Second))

	base := errors.New("boom")
	require.False(t, integrations.IsPermanent(base))
	_, limited := integrations.RetryAfter(base)
	require.False(t, limited)

	p := fmt.Errorf("pushing user u1: %w", integrations.Permanent(base))
	require.True(t, integrations.IsPermanent(p))
	require.ErrorIs(t, p, base)
	require.Equal(t, "pushing user u1: boom", p.Error())

	nf := integrations.Permanent(fmt.Errorf("customer cus_1: %w", integrations.ErrNotFound))
	require.True(t, integrations.IsPermanent(nf))
	require.ErrorIs(t, nf, integrations.ErrNotFound)

	rl := fmt.Errorf("wrapped: %w", integrations.RateLimited(base, 3*time.Second))
	d, ok := integrations.RetryAfter(rl)
	require.True(t, ok)
	require.Equal(t, 3*time.Second, d)
	require.False(t, integrations.IsPermanent(rl), "rate limited stays transient")
	require.ErrorIs(t, rl, base)

	d, ok = integrations.RetryAfter(integrations.RateLimited(base, -time.Second))
	require.True(t, ok)
	require.Zero(t, d)
}

type nameOnly struct {
	integrations.Provider
	name string
}

func (n nameOnly) Name() string { return n.name }

func TestWrapOrder(t *testing.T) {
	t.Parallel()
	var order []string
	mw := func(tag string) integrations.Middleware {
		return func(next integrations.Provider) integrations.Provider {
			order = append(order, tag)
			return nameOnly{Provider: next, name: tag + "(" + next.Name() + ")"}
		}
	}
	p := integrations.Wrap(nameOnly{name: "p"}, mw("outer"), mw("inner"))
	require.Equal(t, "outer(inner(p))", p.Name())
	require.Equal(t, []string{"inner", "outer"}, order)

}
