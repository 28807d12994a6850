package salesforce_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
)

func settings(kv map[string]string) config.Settings { return config.NewSettings("salesforce", kv) }

var outboundSettings = map[string]string{
	"instance_url":  "https://acme.my.salesforce.com",
	"token_url":     "https://acme.my.salesforce.com/services/oauth2/token",
	"client_id":     " 3MVGid ",
	"client_secret": "secret",
}

func TestConfigFrom(t *testing.T) {
	t.Parallel()
	cfg, err := salesforce.ConfigFrom(settings(outboundSettings))
	require.NoError(t, err, "the inbound settings are not needed")
	require.Equal(t, salesforce.Config{
		InstanceURL: "https://acme.my.salesforce.com", TokenURL: "https://acme.my.salesforce.com/services/oauth2/token",
		ClientID: "3MVGid", ClientSecret: "secret", APIVersion: "v60.0",
	}, cfg)

	_, err = salesforce.ConfigFrom(settings(map[string]string{"client_id": "x"}))
	require.EqualError(t, err, "config: SALESFORCE_INSTANCE_URL, SALESFORCE_TOKEN_URL and SALESFORCE_CLIENT_SECRET are required")
	_, err = salesforce.ConfigFrom(settings(map[string]string{"instance_url": "https://x", "token_url": "https://x/t", "client_id": "x"}))
	require.EqualError(t, err, "config: SALESFORCE_CLIENT_SECRET is required")

	for _, tc := range []struct{ key, value, want string }{
		{"instance_url", "acme.my.salesforce.com", `config: SALESFORCE_INSTANCE_URL "acme.my.salesforce.com": want an absolute http(s) URL`},
		{"token_url", "/services/oauth2/token", "config: SALESFORCE_TOKEN_URL"},
		{"api_version", "60", `config: SALESFORCE_API_VERSION "60": want a REST API version such as v60.0`},
		{"metadata_field", "Tandem_Metadata", "config: SALESFORCE_METADATA_FIELD"},
		{"metadata_field", "Tandem_User_Id__c", "config: SALESFORCE_METADATA_FIELD"},
	} {
		kv := map[string]string{tc.key: tc.value}
		for k, v := range outboundSettings {
			if k != tc.key {
				kv[k] = v
			}
		}
		_, err := salesforce.ConfigFrom(settings(kv))
		require.ErrorContains(t, err, tc.want, tc.key)
	}

	kv := map[string]string{"api_version": "v61.0", "metadata_field": "Tandem_Metadata__c"}
	for k, v := range outboundSettings {
		kv[k] = v
	}
	cfg, err = salesforce.ConfigFrom(settings(kv))
	require.NoError(t, err)
	require.Equal(t, "v61.0", cfg.APIVersion)
	require.Equal(t, "Tandem_Metadata__c", cfg.MetadataField)

	_, err = salesforce.New(salesforce.Config{}, salesforce.Options{})
	require.ErrorContains(t, err, "SALESFORCE_INSTANCE_URL", "New validates")
}

func TestInboundConfigFrom(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		"webhook_secret":      "0123456789abcdef",
		"org_id":              "00D5g00000TndmQ",
		"integration_user_id": "0055g00000TndmIAAR",
	}
	cfg, err := salesforce.InboundConfigFrom(settings(ok))
	require.NoError(t, err, "the outbound settings are not needed")
	require.Equal(t, "00D5g00000TndmQ", cfg.OrgID)

	_, err = salesforce.InboundConfigFrom(settings(nil))
	require.EqualError(t, err, "config: SALESFORCE_WEBHOOK_SECRET, SALESFORCE_ORG_ID and SALESFORCE_INTEGRATION_USER_ID are required")
	for _, tc := range []struct{ key, value, want string }{
		{"webhook_secret", "short", "config: SALESFORCE_WEBHOOK_SECRET: want at least 16 characters"},
		{"org_id", "0015g00000TndmQ", `config: SALESFORCE_ORG_ID "0015g00000TndmQ"`},
		{"integration_user_id", "005x", `config: SALESFORCE_INTEGRATION_USER_ID "005x"`},
	} {
		kv := map[string]string{tc.key: tc.value}
		for k, v := range ok {
			if k != tc.key {
				kv[k] = v
			}
		}
		_, err := salesforce.InboundConfigFrom(settings(kv))
		require.ErrorContains(t, err, tc.want, tc.key)
		require.NotContains(t, err.Error(), "short", "the secret is not echoed")
	}

	require.True(t, cfg.CheckToken("0123456789abcdef"))
	require.False(t, cfg.CheckToken("0123456789abcdeF"))
	require.False(t, cfg.CheckToken(""))
	require.False(t, salesforce.InboundConfig{}.CheckToken(""), "no secret accepts nothing")

	require.True(t, cfg.FromOrg(salesforce.OutboundMessage{OrganizationID: "00D5g00000TndmQEAR"}), "15 and 18 characters")
	require.False(t, cfg.FromOrg(salesforce.OutboundMessage{OrganizationID: "00D5g00000TndmXEAR"}))
	require.True(t, cfg.IsEcho(salesforce.Notification{LastModifiedByID: "0055g00000TndmI"}))
	require.False(t, cfg.IsEcho(salesforce.Notification{LastModifiedByID: "0055g00000TndmUAAR"}))
	require.False(t, cfg.IsEcho(salesforce.Notification{}))
}

// TestBadURLDoesNotPrintItsPassword: a refused Salesforce URL is shown
// without the credentials it may carry.
func TestBadURLDoesNotPrintItsPassword(t *testing.T) {
	t.Parallel()
	kv := map[string]string{}
	for k, v := range outboundSettings {
		kv[k] = v
	}
	kv["token_url"] = "ftp://user:s3cret@login.example/services/oauth2/token"
	_, err := salesforce.ConfigFrom(settings(kv))
	require.ErrorContains(t, err, "SALESFORCE_TOKEN_URL")
	require.NotContains(t, err.Error(), "s3cret")
}
