package salesforce_test

import (
	"fmt"

	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

// What a webhook route does with an Outbound Message: check the token and the
// org, parse, skip echoes, map the rest, then acknowledge the whole message.
func ExampleParseOutboundMessage() {
	in := salesforce.InboundConfig{
		WebhookSecret:     "s3cret-token-0123456789",
		OrgID:             "00D5g00000TndmQ",
		IntegrationUserID: "0055g00000TndmI",
	}
	token := "s3cret-token-0123456789" // r.URL.Query().Get("token")
	body := message(1)                 // the request body, read up to MaxMessageBytes

	if !in.CheckToken(token) {
		fmt.Println("401")
		return
	}
	msg, err := salesforce.ParseOutboundMessage(body)
	if err != nil || !in.FromOrg(msg) {
		fmt.Println("400")
		return
	}
	for _, n := range msg.Notifications {
		// De-duplicate by n.ID, and ignore changes older than the one
		// applied (n.LastModifiedDate), before applying.
		if in.IsEcho(n) {
			continue
		}
		c, err := salesforce.CustomerFrom(n, in.MetadataField)
		if err != nil {
			fmt.Println("400")
			return
		}
		fmt.Printf("apply %s to user %s: %q <%s>\n", n.ID, c.UserID, c.Name, c.Email)
	}
	fmt.Printf("200 %s\n", salesforce.AckContentType)
	// Output:
	// apply 04l5g0000000000000 to user 0190a5d2-7c3e-7b1a-9f00-000000000000: "Ada King & Lovelace" <ada0@example.com>
	// 200 text/xml; charset=utf-8
}
