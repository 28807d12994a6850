package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/config"
)

// TestCatchupInterval: 1m by default (and in the shipped file), 0 turns
// catch-up off, anything else that is not a positive duration is refused
// naming the variable.
func TestCatchupInterval(t *testing.T) {
	t.Parallel()
	c, err := config.Load([]string{"TANDEM_CONFIG=../../configs/tandem.yaml"}, providers)
	require.NoError(t, err)
	require.Equal(t, time.Minute, c.CatchupInterval)
	c, err = config.Load([]string{"TANDEM_CONFIG="}, providers)
	require.NoError(t, err)
	require.Equal(t, time.Minute, c.CatchupInterval)
	c, err = config.Load([]string{"TANDEM_CONFIG=", "TANDEM_CATCHUP_INTERVAL=0"}, providers)
	require.NoError(t, err)
	require.Zero(t, c.CatchupInterval)
	c, err = config.Load([]string{"TANDEM_CONFIG=", "TANDEM_CATCHUP_INTERVAL=250ms"}, providers)
	require.NoError(t, err)
	require.Equal(t, 250*time.Millisecond, c.CatchupInterval)
	for _, bad := range []string{"-1s", "soon", "10"} {
		_, err = config.Load([]string{"TANDEM_CONFIG=", "TANDEM_CATCHUP_INTERVAL=" + bad}, providers)
		require.ErrorContains(t, err, "TANDEM_CATCHUP_INTERVAL", bad)
	}
}
