// Package integrations is the provider contract: what Tandem needs from a SaaS
// system that also holds its users (Stripe customers, Salesforce contacts).
//
// It holds only the contract: the Provider interface, the provider-neutral
// Customer, Link and Result types, the error kinds that carry the retry policy
// (see Permanent, ErrNotFound, RateLimited), and the idempotency keys every
// provider sends. Implementations live in subpackages (integrations/stripe,
// later integrations/salesforce) that never import each other; the only list
// of them is internal/factory.
//
// # Error kinds
//
// An error returned by a Provider tells the caller what to do with the message
// that caused the call:
//
//   - a plain error (network failure, 5xx, timeout) is transient: retry with
//     backoff;
//   - an error for which RetryAfter reports true is transient too, but the
//     provider is throttling: wait at least the returned duration;
//   - an error for which IsPermanent reports true will fail the same way on
//     every retry (bad credentials, invalid data, data the provider cannot
//     hold): dead-letter it at once and show its message on the link;
//   - an error that matches ErrNotFound (errors.Is) means the remote object is
//     gone. Such errors are also permanent, so a caller that does not look for
//     ErrNotFound dead-letters them rather than retrying in vain.
//
// A Provider's Delete never returns ErrNotFound: a remote object that is
// already gone is a successful delete.
//
// # Decorators
//
// Cross-cutting concerns (metrics, logging) wrap a Provider in a Middleware;
// see integrations/instrument. A decorator hides any optional interface the
// wrapped provider implements, so look such capabilities up on the undecorated
// value.
package integrations

import (
	"context"
	"time"
)

// Provider pushes Tandem's users out to one SaaS system. Implementations must
// be safe for concurrent use.
type Provider interface {
	// Name is the provider's stable name ("stripe"): the queue suffix, the
	// webhook path segment, the configuration prefix and the provider column.
	// It never changes.
	Name() string

	// Upsert makes the remote object hold c. With link.RemoteID empty it
	// creates the object (idempotently, keyed by CreateKey, so a repeated
	// call makes no second object); otherwise it updates link.RemoteID
	// (keyed by UpdateKey for c.Version). On success the remote object holds
	// exactly c's email, name, phone and metadata.
	//
	// Errors follow the package's error kinds. An update of an object that
	// no longer exists returns an error matching ErrNotFound. Result.RemoteID
	// may be set even when err is not nil: the object was created but a
	// later step failed; store the id so the retry updates it instead of
	// relying on the create key (providers forget keys, Stripe after 24 h).
	Upsert(ctx context.Context, c Customer, link Link) (Result, error)

	// Delete removes the remote object link.RemoteID (keyed by DeleteKey).
	// With link.RemoteID empty there is nothing to delete and it returns nil;
	// an object that is already gone is deleted too (nil). Other errors
	// follow the package's error kinds. Only c.UserID is read.
	Delete(ctx context.Context, c Customer, link Link) error
}

// Customer is the provider-neutral state Tandem pushes: a user as of one
// version.
type Customer struct {
	UserID   string            // Tandem's user id (UUIDv7)
	Email    string            // empty clears the remote email
	Name     string            // empty clears the remote name
	Phone    string            // empty clears the remote phone
	Metadata map[string]string // the user's metadata; nil and empty are the same
	Version  int64             // the user's version; part of the update key
}

// Link is what Tandem knows of the remote object that mirrors one user.
type Link struct {
	// RemoteID is the provider's id of the object; empty if none has been
	// created yet.
	RemoteID string

	// MetadataKeys are the user metadata keys the remote object carries as
	// far as Tandem knows: Result.MetadataKeys of the last successful Upsert.
	// An adapter uses them to remove keys the user no longer has without
	// reading the object first. nil means unknown: the adapter then reads
	// the remote object first, which costs one more call. A stale list is
	// still correct, only dearer (the Stripe adapter removes leftover keys it
	// sees in Stripe's answer with one more call), so after applying an
	// inbound change to the metadata, store nil or the keys now held.
	MetadataKeys []string

	// Attempt is unique to this push of this user (the worker's lease
	// sequence): adapters put it in every idempotency key they send, so a
	// key the provider saved a 5xx under is never sent again. 0 outside a
	// worker.
	Attempt int64

	// Unsure reports that an earlier push of this user has an unknown
	// outcome (its answer was lost, was a 5xx, or the worker died): with
	// RemoteID empty, that push may have created an object. The adapter
	// must then look for one belonging to the user (see Finder) before
	// creating another. UnsureEmail is the email that push carried.
	Unsure      bool
	UnsureEmail string

	// Looked reports that the caller has just looked for the objects
	// belonging to the user (a Matcher's Candidates, or a listing) and
	// found none to link, so an Unsure create need not look again; its
	// idempotency key must still be unique to the attempt.
	Looked bool
}

// Finder is optional for a Provider that can look up the remote objects
// that belong to a user (tagged with its id), so that a push with an unknown
// outcome is never repeated as a second create, and a delete whose create
// was never recorded still finds what to delete. Find it on the undecorated
// provider.
type Finder interface {
	// FindTagged returns the ids of the live remote objects tagged with
	// userID, looking them up by each of emails (exact reads, not a lagging
	// search) and by the tag itself where the provider can. Errors follow
	// the package's error kinds.
	FindTagged(ctx context.Context, userID string, emails []string) ([]string, error)
}

// Result is the outcome of an Upsert.
type Result struct {
	// RemoteID is the id of the remote object now holding the customer.
	RemoteID string

	// MetadataKeys are the user metadata keys the remote object now carries,
	// sorted, never nil after a successful Upsert; store them and pass them
	// back as Link.MetadataKeys.
	MetadataKeys []string

	// Warnings describe anything the provider accepted only in part (a field
	// it has no place for), for the caller to report; nil when the remote
	// object holds exactly the customer. An adapter that cannot carry
	// something the user relies on returns a permanent error instead.
	Warnings []string

	// RemoteTime is the provider's own clock when it answered the last
	// request of the push (its HTTP Date header), zero if unknown. Inbound
	// events, dated by the same clock, are compared with it.
	RemoteTime time.Time
}

// Middleware decorates a Provider (metrics, logging). It must keep Name.
type Middleware func(Provider) Provider

// Wrap applies middlewares to p; the first one is the outermost.
func Wrap(p Provider, mws ...Middleware) Provider {
	for i := len(mws) - 1; i >= 0; i-- {
		p = mws[i](p)
	}
	return p
}
