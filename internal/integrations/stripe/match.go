package stripe

import (
	"context"
	"fmt"
	"strings"

	stripego "github.com/stripe/stripe-go/v76"
	"golang.org/x/time/rate"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// SearchRate is how many search requests per second the adapter allows
// itself: Stripe's search allows 20 reads/s per account, within the global
// limit.
const SearchRate = 20

var _ integrations.Matcher = (*Adapter)(nil)

// Candidates returns the live customers that may be userID's, for link
// before create: those Stripe's customer list finds by each of emails (an
// exact read, as opposed to the search, which lags writes by up to a
// minute), tagged or not, and, with byTag, those Stripe's search finds by
// metadata['tandem_user_id'].
//
// Stripe's email filter is case-sensitive, so each email is looked up as
// given and, if that differs, in lower case: a customer whose email differs
// from both only in case is not found here (tandemctl backfill compares a
// whole listing case-insensitively).
//
// The search covers what the idempotency key cannot: Stripe forgets a key
// after 24 hours, so a create replayed later (a dead letter moved back, a
// long outage) would make a second customer unless the first is found; and
// a customer whose email was changed since its create is found by its tag
// only. The worker asks for it only after a push with an unknown outcome.
func (a *Adapter) Candidates(ctx context.Context, userID string, emails []string, byTag bool) ([]integrations.RemoteObject, error) {
	var out []integrations.RemoteObject
	seen := map[string]bool{}
	add := func(cust *stripego.Customer) {
		if cust == nil || cust.Deleted || seen[cust.ID] {
			return
		}
		seen[cust.ID] = true
		out = append(out, remoteOf(cust))
	}
	looked := map[string]bool{}
	for _, email := range emails {
		for _, e := range []string{email, strings.ToLower(email)} {
			if e == "" || looked[e] {
				continue
			}
			looked[e] = true
			if err := a.limiter.wait(ctx); err != nil {
				return nil, err
			}
			p := &stripego.CustomerListParams{Email: stripego.String(e)}
			p.Context = ctx
			p.Limit = stripego.Int64(100)
			p.Single = true
			it := a.customers.List(p)
			for it.Next() {
				add(it.Customer())
			}
			if err := it.Err(); err != nil {
				return nil, fmt.Errorf("stripe: listing customers with the email of user %s: %w", userID, a.classify(err))
			}
		}
	}
	if byTag {
		if err := a.search.Wait(ctx); err != nil {
			return nil, err
		}
		if err := a.limiter.wait(ctx); err != nil {
			return nil, err
		}
		p := &stripego.CustomerSearchParams{}
		p.Query = fmt.Sprintf("metadata['%s']:'%s'", MetadataUserIDKey, quote(userID))
		p.Context = ctx
		p.Limit = stripego.Int64(100)
		p.Single = true
		it := a.customers.Search(p)
		for it.Next() {
			add(it.Customer())
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("stripe: searching customers tagged with user %s: %w", userID, a.classify(err))
		}
	}
	return out, nil
}

// remoteOf maps a customer as the webhook maps one.
func remoteOf(cust *stripego.Customer) integrations.RemoteObject {
	c := CustomerFrom(cust)
	tag := c.UserID
	c.UserID = ""
	return integrations.RemoteObject{ID: cust.ID, UserID: tag, Customer: c}
}

// quote escapes a value for a single-quoted string of Stripe's search query
// language.
func quote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}

func newSearchLimiter() *rate.Limiter { return rate.NewLimiter(SearchRate, 1) }
