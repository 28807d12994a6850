package scripts_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
)

// TestRunStartsTheSalesforceSandbox: with salesforce enabled and no
// SALESFORCE_INSTANCE_URL, make run starts the local Salesforce sandbox and
// points Tandem at it (with the fake's published development credentials);
// with an instance URL it starts none and keeps the operator's secret.
func TestRunStartsTheSalesforceSandbox(t *testing.T) {
	t.Parallel()
	got := dryRun(t, "TANDEM_PROVIDERS=stripe,salesforce")
	require.Contains(t, got, "sfsandbox")
	require.Contains(t, got, "worker-salesforce")
	require.Contains(t, got["webhook"], " SALESFORCE_INSTANCE_URL=http://127.0.0.1:12112 ")
	require.Contains(t, got["worker-salesforce"], " SALESFORCE_INSTANCE_URL=http://127.0.0.1:12112 ")
	require.Contains(t, got["webhook"], " SALESFORCE_WEBHOOK_SECRET=sf-sandbox-local-only ")

	got = dryRun(t, "TANDEM_PROVIDERS=stripe")
	require.NotContains(t, got, "sfsandbox")

	got = dryRun(t, "TANDEM_PROVIDERS=stripe,salesforce", "SALESFORCE_INSTANCE_URL=https://acme.my.salesforce.com",
		"SALESFORCE_WEBHOOK_SECRET=operators-own")
	require.NotContains(t, got, "sfsandbox")
	require.Contains(t, got["webhook"], " SALESFORCE_INSTANCE_URL=https://acme.my.salesforce.com ")
	require.Contains(t, got["webhook"], " SALESFORCE_WEBHOOK_SECRET=(yours) ")
}

// TestRunGivesTheSandboxesCredentials: the development credentials run.sh
// gives Tandem are the Salesforce fake's own.
func TestRunGivesTheSandboxesCredentials(t *testing.T) {
	t.Parallel()
	script, err := os.ReadFile("run.sh")
	require.NoError(t, err)
	for _, v := range []string{salesforcefake.DefaultClientID, salesforcefake.DefaultClientSecret, salesforcefake.DefaultOrgID,
		salesforcefake.DefaultIntegrationUserID, salesforcefake.DefaultCustomField} {
		require.True(t, strings.Contains(string(script), v), "run.sh does not give Tandem the fake's %s", v)
	}
}
