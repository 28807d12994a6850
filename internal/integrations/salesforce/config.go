package salesforce

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/tandem-sync/tandem/internal/config"
)

// DefaultAPIVersion is SALESFORCE_API_VERSION's default.
const DefaultAPIVersion = "v60.0"

// MinWebhookSecretLen is the shortest SALESFORCE_WEBHOOK_SECRET accepted:
// the secret is the only thing that tells a forged Outbound Message from
// Salesforce's.
const MinWebhookSecretLen = 16

// Config is the adapter's configuration, read from the SALESFORCE_ settings
// (DESIGN §2). The worker needs only the outbound fields; the webhook also
// needs Inbound, which only CheckWebhookConfig validates.
type Config struct {
	// InstanceURL is the org's My Domain URL
	// (https://MyDomainName.my.salesforce.com), the base of REST API
	// calls. SALESFORCE_INSTANCE_URL; required.
	InstanceURL string

	// TokenURL is the OAuth 2.0 token endpoint of the client credentials
	// flow (https://MyDomainName.my.salesforce.com/services/oauth2/token).
	// SALESFORCE_TOKEN_URL; required.
	TokenURL string

	// ClientID and ClientSecret are the connected app's consumer key and
	// secret; the app's "run as" user is the integration user.
	// SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET; required.
	ClientID, ClientSecret string

	// APIVersion is the REST API version in request paths ("v60.0").
	// SALESFORCE_API_VERSION; default DefaultAPIVersion.
	APIVersion string

	// MetadataField is the API name of a Long Text Area custom field on
	// Contact (e.g. Tandem_Metadata__c) that holds the user's metadata as a
	// JSON object. SALESFORCE_METADATA_FIELD; optional: empty means
	// contacts carry no metadata (see the package documentation).
	MetadataField string

	// Inbound is what the webhook route needs (the Outbound Message
	// secret, org and integration user). Validate does not check it: the
	// worker starts without it; CheckWebhookConfig does. Its MetadataField
	// is ignored: MetadataField applies to both sides.
	Inbound InboundConfig
}

var (
	apiVersionShape  = regexp.MustCompile(`^v[0-9]{2,3}\.0$`)
	customFieldShape = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*__c$`)
	orgIDShape       = regexp.MustCompile(`^00D[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$`)
	userIDShape      = regexp.MustCompile(`^005[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$`)
)

// ConfigFrom reads the adapter's settings (config.Config.ProviderSettings
// ("salesforce")) and validates the outbound ones. Every error is one line
// naming the variables at fault. The inbound settings are read into Inbound
// but not validated: the worker starts without them, and the webhook checks
// them with CheckWebhookConfig.
func ConfigFrom(s config.Settings) (Config, error) {
	c := Config{
		InstanceURL:   s.String("instance_url"),
		TokenURL:      s.String("token_url"),
		ClientID:      s.String("client_id"),
		ClientSecret:  s.String("client_secret"),
		APIVersion:    s.String("api_version"),
		MetadataField: s.String("metadata_field"),
		Inbound: InboundConfig{
			WebhookSecret:     s.String("webhook_secret"),
			OrgID:             s.String("org_id"),
			IntegrationUserID: s.String("integration_user_id"),
		},
	}
	if c.APIVersion == "" {
		c.APIVersion = DefaultAPIVersion
	}
	return c, c.Validate()
}

// Validate reports missing required fields (all of them, in one line), or
// else the first invalid field, naming its variable.
func (c Config) Validate() error {
	var missing []string
	for _, f := range []struct{ v, name string }{
		{c.InstanceURL, "SALESFORCE_INSTANCE_URL"},
		{c.TokenURL, "SALESFORCE_TOKEN_URL"},
		{c.ClientID, "SALESFORCE_CLIENT_ID"},
		{c.ClientSecret, "SALESFORCE_CLIENT_SECRET"},
	} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if err := missingError(missing); err != nil {
		return err
	}
	if err := checkURL("SALESFORCE_INSTANCE_URL", c.InstanceURL, "https://MyDomainName.my.salesforce.com"); err != nil {
		return err
	}
	if err := checkURL("SALESFORCE_TOKEN_URL", c.TokenURL, "https://MyDomainName.my.salesforce.com/services/oauth2/token"); err != nil {
		return err
	}
	if !apiVersionShape.MatchString(c.APIVersion) {
		return fmt.Errorf("config: SALESFORCE_API_VERSION %q: want a REST API version such as %s", c.APIVersion, DefaultAPIVersion)
	}
	return checkMetadataField(c.MetadataField)
}

func checkMetadataField(f string) error {
	if f == "" {
		return nil
	}
	if !customFieldShape.MatchString(f) || strings.EqualFold(f, ExternalIDField) {
		return fmt.Errorf("config: SALESFORCE_METADATA_FIELD %q: want the API name of a Long Text Area custom field such as Tandem_Metadata__c (not %s)", f, ExternalIDField)
	}
	return nil
}

func missingError(missing []string) error {
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("config: %s is required", missing[0])
	default:
		return fmt.Errorf("config: %s and %s are required", strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1])
	}
}

func checkURL(name, v, example string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("config: %s %q: want an absolute http(s) URL such as %s", name, config.RedactURL(v), example)
	}
	return nil
}

// InboundConfig is what the inbound side (the webhook route receiving
// Outbound Messages) needs. The worker never reads it.
type InboundConfig struct {
	// WebhookSecret is the shared secret the Outbound Message endpoint URL
	// carries as ?token=<secret> (Salesforce signs nothing; see CheckToken).
	// SALESFORCE_WEBHOOK_SECRET; required, at least MinWebhookSecretLen
	// characters.
	WebhookSecret string

	// OrgID is the organization whose messages are accepted (15 or 18
	// characters, "00D…"). SALESFORCE_ORG_ID; required.
	OrgID string

	// IntegrationUserID is the connected app's "run as" user (15 or 18
	// characters, "005…"): a notification whose LastModifiedById is this
	// user is the echo of Tandem's own write (see IsEcho).
	// SALESFORCE_INTEGRATION_USER_ID; required.
	IntegrationUserID string

	// MetadataField is Config.MetadataField, for CustomerFrom.
	// SALESFORCE_METADATA_FIELD; optional.
	MetadataField string
}

// InboundConfigFrom reads and validates the inbound settings. Every error is
// one line naming the variables at fault.
func InboundConfigFrom(s config.Settings) (InboundConfig, error) {
	c := InboundConfig{
		WebhookSecret:     s.String("webhook_secret"),
		OrgID:             s.String("org_id"),
		IntegrationUserID: s.String("integration_user_id"),
		MetadataField:     s.String("metadata_field"),
	}
	return c, c.Validate()
}

// Validate reports missing required fields (all of them, in one line), or
// else the first invalid field, naming its variable.
func (c InboundConfig) Validate() error {
	var missing []string
	for _, f := range []struct{ v, name string }{
		{c.WebhookSecret, "SALESFORCE_WEBHOOK_SECRET"},
		{c.OrgID, "SALESFORCE_ORG_ID"},
		{c.IntegrationUserID, "SALESFORCE_INTEGRATION_USER_ID"},
	} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if err := missingError(missing); err != nil {
		return err
	}
	if len(c.WebhookSecret) < MinWebhookSecretLen {
		return fmt.Errorf("config: SALESFORCE_WEBHOOK_SECRET: want at least %d characters (a random string; it is the ?token= of the Outbound Message URL)", MinWebhookSecretLen)
	}
	if !orgIDShape.MatchString(c.OrgID) {
		return fmt.Errorf("config: SALESFORCE_ORG_ID %q: want a 15- or 18-character organization id starting with 00D", c.OrgID)
	}
	if !userIDShape.MatchString(c.IntegrationUserID) {
		return fmt.Errorf("config: SALESFORCE_INTEGRATION_USER_ID %q: want a 15- or 18-character user id starting with 005", c.IntegrationUserID)
	}
	return checkMetadataField(c.MetadataField)
}

// CheckToken reports, in constant time, whether token (the ?token= query
// parameter of a request) is WebhookSecret. It is false when WebhookSecret
// is empty. Both are hashed before they are compared, so the time taken
// does not reveal the secret's length either.
func (c InboundConfig) CheckToken(token string) bool {
	if c.WebhookSecret == "" {
		return false
	}
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(c.WebhookSecret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// FromOrg reports whether m was sent by the organization OrgID.
func (c InboundConfig) FromOrg(m OutboundMessage) bool { return SameID(m.OrganizationID, c.OrgID) }

// IsEcho reports whether n is the echo of a change Tandem made through the
// API: its LastModifiedById is the integration user.
func (c InboundConfig) IsEcho(n Notification) bool {
	return SameID(n.LastModifiedByID, c.IntegrationUserID)
}

// errNoUserID is the permanent error of an upsert without a user id.
var errNoUserID = errors.New("salesforce: upsert of a contact without a user id")
