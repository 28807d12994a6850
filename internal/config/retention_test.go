package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/config"
)

// TestRetentions: the shipped file and the built-in defaults agree; an
// inbound retention shorter than Stripe's 3 days of retries (which would
// let a redelivered event be applied twice) is refused.
func TestRetentions(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{{"TANDEM_CONFIG=../../configs/tandem.yaml"}, {"TANDEM_CONFIG="}} {
		c, err := config.Load(env, providers)
		require.NoError(t, err)
		require.Equal(t, 24*time.Hour, c.Relay.Retention, env)
		require.Equal(t, 96*time.Hour, c.Inbound.Retention, env)
		require.Equal(t, 72*time.Hour, c.Inbound.PayloadRetention, env)
	}
	c, err := config.Load([]string{"TANDEM_CONFIG=", "TANDEM_INBOUND_RETENTION=720h", "TANDEM_INBOUND_PAYLOAD_RETENTION=24h"}, providers)
	require.NoError(t, err)
	require.Equal(t, 720*time.Hour, c.Inbound.Retention)
	require.Equal(t, 24*time.Hour, c.Inbound.PayloadRetention)

	for _, env := range [][]string{
		{"TANDEM_INBOUND_RETENTION=71h"},
		{"TANDEM_INBOUND_RETENTION=never"},
		{"TANDEM_INBOUND_PAYLOAD_RETENTION=0s"},
	} {
		_, err := config.Load(append(env, "TANDEM_CONFIG="), providers)
		require.Error(t, err, env)
		require.Contains(t, err.Error(), env[0][:strings.IndexByte(env[0], '=')], env)
	}
}
