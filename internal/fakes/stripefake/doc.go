// Package stripefake is a stateful, in-process fake of the Stripe Customers
// API and of Stripe's webhook delivery. It speaks the real wire protocol
// (form-encoded requests, Stripe-shaped JSON objects and errors, the
// Idempotency-Key contract, signed webhook events), so the official
// github.com/stripe/stripe-go/v76 client works against it unchanged once its
// backend URL points at the fake.
//
// It is meant for tests and for a local sandbox. Besides the API it offers:
//
//   - inspection of everything that happened (Requests, Customers, Events,
//     Deliveries, Stats), so a test can assert "exactly one customer was
//     created for user X";
//   - fault injection switchable at run time (SetFaults: a share of requests
//     answered 429 or 500, added latency; SetRateLimit: a hard token-bucket
//     limit that counts how often it was exceeded);
//   - changes made "in the dashboard" (DashboardCreate, DashboardUpdate,
//     DashboardDelete) that bypass the API and emit events without an
//     idempotency key, as real dashboard edits do;
//   - changes that send no event at all (SilentCreate, SilentUpdate,
//     SilentDelete): an account's history from before Tandem, and drift no
//     webhook reported;
//   - customer search (GET /v1/customers/search) by email and metadata,
//     with an optional index lag (SetSearchLag), besides the customer
//     list's own email filter and pagination;
//   - webhook delivery with retries, duplicates, reordering, pausing and a
//     way to wait until every event has been delivered (WaitDelivered).
//
// Starting it in a test:
//
//	fake := stripefake.New(stripefake.Options{
//		WebhookURL:    receiver.URL,
//		WebhookSecret: "whsec_test",
//		RetryBackoff:  10 * time.Millisecond,
//	})
//	t.Cleanup(fake.Close)
//	url, err := fake.Listen("127.0.0.1:0")
//	require.NoError(t, err)
//	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
//		URL:               stripe.String(url),
//		MaxNetworkRetries: stripe.Int64(0),
//	})
//	sc := client.New(stripefake.DefaultAPIKey, &stripe.Backends{API: backend, Connect: backend, Uploads: backend})
//
// Only the customer and event endpoints exist; everything else answers 404
// like an unknown Stripe URL.
package stripefake
