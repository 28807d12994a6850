package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/event"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// EventRetention is how long Stripe's Events API keeps an event: a catch-up
// cursor older than this has lost changes (integrations.ErrCursorExpired).
const EventRetention = 30 * 24 * time.Hour

// EventPageSize is the events one Events API request returns (Stripe's
// largest page).
const EventPageSize = 100

// readMargin is how far behind Tandem's clock a fully read log is taken to
// be read through: it covers the difference between Stripe's clock and
// Tandem's and events that become visible a little after their time.
const readMargin = 5 * time.Minute

// maxBufferedPages bounds the pages a read by time (no event to start
// after) keeps in memory; beyond it only the oldest page is returned, and
// the reads that follow walk forward from it.
const maxBufferedPages = 50

var _ integrations.ChangeLog = (*Adapter)(nil)

// changeTypes are the event types the change log reads: those ParseWebhook
// handles.
var changeTypes = []*string{stripego.String(EventCustomerCreated), stripego.String(EventCustomerUpdated), stripego.String(EventCustomerDeleted)}

// ReadChanges reads customer.created, customer.updated and customer.deleted
// events from Stripe's Events API (integrations.ChangeLog), each mapped as
// ParseWebhook maps its delivery, with the same id (evt_…).
//
// The cursor is "<unix time>" or "<unix time>/<event id>": the event read
// last, and the time (Stripe's clock) before which everything was read.
// With an event, it reads the page of up to EventPageSize events that
// follow it (ending_before: Stripe lists newest first, and stripe-go turns
// that page around), so a backlog is walked oldest first at one request per
// page. Without one, or when Stripe no longer knows the event, it lists the
// events created since the time (created[gte], newest first, every page),
// and returns them oldest first. A cursor older than EventRetention is an
// error wrapping integrations.ErrCursorExpired. An event that cannot be
// mapped (another API version, no customer) is skipped with its reason.
func (a *Adapter) ReadChanges(ctx context.Context, cursor string) (integrations.ChangePage, error) {
	now := time.Now()
	if cursor == "" {
		t := now.Truncate(time.Second)
		return integrations.ChangePage{Next: formatCursor(t, ""), ReadThrough: t}, nil
	}
	since, after, err := parseCursor(cursor)
	if err != nil {
		return integrations.ChangePage{}, fmt.Errorf("stripe: %w: %w", integrations.ErrCursorExpired, err)
	}
	if now.Sub(since) > EventRetention {
		return integrations.ChangePage{}, fmt.Errorf("stripe: %w: the cursor is at %s, and Stripe keeps events %s",
			integrations.ErrCursorExpired, since.Format(time.RFC3339), EventRetention)
	}
	if after != "" {
		evs, more, err := a.listEvents(ctx, &stripego.EventListParams{ListParams: stripego.ListParams{EndingBefore: stripego.String(after)}})
		switch {
		case err == nil:
			return a.changePage(evs, since, after, more, now, 1), nil
		case !isMissingCursor(err):
			return integrations.ChangePage{}, fmt.Errorf("stripe: reading the events after %s: %w", after, err)
		}
		// The event is gone (older than Stripe keeps, or never there): read
		// by time, which reaches back to since.
	}
	return a.readSince(ctx, since, now)
}

// readSince lists the events created at or after since, newest first, and
// returns the oldest pages first.
func (a *Adapter) readSince(ctx context.Context, since, now time.Time) (integrations.ChangePage, error) {
	var pages [][]*stripego.Event
	requests, dropped := 0, false
	var startingAfter *string
	for {
		p := &stripego.EventListParams{CreatedRange: &stripego.RangeQueryParams{GreaterThanOrEqual: since.Unix()}}
		p.StartingAfter = startingAfter
		evs, more, err := a.listEvents(ctx, p)
		requests++
		if err != nil {
			return integrations.ChangePage{}, fmt.Errorf("stripe: reading the events since %s: %w", since.Format(time.RFC3339), err)
		}
		if len(pages) == maxBufferedPages {
			pages, dropped = pages[1:], true
		}
		pages = append(pages, evs)
		if !more || len(evs) == 0 {
			break
		}
		startingAfter = stripego.String(evs[len(evs)-1].ID)
	}
	if dropped {
		// Only the oldest page is kept: return it; the next read walks
		// forward from its newest event.
		oldest := pages[len(pages)-1]
		slices.Reverse(oldest)
		return a.changePage(oldest, since, "", true, now, requests), nil
	}
	var all []*stripego.Event
	for _, p := range pages {
		all = append(all, p...)
	}
	slices.Reverse(all)
	return a.changePage(all, since, "", false, now, requests), nil
}

// changePage maps events read oldest first after the cursor (since, after).
func (a *Adapter) changePage(evs []*stripego.Event, since time.Time, after string, more bool, now time.Time, requests int) integrations.ChangePage {
	page := integrations.ChangePage{More: more, Requests: requests}
	newest := since
	for _, ev := range evs {
		if t := time.Unix(ev.Created, 0); t.After(newest) {
			newest = t
		}
		after = ev.ID
		raw, err := json.Marshal(ev)
		if err != nil {
			page.Skipped = append(page.Skipped, integrations.SkippedChange{ID: ev.ID, Reason: "stripe: encoding the event: " + err.Error()})
			continue
		}
		in, err := a.inboundEvent(ev, raw)
		if err != nil {
			page.Skipped = append(page.Skipped, integrations.SkippedChange{ID: ev.ID, Reason: err.Error()})
			continue
		}
		page.Events = append(page.Events, in)
	}
	page.ReadThrough = newest
	if !more {
		// Everything Stripe shows was read: the log is read through now,
		// give or take the clocks' difference.
		if t := now.Add(-readMargin).Truncate(time.Second); t.After(newest) {
			page.ReadThrough = t
		}
	}
	page.Next = formatCursor(page.ReadThrough, after)
	return page
}

// listEvents makes one Events API request for the customer events of p's
// window, at the adapter's rate limit. The events come newest first, or
// oldest first with EndingBefore (stripe-go reverses that page).
func (a *Adapter) listEvents(ctx context.Context, p *stripego.EventListParams) ([]*stripego.Event, bool, error) {
	if err := a.limiter.wait(ctx); err != nil {
		return nil, false, err
	}
	p.Context = ctx
	p.Limit = stripego.Int64(EventPageSize)
	p.Single = true
	p.Types = changeTypes
	it := event.Client{B: a.customers.B, Key: a.customers.Key}.List(p)
	var evs []*stripego.Event
	for it.Next() {
		evs = append(evs, it.Event())
	}
	if err := it.Err(); err != nil {
		return nil, false, a.classify(err)
	}
	more := false
	if l := it.EventList(); l != nil {
		more = l.HasMore
	}
	return evs, more, nil
}

// isMissingCursor reports Stripe's answer to an ending_before naming an
// event it does not know.
func isMissingCursor(err error) bool {
	se, ok := stripeError(err)
	return ok && se.Code == stripego.ErrorCodeResourceMissing && se.Param == "ending_before"
}

func formatCursor(since time.Time, after string) string {
	s := strconv.FormatInt(since.Unix(), 10)
	if after != "" {
		s += "/" + after
	}
	return s
}

func parseCursor(c string) (since time.Time, after string, err error) {
	ts, after, _ := strings.Cut(c, "/")
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || n <= 0 || strings.Contains(after, "/") {
		return time.Time{}, "", errors.New("unreadable cursor " + strconv.Quote(c))
	}
	return time.Unix(n, 0), after, nil
}
