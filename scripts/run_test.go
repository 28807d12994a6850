// Package scripts_test checks scripts/run.sh (make run) without starting
// anything: TANDEM_RUN_DRY=1 prints what each process would get.
package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/config"
)

// dryRun runs a copy of run.sh (in a directory without bin/, so nothing can
// start) with only env and PATH, and returns its lines by process name.
func dryRun(t *testing.T, env ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "scripts"), 0o755))
	script, err := os.ReadFile("run.sh")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "scripts", "run.sh"), script, 0o755))
	cmd := exec.Command("bash", filepath.Join(dir, "scripts", "run.sh"))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "TANDEM_RUN_DRY=1"}, env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, rest, _ := strings.Cut(l, ": ")
		lines[name] = " " + rest + " "
	}
	return lines
}

// TestRunSetsDevelopmentValuesOnlyForItself: make run binds every process
// to 127.0.0.1 and gives the api a development token (long enough for the
// api's minimum) and the webhook the sandbox's secret, but only where the
// operator set nothing: their STRIPE_WEBHOOK_SECRET, tokens, configuration
// file and addresses are kept.
func TestRunSetsDevelopmentValuesOnlyForItself(t *testing.T) {
	t.Parallel()
	got := dryRun(t)
	require.Contains(t, got["api"], " TANDEM_API_ADDR=127.0.0.1:8080 ")
	require.Contains(t, got["webhook"], " TANDEM_WEBHOOK_ADDR=127.0.0.1:8081 ")
	require.Contains(t, got["worker-stripe"], " TANDEM_WORKER_ADDR=127.0.0.1:8082 ")
	require.Contains(t, got["sandbox"], " TANDEM_SANDBOX_ADDR=127.0.0.1:12111 ")
	require.Contains(t, got["api"], " TANDEM_API_TOKENS=dev-token-local-only ")
	require.GreaterOrEqual(t, len("dev-token-local-only"), config.MinAPITokenLen)
	require.Contains(t, got["webhook"], " STRIPE_WEBHOOK_SECRET=whsec_sandbox_local_only ")

	got = dryRun(t, "STRIPE_WEBHOOK_SECRET=whsec_operators_own", "TANDEM_API_TOKENS=operators-own-token-123",
		"TANDEM_API_ADDR=:9080")
	for _, p := range []string{"webhook", "sandbox"} {
		require.Contains(t, got[p], " STRIPE_WEBHOOK_SECRET=(yours) ", p)
	}
	require.Contains(t, got["api"], " TANDEM_API_TOKENS=(yours) ")
	require.Contains(t, got["api"], " TANDEM_API_ADDR=:9080 ")

	got = dryRun(t, "TANDEM_CONFIG=/etc/tandem/tandem.yaml")
	require.Contains(t, got["api"], " TANDEM_API_TOKENS=(unset) ", "the tokens of the operator's file would be replaced")
}
