package salesforce_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

// stepClock is a fake's clock that moves a second at each tick, from now.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
}

func readChanges(t *testing.T, a *salesforce.Adapter, cursor string) (evs []integrations.InboundEvent, next string, requests int) {
	t.Helper()
	for {
		page, err := a.ReadChanges(context.Background(), cursor)
		require.NoError(t, err)
		evs = append(evs, page.Events...)
		requests += page.Requests
		cursor = page.Next
		if !page.More {
			return evs, cursor, requests
		}
	}
}

// TestChangeLogFindsChangesDeletesAndMerges: the change log starts now and
// then returns, oldest first and each once, a contact changed without an
// Outbound Message, a deleted one (which no notification reports) and a
// merge (the victim before the survivor's own change), mapped as the
// notifications are, with stable ids; pages hold 200 contacts.
func TestChangeLogFindsChangesDeletesAndMerges(t *testing.T) {
	t.Parallel()
	clk := &stepClock{t: time.Now().Add(time.Second).Truncate(time.Second)}
	fake := startFake(t, salesforcefake.Options{Clock: clk.now})
	a := receiver(t, fake)
	start, err := a.ReadChanges(context.Background(), "")
	require.NoError(t, err)
	require.Empty(t, start.Events)

	c1, err := fake.UICreate(salesforcefake.Contact{FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com"})
	require.NoError(t, err)
	clk.tick()
	c2, err := fake.UICreate(salesforcefake.Contact{LastName: "Bob", Email: "bob@example.com", TandemUserID: "0193-user-b"})
	require.NoError(t, err)
	clk.tick()
	_, err = fake.UIUpdate(c1.ID, func(c *salesforcefake.Contact) { c.LastName = "King" })
	require.NoError(t, err)
	clk.tick()
	require.NoError(t, fake.UIDelete(c2.ID))
	clk.tick()
	c3, err := fake.UICreate(salesforcefake.Contact{LastName: "Cleo", Email: "cleo@example.com"})
	require.NoError(t, err)
	clk.tick()
	_, err = fake.UIMerge(c1.ID, c3.ID, func(c *salesforcefake.Contact) { c.Phone = "+44 1" })
	require.NoError(t, err)

	evs, next, requests := readChanges(t, a, start.Next)
	require.Equal(t, 1, requests)
	require.Equal(t, 3, len(evs))
	require.Equal(t, integrations.InboundDeleted, evs[0].Kind)
	require.Equal(t, c2.ID, evs[0].RemoteID)
	require.Equal(t, "0193-user-b", evs[0].UserID)
	require.Equal(t, salesforce.EventContactDeleted, evs[0].RawType)
	require.Empty(t, evs[0].MergedInto)
	require.Equal(t, c3.ID, evs[1].RemoteID, "the merge before the survivor's change of the same second")
	require.Equal(t, salesforce.EventContactMerged, evs[1].RawType)
	require.Equal(t, integrations.InboundDeleted, evs[1].Kind)
	require.Equal(t, c1.ID, evs[1].MergedInto)
	require.Equal(t, c1.ID, evs[2].RemoteID)
	require.Equal(t, integrations.InboundUpdated, evs[2].Kind)
	require.Equal(t, "Ada King", evs[2].Customer.Name)
	require.Equal(t, "+44 1", evs[2].Customer.Phone)
	require.False(t, evs[2].Echo, "a person's change")
	require.True(t, evs[2].WithoutMetadata, "no metadata field configured")
	for _, ev := range evs {
		require.NoError(t, checkKey(ev.ID))
	}
	again, _, _ := readChanges(t, a, start.Next)
	require.Equal(t, evs, again, "the same contacts read again are the same events")

	// Nothing new: the last second is read again (a contact saved later in
	// it may sort before the last one read), as the same events.
	evs, next, _ = readChanges(t, a, next)
	require.Equal(t, []string{"log-" + c3.ID, "log-" + c1.ID}, prefixes(evs))

	// A contact changed again within the same second is a new event.
	before := evs[1].ID
	_, err = fake.UIUpdate(c1.ID, func(c *salesforcefake.Contact) { c.LastName = "Byron" })
	require.NoError(t, err)
	evs, next, _ = readChanges(t, a, next)
	require.Equal(t, 2, len(evs))
	require.NotEqual(t, before, evs[1].ID)
	require.Equal(t, "Ada Byron", evs[1].Customer.Name)

	// 250 changes take 2 pages.
	clk.tick()
	for i := range 250 {
		_, err := fake.UICreate(salesforcefake.Contact{LastName: fmt.Sprintf("N%d", i), Email: fmt.Sprintf("n%d@example.com", i)})
		require.NoError(t, err)
	}
	evs, _, requests = readChanges(t, a, next)
	require.Equal(t, 2+250, len(evs), "the last second read again, then the new ones")
	require.Equal(t, []string{"log-" + c3.ID, "log-" + c1.ID}, prefixes(evs[:2]))
	require.Equal(t, 2, requests)
	seen := map[string]bool{}
	for _, ev := range evs {
		require.False(t, seen[ev.ID], "each once")
		seen[ev.ID] = true
	}
}

// prefixes are the events' ids without their time.
func prefixes(evs []integrations.InboundEvent) []string {
	var out []string
	for _, ev := range evs {
		id := ev.ID[:strings.LastIndex(ev.ID, "-")]
		out = append(out, id[:strings.LastIndex(id, "-")])
	}
	return out
}

func checkKey(id string) error {
	if id == "" || len(id) > 255 {
		return fmt.Errorf("bad event id %q", id)
	}
	return nil
}

// TestChangeLogCursorTooOld: a cursor older than the recycle bin keeps
// deleted contacts, or unreadable, is reported; a refused query is an
// error of the contract's kinds.
func TestChangeLogCursorTooOld(t *testing.T) {
	t.Parallel()
	fake := startFake(t, salesforcefake.Options{})
	a := receiver(t, fake)
	_, err := a.ReadChanges(context.Background(), time.Now().Add(-16*24*time.Hour).UTC().Format(time.RFC3339))
	require.ErrorIs(t, err, integrations.ErrCursorExpired)
	_, err = a.ReadChanges(context.Background(), "yesterday")
	require.ErrorIs(t, err, integrations.ErrCursorExpired)
	fake.SetFaults(salesforcefake.Faults{ServerErrorRatio: 1})
	_, err = a.ReadChanges(context.Background(), time.Now().UTC().Format(time.RFC3339))
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err))
}
