package integrations

import (
	"context"
	"slices"
	"strings"

	"github.com/tandem-sync/tandem/internal/userfields"
)

// Lister is optional for a Provider that can list every live remote object
// it holds, in pages (Stripe: the customer list; Salesforce: a SOQL query of
// Contacts). tandemctl backfill and reconcile use it to compare or link
// thousands of users at one request per page rather than one per user. Find
// it on the undecorated provider.
type Lister interface {
	// ListRemote returns the page of live remote objects that follows
	// cursor ("" for the first page), each with ID, UserID (its tag) and
	// Customer mapped like InboundEvent.Customer, and the cursor of the
	// next page ("" after the last). One page is one provider request,
	// made at the adapter's rate limit. Errors follow the package's kinds.
	ListRemote(ctx context.Context, cursor string) (page []RemoteObject, next string, err error)
}

// Matcher is optional for a Provider that can find the live remote objects
// that may already belong to a user, so that the worker links one instead of
// creating a duplicate (link before create, see ChooseLink). Find it on the
// undecorated provider.
type Matcher interface {
	// Candidates returns, each once, the live remote objects tagged with
	// userID or holding one of emails (case-insensitive; tagged or not,
	// empty emails skipped), with ID, UserID and Customer set. Exact reads
	// only (Stripe: the customer list filtered by email). With byTag it
	// also looks the tag up where that costs a lagging or scarcer read
	// (Stripe's search, which lags writes by up to a minute and allows 20
	// reads/s): the worker asks for it only when an earlier push of the
	// user may have created an object whose email has changed since.
	// Errors follow the package's kinds.
	Candidates(ctx context.Context, userID string, emails []string, byTag bool) ([]RemoteObject, error)
}

// LinkChoice is what link before create decided for one user.
type LinkChoice struct {
	// RemoteID is the object to link and push over; "" to create one
	// (unless Conflict is set).
	RemoteID string
	// Tagged reports that RemoteID carries the user's tag already (it
	// was made by Tandem for this user), rather than being matched by
	// email.
	Tagged bool
	// Conflict lists the candidates when there are several: create
	// nothing, mark the link conflict and name them.
	Conflict []string
}

// ChooseLink applies the rule of link before create to the candidates of a
// user (what a Matcher or a listing found): the single object tagged with
// userID; else, with byEmail, the single untagged object holding email
// (case-insensitive, as users' emails are unique); else nothing, and a new
// object is made. Several tagged objects, or several untagged ones with the
// email, are a conflict: Tandem does not guess. Objects tagged with another
// user belong to that user and are never chosen.
func ChooseLink(userID, email string, byEmail bool, candidates []RemoteObject) LinkChoice {
	var tagged, byMail []string
	for _, c := range candidates {
		switch {
		case c.ID == "":
		case c.UserID == userID:
			tagged = appendOnce(tagged, c.ID)
		case c.UserID == "" && byEmail && SameEmail(c.Customer.Email, email):
			byMail = appendOnce(byMail, c.ID)
		}
	}
	switch {
	case len(tagged) == 1:
		return LinkChoice{RemoteID: tagged[0], Tagged: true}
	case len(tagged) > 1:
		return LinkChoice{Conflict: sorted(tagged)}
	case len(byMail) == 1:
		return LinkChoice{RemoteID: byMail[0]}
	case len(byMail) > 1:
		return LinkChoice{Conflict: sorted(byMail)}
	}
	return LinkChoice{}
}

// ConflictMessage is the link's last_error for a conflict of link before
// create.
func (c LinkChoice) ConflictMessage(provider string) string {
	return "link before create: several " + provider + " objects may be this user's (" + strings.Join(c.Conflict, ", ") +
		"); delete or retag the extra ones, then resync the user"
}

// SameEmail reports whether a and b are the same address as the users'
// unique key compares them (ASCII letters case-insensitively); two empty
// emails are not the same.
func SameEmail(a, b string) bool {
	return a != "" && b != "" && userfields.EmailKey(a) == userfields.EmailKey(b)
}

func appendOnce(ids []string, id string) []string {
	if slices.Contains(ids, id) {
		return ids
	}
	return append(ids, id)
}

func sorted(ids []string) []string {
	slices.Sort(ids)
	return ids
}
