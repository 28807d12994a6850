package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/config"
)

var providers = []string{"stripe", "salesforce"}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tandem.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestShippedFileLoads(t *testing.T) {
	t.Parallel()
	c, err := config.Load([]string{"TANDEM_CONFIG=../../configs/tandem.yaml"}, providers)
	require.NoError(t, err)
	require.Equal(t, []string{"dev-token"}, c.APITokens)
	require.Equal(t, []string{"stripe"}, c.Providers)
	require.Equal(t, 10, c.MaxAttempts)
	require.Equal(t, ":8080", c.APIAddr)
	require.Equal(t, 500*time.Millisecond, c.Relay.PollInterval)
	require.Equal(t, []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}, c.RetryTiers)
	require.Equal(t, "25", c.ProviderSettings("stripe").String("rate_limit"))
	require.NoError(t, c.RequireAPITokens())
}

func TestEnvironmentOverridesFile(t *testing.T) {
	t.Parallel()
	p := writeFile(t, "api_tokens: a,b\nmax_attempts: 3\nstripe:\n  secret_key: sk_file\n  rate_limit: 5\n")
	c, err := config.Load([]string{
		"TANDEM_CONFIG=" + p,
		"TANDEM_MAX_ATTEMPTS=7",
		"TANDEM_PROVIDERS=stripe, salesforce",
		"STRIPE_SECRET_KEY=sk_env",
		"SALESFORCE_ORG_ID=00D",
		"UNRELATED_SECRET=x",
	}, providers)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, c.APITokens)
	require.Equal(t, 7, c.MaxAttempts)
	require.Equal(t, []string{"stripe", "salesforce"}, c.Providers)
	s := c.ProviderSettings("stripe")
	require.Equal(t, "sk_env", s.String("secret_key"))
	f, err := s.Float("rate_limit", 25)
	require.NoError(t, err)
	require.Equal(t, 5.0, f)
	require.Equal(t, "00D", c.ProviderSettings("salesforce").String("org_id"))
	_, err = c.ProviderSettings("salesforce").Required("client_id")
	require.EqualError(t, err, "config: SALESFORCE_CLIENT_ID is required")
}

func TestErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"TANDEM_MAX_ATTEMPTS":        {"TANDEM_MAX_ATTEMPTS=ten"},
		"TANDEM_RELAY_POLL_INTERVAL": {"TANDEM_RELAY_POLL_INTERVAL=soon"},
		"TANDEM_LOG_LEVEL":           {"TANDEM_LOG_LEVEL=loud"},
		"TANDEM_RETRY_TIERS":         {"TANDEM_RETRY_TIERS=10s,1s"},
		"TANDEM_MYSQL_DSN":           {"TANDEM_MYSQL_DSN= "},
		"TANDEM_CONFIG":              {"TANDEM_CONFIG=/nonexistent/tandem.yaml"},
	}
	for name, env := range cases {
		_, err := config.Load(env, providers)
		require.Error(t, err, name)
		require.Contains(t, err.Error(), name)
		require.NotContains(t, err.Error(), "\n")
	}
	bad := writeFile(t, "api_tokens: [unclosed\n")
	_, err := config.Load([]string{"TANDEM_CONFIG=" + bad}, providers)
	require.ErrorContains(t, err, "TANDEM_CONFIG")

	c, err := config.Load([]string{"TANDEM_CONFIG="}, providers)
	require.NoError(t, err)
	require.EqualError(t, c.RequireAPITokens(), "config: TANDEM_API_TOKENS is required (comma-separated bearer tokens)")
	_, err = c.ProviderSettings("stripe").Float("rate_limit", 1)
	require.NoError(t, err)
	_, err = config.NewSettings("stripe", map[string]string{"rate_limit": "fast"}).Float("rate_limit", 1)
	require.EqualError(t, err, `config: STRIPE_RATE_LIMIT "fast": want a non-negative number`)
}
