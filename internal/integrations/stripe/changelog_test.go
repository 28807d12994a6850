package stripe_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
)

// readAll follows the change log from cursor until it has no more, and
// returns the events read and the requests made.
func readAll(t *testing.T, log integrations.ChangeLog, cursor string) (evs []integrations.InboundEvent, next string, requests int) {
	t.Helper()
	for {
		page, err := log.ReadChanges(context.Background(), cursor)
		require.NoError(t, err)
		require.NotEmpty(t, page.Next)
		evs = append(evs, page.Events...)
		requests += page.Requests
		cursor = page.Next
		if !page.More {
			return evs, cursor, requests
		}
	}
}

// customerEventIDs are the ids of the fake's customer events, oldest first.
func customerEventIDs(fake *stripefake.Server, skip int) []string {
	var ids []string
	for _, ev := range fake.Events()[skip:] {
		if strings.HasPrefix(ev.Type, "customer.") {
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

func ids(evs []integrations.InboundEvent) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

// TestChangeLogReadsEveryEventOnceOldestFirst: the change log starts now,
// then returns every customer event recorded since, exactly once, oldest
// first, mapped as the webhook maps them, at one request per 100 events once
// it has an event to walk forward from.
func TestChangeLogReadsEveryEventOnceOldestFirst(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	a := fakeAdapter(t, fake).(*stripe.Adapter)
	old, err := fake.DashboardCreate(stripefake.Customer{Email: "before@example.com", Name: "Before"})
	require.NoError(t, err)

	page, err := a.ReadChanges(context.Background(), "")
	require.NoError(t, err)
	require.Empty(t, page.Events, "the first read starts now: older history is reconcile's")
	require.Zero(t, page.Requests)
	start := page.Next

	// The time this started may still be "now" for Stripe's whole
	// seconds: the customer made before may be read again; it is in
	// inbound_events then, so it is skipped there.
	skip := len(fake.Events())
	var made []string
	for i := range 130 {
		c, err := fake.DashboardCreate(stripefake.Customer{Email: fmt.Sprintf("c%d@example.com", i), Name: "C"})
		require.NoError(t, err)
		made = append(made, c.ID)
	}
	_, err = fake.DashboardUpdate(made[0], func(c *stripefake.Customer) { c.Name = "Renamed" })
	require.NoError(t, err)
	require.NoError(t, fake.DashboardDelete(made[1]))

	evs, next, _ := readAll(t, a, start)
	got := ids(evs)
	want := customerEventIDs(fake, skip)
	if len(got) > len(want) {
		require.Equal(t, old.ID, evs[0].RemoteID, "only the customer made in the same second may be read again")
		got = got[1:]
	}
	require.Equal(t, want, got)
	last := evs[len(evs)-1]
	require.Equal(t, integrations.InboundDeleted, last.Kind)
	require.Equal(t, made[1], last.RemoteID)
	renamed := evs[len(evs)-2]
	require.Equal(t, integrations.InboundUpdated, renamed.Kind)
	require.Equal(t, "Renamed", renamed.Customer.Name)
	require.NotEmpty(t, renamed.Raw)

	// Nothing new: nothing read, one request.
	evs, next2, requests := readAll(t, a, next)
	require.Empty(t, evs)
	require.Equal(t, 1, requests)

	// 250 more: walked forward from the last event read, 100 per request.
	skip = len(fake.Events())
	for i := range 250 {
		_, err := fake.DashboardUpdate(made[2+i%100], func(c *stripefake.Customer) { c.Name = fmt.Sprintf("N%d", i) })
		require.NoError(t, err)
	}
	evs, _, requests = readAll(t, a, next2)
	require.Equal(t, customerEventIDs(fake, skip), ids(evs))
	require.Equal(t, 3, requests, "250 events in pages of 100")
}

// TestChangeLogCursorTooOld: a cursor older than Stripe keeps events is
// reported, not silently skipped; a cursor whose event Stripe no longer
// knows (but recent) falls back to reading by time.
func TestChangeLogCursorTooOld(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	a := fakeAdapter(t, fake).(*stripe.Adapter)
	old := time.Now().Add(-31 * 24 * time.Hour).Unix()
	_, err := a.ReadChanges(context.Background(), fmt.Sprintf("%d/evt_gone", old))
	require.ErrorIs(t, err, integrations.ErrCursorExpired)
	_, err = a.ReadChanges(context.Background(), "garbage")
	require.ErrorIs(t, err, integrations.ErrCursorExpired)

	since := time.Now().Add(-time.Minute).Unix()
	c, err := fake.DashboardCreate(stripefake.Customer{Email: "x@example.com", Name: "X"})
	require.NoError(t, err)
	page, err := a.ReadChanges(context.Background(), fmt.Sprintf("%d/evt_unknown", since))
	require.NoError(t, err)
	require.Len(t, page.Events, 1)
	require.Equal(t, c.ID, page.Events[0].RemoteID)
}

// TestChangeLogFailureKeepsNothing: a refused page is an error of the
// contract's kinds, and returns no events.
func TestChangeLogFailureKeepsNothing(t *testing.T) {
	t.Parallel()
	fake := startStripeFake(t)
	a := fakeAdapter(t, fake).(*stripe.Adapter)
	page, err := a.ReadChanges(context.Background(), "")
	require.NoError(t, err)
	_, err = fake.DashboardCreate(stripefake.Customer{Email: "y@example.com", Name: "Y"})
	require.NoError(t, err)
	fake.SetFaults(stripefake.Faults{ServerErrorRatio: 1})
	got, err := a.ReadChanges(context.Background(), page.Next)
	require.Error(t, err)
	require.False(t, integrations.IsPermanent(err), "a 500 is transient")
	require.Empty(t, got.Events)
	fake.SetFaults(stripefake.Faults{RateLimitRatio: 1})
	_, err = a.ReadChanges(context.Background(), page.Next)
	_, limited := integrations.RetryAfter(err)
	require.True(t, limited, "a 429 is rate limited: %v", err)
}
