package stripe

import (
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// CustomerFrom maps a Stripe customer (from a webhook event or a read) to the
// provider-neutral Customer the adapter would push to produce it: UserID from
// metadata.tandem_user_id ("" if absent), Email, Name, Phone, and the
// metadata without tandem_user_id. Version is left 0. Its Hash equals the
// pushed-state hash of the Upsert that left the customer this way, which is
// how the webhook recognises the echo of Tandem's own push.
func CustomerFrom(cust *stripego.Customer) integrations.Customer {
	c := integrations.Customer{
		UserID: cust.Metadata[MetadataUserIDKey],
		Email:  cust.Email,
		Name:   cust.Name,
		Phone:  cust.Phone,
	}
	for k, v := range cust.Metadata {
		if k == MetadataUserIDKey {
			continue
		}
		if c.Metadata == nil {
			c.Metadata = make(map[string]string, len(cust.Metadata))
		}
		c.Metadata[k] = v
	}
	return c
}
