package integrations

import (
	"context"
	"errors"
	"time"
)

// ErrCursorExpired is wrapped by a ChangeLog's ReadChanges when the cursor
// points before what the provider still keeps (Stripe keeps events 30 days):
// changes made since may be lost to catch-up, and only a reconcile finds
// them. The caller reports it and starts again from now.
var ErrCursorExpired = errors.New("the change log no longer reaches back to the cursor")

// ChangeLog is optional for a WebhookReceiver whose provider keeps its own
// record of changes (Stripe's Events API, Salesforce's Contacts by
// SystemModstamp). The webhook process's catch-up reads it from a cursor
// kept in MySQL and applies what it finds exactly as a webhook delivery of
// the same change would be applied, so a change whose webhook was lost still
// reaches Tandem. Find it on the undecorated provider. Implementations must
// be safe for concurrent use.
type ChangeLog interface {
	// ReadChanges reads the changes recorded after cursor: one page, with
	// at most a few provider requests. cursor "" starts the log now (no
	// request is made, the page is empty): older history is what
	// tandemctl reconcile and import are for.
	//
	// Each event is mapped exactly as ParseWebhook maps the webhook
	// delivery of the same change, with a stable ID: the webhook's own
	// event id where the provider has one (Stripe's evt_…), so that a
	// change both delivered and read is de-duplicated. Events are oldest
	// first. Entries that cannot be read are not returned but listed in
	// ChangePage.Skipped.
	//
	// Errors follow the package's kinds (a 429 or 5xx is transient); an
	// error wrapping ErrCursorExpired means the cursor is older than the
	// provider's log. On any error nothing of the page is returned and the
	// caller keeps its cursor.
	ReadChanges(ctx context.Context, cursor string) (ChangePage, error)
}

// ChangePage is one read of a ChangeLog.
type ChangePage struct {
	// Events are the changes read, oldest first.
	Events []InboundEvent
	// Skipped lists the entries that could not be read (malformed): the
	// caller counts and logs them; they are not read again.
	Skipped []SkippedChange
	// Next is the cursor after this page: pass it to the next ReadChanges
	// once every event of the page is applied and committed. It is never
	// "" and may equal the cursor read from.
	Next string
	// ReadThrough: every change the provider recorded before this time (its
	// clock) has now been read. It never moves back.
	ReadThrough time.Time
	// More reports that changes follow this page: read again now.
	More bool
	// Requests is how many provider requests the read made.
	Requests int
}

// SkippedChange is a change-log entry that could not be read.
type SkippedChange struct {
	ID     string // the entry's id, if it has one
	Reason string
}
