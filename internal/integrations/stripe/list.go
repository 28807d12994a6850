package stripe

import (
	"context"
	"fmt"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// ListPageSize is how many customers one ListRemote request reads:
// Stripe's largest page.
const ListPageSize = 100

var _ integrations.Lister = (*Adapter)(nil)

// ListRemote reads one page of Stripe's customer list (newest first, 100
// customers, after the customer id cursor): one request, at the adapter's
// rate limit. Each customer is mapped as the webhook maps it
// (CustomerFrom, without Tandem's reserved metadata keys), with its id and
// its metadata.tandem_user_id as UserID; the metadata is always carried.
// next is the id to continue after, "" after the last page. A cursor
// naming a customer Stripe does not know is a permanent error. Errors
// follow the contract's kinds.
func (a *Adapter) ListRemote(ctx context.Context, cursor string) ([]integrations.RemoteObject, string, error) {
	if err := a.limiter.wait(ctx); err != nil {
		return nil, "", err
	}
	p := &stripego.CustomerListParams{}
	p.Context = ctx
	p.Limit = stripego.Int64(ListPageSize)
	p.Single = true
	if cursor != "" {
		p.StartingAfter = stripego.String(cursor)
	}
	it := a.customers.List(p)
	var (
		page []integrations.RemoteObject
		last string
	)
	for it.Next() {
		cust := it.Customer()
		last = cust.ID
		if cust.Deleted {
			continue
		}
		c, userID := inboundCustomer(cust)
		page = append(page, integrations.RemoteObject{ID: cust.ID, UserID: userID, Customer: c})
	}
	if err := it.Err(); err != nil {
		return nil, "", fmt.Errorf("stripe: listing customers after %q: %w", cursor, a.classify(err))
	}
	if l := it.CustomerList(); l != nil && l.HasMore && last != "" {
		return page, last, nil
	}
	return page, "", nil
}
