package factory_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
)

// load reads a configuration from env alone (no file).
func load(t *testing.T, env ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(append([]string{"TANDEM_CONFIG="}, env...), factory.New().Names())
	require.NoError(t, err)
	return cfg
}

func TestNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"salesforce", "stripe"}, factory.New().Names())
	require.Empty(t, factory.NewRegistry().Names())
}

func TestBuildStripe(t *testing.T) {
	t.Parallel()
	cfg := load(t, "STRIPE_SECRET_KEY=sk_test_123", "STRIPE_API_BASE=http://127.0.0.1:12111")
	p, err := factory.New().Build("stripe", cfg, factory.Deps{})
	require.NoError(t, err)
	require.Equal(t, "stripe", p.Name())
	require.IsType(t, &stripe.Adapter{}, p)

	p, err = factory.New().Build(" Stripe ", cfg, factory.Deps{})
	require.NoError(t, err, "names are matched like TANDEM_PROVIDER is read")
	require.Equal(t, "stripe", p.Name())
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, provider, want string
		env                  []string
	}{
		{name: "unknown provider", provider: "x", want: `unknown provider "x" (known: salesforce, stripe)`},
		{name: "missing secret key", provider: "stripe", want: "building provider stripe: config: STRIPE_SECRET_KEY is required"},
		{name: "bad rate limit", provider: "stripe", env: []string{"STRIPE_SECRET_KEY=sk_test_1", "STRIPE_RATE_LIMIT=fast"},
			want: `config: STRIPE_RATE_LIMIT "fast": want a non-negative number`},
		{name: "zero rate limit", provider: "stripe", env: []string{"STRIPE_SECRET_KEY=sk_test_1", "STRIPE_RATE_LIMIT=0"},
			want: "config: STRIPE_RATE_LIMIT 0: want a positive number"},
		{name: "bad api base", provider: "stripe", env: []string{"STRIPE_SECRET_KEY=sk_test_1", "STRIPE_API_BASE=localhost:12111"},
			want: `config: STRIPE_API_BASE "localhost:12111": want an absolute http(s) URL`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := factory.New().Build(tc.provider, load(t, tc.env...), factory.Deps{})
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestBuildSalesforce(t *testing.T) {
	t.Parallel()
	cfg := load(t,
		"SALESFORCE_INSTANCE_URL=https://example.my.salesforce.com",
		"SALESFORCE_TOKEN_URL=https://example.my.salesforce.com/services/oauth2/token",
		"SALESFORCE_CLIENT_ID=client", "SALESFORCE_CLIENT_SECRET=secret")
	p, err := factory.New().Build("salesforce", cfg, factory.Deps{})
	require.NoError(t, err, "the worker starts without the inbound settings")
	require.Equal(t, "salesforce", p.Name())
	require.IsType(t, &salesforce.Adapter{}, p)

	_, err = factory.New().Build("salesforce", load(t, "SALESFORCE_INSTANCE_URL=https://example.my.salesforce.com"), factory.Deps{})
	require.EqualError(t, err, "building provider salesforce: config: SALESFORCE_TOKEN_URL, SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET are required")
}

type named struct {
	integrations.Provider
	name string
}

func (n named) Name() string { return n.name }

func TestBuildChecksTheAdapterName(t *testing.T) {
	t.Parallel()
	r := factory.NewRegistry()
	r.Register("acme", func(config.Settings, factory.Deps) (integrations.Provider, error) {
		return named{name: "acme2"}, nil
	})
	_, err := r.Build("acme", load(t), factory.Deps{})
	require.EqualError(t, err, `building provider acme: the adapter calls itself "acme2"`)
}

func TestBuilderGetsItsOwnSettings(t *testing.T) {
	t.Parallel()
	r := factory.NewRegistry()
	var got string
	r.Register("acme", func(s config.Settings, d factory.Deps) (integrations.Provider, error) {
		require.NotNil(t, d.Logger, "Build supplies a logger")
		v, err := s.Required("token")
		got = v
		return named{name: "acme"}, err
	})
	cfg, err := config.Load([]string{"TANDEM_CONFIG=", "ACME_TOKEN=t0k", "STRIPE_SECRET_KEY=nope"}, []string{"acme"})
	require.NoError(t, err)
	_, err = r.Build("acme", cfg, factory.Deps{})
	require.NoError(t, err)
	require.Equal(t, "t0k", got)
}

func TestRegisterPanics(t *testing.T) {
	t.Parallel()
	b := func(config.Settings, factory.Deps) (integrations.Provider, error) { return nil, nil }
	require.PanicsWithValue(t, `factory: provider "stripe" registered twice`, func() { factory.New().Register("stripe", b) })
	require.Panics(t, func() { factory.NewRegistry().Register("Sales-Force", b) })
	require.Panics(t, func() { factory.NewRegistry().Register("", b) })
	require.Panics(t, func() { factory.NewRegistry().Register("acme", nil) })
}
