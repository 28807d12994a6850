// Package salesforcefake is a stateful, in-process fake of the parts of
// Salesforce that Tandem uses: the OAuth 2.0 client credentials token
// endpoint, the REST API's Contact resource addressed by record id and by the
// external id field Tandem_User_Id__c, and Outbound Messages (SOAP
// notifications sent to a listener when a contact changes).
//
// It speaks the real wire protocol: form-encoded token requests answered with
// Salesforce's token JSON ({access_token, instance_url, id, token_type,
// issued_at, signature}) or OAuth errors ({error, error_description}); JSON
// record bodies; errors as a JSON array of {message, errorCode, fields};
// 300 Multiple Choices with an array of record URLs; the Sforce-Limit-Info
// response header; SOAP 1.1 notifications envelopes acknowledged with
// <notificationsResponse><Ack>true</Ack></notificationsResponse>.
//
// Besides the API it offers:
//
//   - inspection of everything that happened (Requests, with the
//     Sforce-Call-Options header of each; Contacts; Stats; Deliveries);
//   - token control: RevokeTokens invalidates every issued access token, so
//     the next API call gets 401 INVALID_SESSION_ID;
//   - fault injection switchable at run time (SetFaults: a share of requests
//     answered 403 REQUEST_LIMIT_EXCEEDED, 500 or 503, added latency) and a
//     real daily limit (Options.APILimit, SetAPIUsage);
//   - DuplicateExternalID, which makes a user's external id match two
//     contacts, so upserts get 300;
//   - changes made by a person in the Salesforce UI (UICreate, UIUpdate,
//     UIDelete), which carry LastModifiedById = Options.UIUserID, while
//     changes made through the API carry Options.IntegrationUserID: that is
//     how a listener recognises the echo of its own writes;
//   - Outbound Message delivery of every contact change to a listener URL
//     (with an optional ?token= secret), batched up to 100 notifications per
//     message, optionally duplicated, retried with backoff until the
//     listener acknowledges, and WaitDelivered to wait for it.
//
// Starting it in a test:
//
//	fake := salesforcefake.New(salesforcefake.Options{OutboundURL: listener.URL})
//	t.Cleanup(fake.Close)
//	base, err := fake.Listen("127.0.0.1:0")
//	require.NoError(t, err)
//	// instance URL: base; token URL: fake.TokenURL();
//	// client id and secret: salesforcefake.DefaultClientID, DefaultClientSecret.
//
// It also answers SOQL queries of Contacts (GET …/query?q= and
// …/queryAll?q=, paged with nextRecordsUrl; see query.go for the part of
// SOQL understood), which listing and matching need.
//
// Only the token endpoint, /services/data/vXX.X/sobjects/Contact/... and
// the query resources exist; everything else answers 404 NOT_FOUND like an
// unknown resource.
package salesforcefake
