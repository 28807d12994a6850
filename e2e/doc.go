// Package e2e tests Tandem the way a user runs it: the real api, webhook and
// worker binaries as separate processes, each suite with its own MariaDB
// database, RabbitMQ vhost and free ports, talking to the local Stripe
// sandbox (package sandbox, served in the test process so a test can inject
// faults, change webhook delivery and read the sandbox's state). The load is
// driven through the REST API over HTTP, and dashboard edits through the
// sandbox's /_sandbox/ JSON API, as a person would.
//
// TestMain builds cmd/api, cmd/webhook and cmd/worker once into a temporary
// directory (without -race; the test package itself runs under -race with
// `make test`). Processes get short retry tiers (TANDEM_RETRY_TIERS=50ms,200ms,1s)
// and reach RabbitMQ through a tcpproxy, so a test can cut every broker
// connection at once ("the broker restarted") without touching the shared
// server.
//
// After every scenario the suite waits, with a deadline, for the system to
// converge: every live user has exactly one live Stripe customer holding its
// email, name, phone and metadata; deleted users have a deleted customer or
// none; the sandbox holds no customer Tandem does not know; each live user's
// sync.stripe (GET /v1/users/{id}) is synced at the user's version; the
// outbox, the work and retry queues and the webhook deliveries are drained
// and nothing was dead-lettered. It then checks the system stays at that
// fixed point: no Stripe request, event, webhook delivery, inbound event or
// version bump over a quiet window. When something does not converge the
// failure lists, per user, the MySQL state next to the sandbox's, and every
// process's warnings and last log lines (the whole logs are written to
// $TMPDIR/tandem-e2e-<test>-<process>.log).
//
// The scenarios are those of issue 7 (1,000 mixed writes at concurrency 32;
// the broker restarted mid-load; a worker SIGKILLed and restarted; two
// workers for one provider; 30 % 429 and 10 % 500 from Stripe; webhooks
// duplicated and shuffled; dashboard edits racing local PATCHes), combined
// into three runs and reported as named subtests.
//
// Knobs: -short skips the package; TANDEM_E2E_SEED replays a run's random
// choices (the seed is logged). MariaDB, RabbitMQ and its management API are
// found as package testutil documents.
package e2e
