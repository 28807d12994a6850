package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// A batch writes its users as the API creates them, with or without their
// outbox rows, and refuses (writing nothing of them) rows whose email a live
// user or an earlier row holds, case-insensitively.
func TestImportUsersWritesABatchAndRefusesTakenEmails(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()
	owner, err := st.CreateUser(ctx, store.NewUser{Email: "taken@example.com", Name: "Owner"}, nil)
	require.NoError(t, err)
	gone, err := st.CreateUser(ctx, store.NewUser{Email: "gone@example.com", Name: "Gone"}, nil)
	require.NoError(t, err)
	_, err = st.DeleteUser(ctx, gone.ID, 0)
	require.NoError(t, err)
	outbox := testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox")

	rows := []store.ImportRow{
		{Line: 2, User: store.NewUser{Email: "a@example.com", Name: "A", Phone: "+1 555", Metadata: map[string]string{"plan": "pro"}}},
		{Line: 3, User: store.NewUser{Email: "TAKEN@example.com", Name: "Squatter"}},
		{Line: 4, User: store.NewUser{Email: "gone@example.com", Name: "Reuses a deleted user's email"}},
		{Line: 5, User: store.NewUser{Email: "A@EXAMPLE.com", Name: "Same as line 2"}},
	}
	created, taken, err := st.ImportUsers(ctx, rows, true)
	require.NoError(t, err)
	require.Len(t, created, 2)
	require.Equal(t, []store.ImportTaken{{Line: 3, UserID: owner.ID}, {Line: 5, UserID: created[0].ID}}, taken)

	got, err := st.GetUser(ctx, created[0].ID)
	require.NoError(t, err)
	require.Equal(t, "a@example.com", got.Email)
	require.Equal(t, "+1 555", got.Phone)
	require.Equal(t, map[string]string{"plan": "pro"}, got.Metadata)
	require.Equal(t, int64(1), got.Version)
	require.Equal(t, store.OriginAPI, got.ChangedBy)
	require.Equal(t, int64(1), got.APIVersion)
	require.Equal(t, outbox+2, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"))
	require.Equal(t, int64(2), testutil.QueryInt(t, dsn,
		"SELECT COUNT(*) FROM outbox WHERE type = ? AND origin = ? AND version = 1", store.EventUserCreated, store.OriginImport))
	require.Zero(t, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM users WHERE name IN ('Squatter', 'Same as line 2')"))

	// Without announcing: users, no outbox rows.
	created, taken, err = st.ImportUsers(ctx, []store.ImportRow{{Line: 1, User: store.NewUser{Email: "quiet@example.com", Name: "Q"}}}, false)
	require.NoError(t, err)
	require.Len(t, created, 1)
	require.Empty(t, taken)
	require.Equal(t, outbox+2, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox"))
	_, err = st.GetUser(ctx, created[0].ID)
	require.NoError(t, err)
}
