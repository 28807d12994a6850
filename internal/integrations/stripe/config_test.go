package stripe_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
)

func TestConfigFrom(t *testing.T) {
	t.Parallel()
	cfg, err := stripe.ConfigFrom(config.NewSettings("stripe", map[string]string{"secret_key": " sk_test_123 "}))
	require.NoError(t, err)
	require.Equal(t, stripe.Config{SecretKey: "sk_test_123", RateLimit: stripe.DefaultRateLimit}, cfg,
		"empty STRIPE_API_BASE means Stripe's own; the rate defaults to 25/s")

	cfg, err = stripe.ConfigFrom(config.NewSettings("stripe", map[string]string{
		"secret_key": "rk_test_1", "api_base": "http://127.0.0.1:12111", "rate_limit": "2.5",
	}))
	require.NoError(t, err)
	require.Equal(t, stripe.Config{SecretKey: "rk_test_1", APIBase: "http://127.0.0.1:12111", RateLimit: 2.5}, cfg)

	_, err = stripe.ConfigFrom(config.NewSettings("stripe", map[string]string{"api_base": "http://x"}))
	require.EqualError(t, err, "config: STRIPE_SECRET_KEY is required")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := stripe.Config{SecretKey: "sk_test_1", RateLimit: 25}
	require.NoError(t, ok.Validate())
	for _, tc := range []struct {
		cfg  stripe.Config
		want string
	}{
		{stripe.Config{RateLimit: 25}, "STRIPE_SECRET_KEY"},
		{stripe.Config{SecretKey: "k", RateLimit: 0}, "STRIPE_RATE_LIMIT"},
		{stripe.Config{SecretKey: "k", RateLimit: -1}, "STRIPE_RATE_LIMIT"},
		{stripe.Config{SecretKey: "k", RateLimit: 1, APIBase: "ftp://x"}, "STRIPE_API_BASE"},
		{stripe.Config{SecretKey: "k", RateLimit: 1, APIBase: "/v1"}, "STRIPE_API_BASE"},
	} {
		err := tc.cfg.Validate()
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.want)
	}
	_, err := stripe.New(stripe.Config{}, stripe.Options{})
	require.ErrorContains(t, err, "STRIPE_SECRET_KEY", "New validates")
}

// TestBadAPIBaseDoesNotPrintItsPassword: a refused STRIPE_API_BASE is shown
// without the credentials it may carry.
func TestBadAPIBaseDoesNotPrintItsPassword(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"ftp://user:s3cret@proxy.example/", "http://user:s3%zzcret@proxy.example/"} {
		err := stripe.Config{SecretKey: "k", RateLimit: 1, APIBase: base}.Validate()
		require.ErrorContains(t, err, "STRIPE_API_BASE")
		require.NotContains(t, err.Error(), "s3cret")
		require.NotContains(t, err.Error(), "s3%zzcret")
	}
}
