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
	require.Empty(t, c.APITokens, "the shipped file makes no token valid: make run sets a development one")
	require.ErrorContains(t, c.RequireAPITokens(), "TANDEM_API_TOKENS is required")
	require.Equal(t, []string{"stripe"}, c.Providers)
	require.Equal(t, 10, c.MaxAttempts)
	require.Equal(t, ":8080", c.APIAddr)
	require.Equal(t, 500*time.Millisecond, c.Relay.PollInterval)
	require.Equal(t, []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}, c.RetryTiers)
	require.Equal(t, "25", c.ProviderSettings("stripe").String("rate_limit"))
	require.Equal(t, config.HTTPConfig{MaxConns: 1024, MaxConnsPerIP: 128}, c.HTTP)
	require.True(t, c.InboundCreate)
	require.True(t, c.LinkByEmail)
	require.Equal(t, 30*time.Second, c.Worker.Lease)
	require.False(t, c.Pprof, "profiles are off unless asked for")
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
		"TANDEM_MAX_ATTEMPTS":          {"TANDEM_MAX_ATTEMPTS=ten"},
		"TANDEM_RELAY_POLL_INTERVAL":   {"TANDEM_RELAY_POLL_INTERVAL=soon"},
		"TANDEM_LOG_LEVEL":             {"TANDEM_LOG_LEVEL=loud"},
		"TANDEM_RETRY_TIERS":           {"TANDEM_RETRY_TIERS=10s,1s"},
		"TANDEM_MYSQL_DSN":             {"TANDEM_MYSQL_DSN= "},
		"TANDEM_CONFIG":                {"TANDEM_CONFIG=/nonexistent/tandem.yaml"},
		"TANDEM_HTTP_MAX_CONNS":        {"TANDEM_HTTP_MAX_CONNS=0"},
		"TANDEM_HTTP_MAX_CONNS_PER_IP": {"TANDEM_HTTP_MAX_CONNS_PER_IP=-1"},
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
	require.Equal(t, config.HTTPConfig{MaxConns: 1024, MaxConnsPerIP: 128}, c.HTTP, "built-in defaults")
	c, err = config.Load([]string{"TANDEM_CONFIG=", "TANDEM_HTTP_MAX_CONNS_PER_IP=0"}, providers)
	require.NoError(t, err)
	require.Zero(t, c.HTTP.MaxConnsPerIP, "0: no limit")
	_, err = c.ProviderSettings("stripe").Float("rate_limit", 1)
	require.NoError(t, err)
	_, err = config.NewSettings("stripe", map[string]string{"rate_limit": "fast"}).Float("rate_limit", 1)
	require.EqualError(t, err, `config: STRIPE_RATE_LIMIT "fast": want a non-negative number`)
}

// TestAPITokensMustBeLongEnough: a token shorter than MinAPITokenLen (such
// as the published dev-token) stops the api, naming the variable but not
// printing the token.
func TestAPITokensMustBeLongEnough(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"dev-token", "tok", "a-good-long-enough-token,short1"} {
		c, err := config.Load([]string{"TANDEM_CONFIG=", "TANDEM_API_TOKENS=" + bad}, providers)
		require.NoError(t, err)
		err = c.RequireAPITokens()
		require.ErrorContains(t, err, "TANDEM_API_TOKENS", bad)
		require.ErrorContains(t, err, "at least 16 characters", bad)
		require.NotContains(t, err.Error(), "short1")
		require.NotContains(t, err.Error(), "dev-token")
	}
	c, err := config.Load([]string{"TANDEM_CONFIG=", "TANDEM_API_TOKENS=a-good-long-enough-token, another-good-token-1"}, providers)
	require.NoError(t, err)
	require.NoError(t, c.RequireAPITokens())
	require.Equal(t, []string{"a-good-long-enough-token", "another-good-token-1"}, c.APITokens)
}
