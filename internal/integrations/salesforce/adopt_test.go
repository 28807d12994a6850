package salesforce_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// Listing walks every live contact once, one request per 2,000, mapped so
// that a contact Tandem pushed hashes like the state it pushed.
func TestListRemoteWalksEveryContact(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	cfg := fakeConfig(fake)
	cfg.MetadataField = metadataField
	a := newAdapter(t, cfg, nil)
	ctx := context.Background()

	pushed := integrations.Customer{UserID: "0193a8b0-0000-7000-8000-000000000001", Email: "pushed@example.com", Name: "Ada King",
		Phone: "+1 555", Metadata: map[string]string{"plan": "pro"}, Version: 2}
	res, err := a.Upsert(ctx, pushed, integrations.Link{})
	require.NoError(t, err)
	want := map[string]bool{res.RemoteID: true}
	for i := range 2100 {
		c, err := fake.UICreate(salesforcefake.Contact{LastName: fmt.Sprint("Old", i), Email: fmt.Sprintf("old%d@example.com", i)})
		require.NoError(t, err)
		want[c.ID] = true
	}
	gone, err := fake.UICreate(salesforcefake.Contact{LastName: "Gone"})
	require.NoError(t, err)
	require.NoError(t, fake.UIDelete(gone.ID))
	before := len(apiRequests(fake))

	got := map[string]integrations.RemoteObject{}
	cursor, pages := "", 0
	for {
		page, next, err := a.ListRemote(ctx, cursor)
		require.NoError(t, err)
		pages++
		for _, o := range page {
			require.NotContains(t, got, o.ID, "listed twice")
			got[o.ID] = o
		}
		if next == "" {
			break
		}
		cursor = next
	}
	require.Equal(t, 2, pages)
	require.Len(t, apiRequests(fake)[before:], 2, "one request per page")
	require.Len(t, got, len(want))
	mine, ok := got[res.RemoteID]
	require.True(t, ok)
	require.Equal(t, pushed.UserID, mine.UserID)
	require.False(t, mine.WithoutMetadata)
	require.Equal(t, pushed.Hash(), mine.Customer.Hash(), "a pushed contact does not hash like its push")

	_, _, err = a.ListRemote(ctx, "https://elsewhere.example.com/x")
	require.True(t, integrations.IsPermanent(err), "%v", err)
	_, _, err = a.ListRemote(ctx, "/services/data/v60.0/query/01gEXPIRED-2000")
	require.True(t, integrations.IsPermanent(err), "%v", err)
}

// Without a metadata field, listed contacts say their metadata means
// nothing.
func TestListRemoteWithoutMetadataField(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := newAdapter(t, fakeConfig(fake), nil)
	_, err := fake.UICreate(salesforcefake.Contact{LastName: "Solo", Email: "solo@example.com"})
	require.NoError(t, err)
	page, next, err := a.ListRemote(context.Background(), "")
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, page, 1)
	require.True(t, page[0].WithoutMetadata)
	require.Equal(t, "Solo", page[0].Customer.Name)
}

func TestCandidatesByTagThenEmail(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	cfg := fakeConfig(fake)
	cfg.MetadataField = metadataField
	a := newAdapter(t, cfg, nil)
	ctx := context.Background()
	const user, other = "0193a8b0-0000-7000-8000-00000000000a", "0193a8b0-0000-7000-8000-00000000000b"

	tagged, err := a.Upsert(ctx, integrations.Customer{UserID: user, Email: "moved@example.com", Name: "Tagged"}, integrations.Link{})
	require.NoError(t, err)
	sameEmail, err := fake.UICreate(salesforcefake.Contact{LastName: "Untagged", Email: "Ada.O'Brien@Example.com"})
	require.NoError(t, err)
	_, err = a.Upsert(ctx, integrations.Customer{UserID: other, Email: "someone@example.com", Name: "Other"}, integrations.Link{})
	require.NoError(t, err)
	_, err = fake.UICreate(salesforcefake.Contact{LastName: "Unrelated", Email: "unrelated@example.com"})
	require.NoError(t, err)
	before := len(apiRequests(fake))

	got, err := a.Candidates(ctx, user, []string{"ada.o'brien@example.com", "", "ADA.O'BRIEN@example.com"}, true)
	require.NoError(t, err)
	require.Len(t, apiRequests(fake)[before:], 1, "one query")
	ids := make([]string, len(got))
	for i, o := range got {
		ids[i] = o.ID
	}
	slices.Sort(ids)
	wantIDs := []string{tagged.RemoteID, sameEmail.ID}
	slices.Sort(wantIDs)
	require.Equal(t, wantIDs, ids)

	choice := integrations.ChooseLink(user, "ada.o'brien@example.com", true, got)
	require.Equal(t, tagged.RemoteID, choice.RemoteID, "the tagged contact wins")
	require.True(t, choice.Tagged)

	got, err = a.Candidates(ctx, "0193a8b0-0000-7000-8000-00000000000c", []string{"ada.o'brien@example.com"}, false)
	require.NoError(t, err)
	choice = integrations.ChooseLink("0193a8b0-0000-7000-8000-00000000000c", "ada.o'brien@example.com", true, got)
	require.Equal(t, sameEmail.ID, choice.RemoteID, "the single untagged contact with the email")
	require.False(t, choice.Tagged)

	got, err = a.Candidates(ctx, "", nil, true)
	require.NoError(t, err)
	require.Empty(t, got)
}
