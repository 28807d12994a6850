package stripe_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// TestDebugLogsCarryNoPersonalData: at debug level stripe-go reports every
// response body and Stripe's error messages, which hold the customer's
// email, name and phone. None of it may reach the log, at any level; the
// requests themselves (method, path, timing) still do.
func TestDebugLogsCarryNoPersonalData(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := stripe.New(stripe.Config{SecretKey: stripefake.DefaultAPIKey, APIBase: fake.URL(), RateLimit: 1000},
		stripe.Options{Logger: log})
	require.NoError(t, err)
	ctx := context.Background()
	c := integrations.Customer{UserID: "0193a000-0000-7000-8000-000000000001", Email: "ada.private@example.com",
		Name: "Ada Privatelace", Phone: "+44 20 7946 0999", Metadata: map[string]string{"plan": "secretplan"}, Version: 1}
	res, err := a.Upsert(ctx, c, integrations.Link{})
	require.NoError(t, err)
	c.Email, c.Version = "not-an-email-privately", 2
	_, err = a.Upsert(ctx, c, integrations.Link{RemoteID: res.RemoteID, MetadataKeys: []string{"plan"}})
	require.Error(t, err, "the fake refuses a malformed email")
	// The error is logged by the worker and kept as the link's last_error.
	require.Contains(t, err.Error(), "Invalid email address")
	require.NotContains(t, err.Error(), "not-an-email-privately")

	out := logs.String()
	require.Contains(t, out, "stripe-go", "stripe-go's request lines are still logged")
	for _, personal := range []string{"ada.private", "Privatelace", "7946 0999", "secretplan", "not-an-email-privately"} {
		require.NotContains(t, out, personal)
	}
}
