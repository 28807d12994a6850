// Package broker is Tandem's RabbitMQ layer: the topology every process
// declares, the message format, a connection manager that survives broker
// outages, and a publisher with confirms.
//
// # Topology (contract: DESIGN §5, §6)
//
// DeclareTopology declares, for each enabled provider P:
//
//	tandem.users            durable fanout exchange; the outbox relay publishes here
//	tandem.sync.P           quorum queue bound to tandem.users; P's workers consume it.
//	                        Rejected messages, and messages handed back more than
//	                        DeliveryLimit times, are dead-lettered (at least once) to
//	                        tandem.dead.P through the default exchange.
//	tandem.retry.P.<tier>   delay queues, one per RetryTiers entry (1s, 10s, 1m, 10m):
//	                        quorum queues with x-message-ttl that dead-letter (at least
//	                        once) back to tandem.sync.P through the default exchange,
//	                        so a retry for P never reaches another provider
//	tandem.dead.P           quorum queue holding dead letters for an operator
//
// Both cmd/api and cmd/worker declare it after every (re)connect (through
// Options.Setup); declaring is idempotent. A queue that exists with other
// arguments makes DeclareTopology fail with ErrTopologyMismatch, naming the
// queue and what to do; the Conn then stays unready and retries slowly
// rather than crash.
//
// # Retries and dead letters (for the worker)
//
// A worker consumes tandem.sync.P with manual acks and, for each delivery:
//
//   - success: record the outcome in MySQL, then Ack;
//   - transient failure (network, 429, 5xx) and Attempt(d)+1 < max attempts
//     (TANDEM_MAX_ATTEMPTS): Publisher.PublishRetry(ctx, P, d, Attempt(d)+1,
//     err.Error()), then Ack. The copy waits in tandem.retry.P.<RetryTier(n)>
//     and comes back to tandem.sync.P carrying x-tandem-attempt = n and
//     x-tandem-error = the last error;
//   - permanent failure, invalid message (Decode returns ErrInvalidMessage),
//     or attempts exhausted: Publisher.PublishDead(ctx, P, d, err.Error()),
//     then Ack. The dead letter carries x-tandem-error;
//   - shutdown mid-message: Nack with requeue (it counts towards
//     DeliveryLimit).
//
// Ack only after the retry or dead-letter publish was confirmed: a crash in
// between duplicates the message, never loses it. If publishing the retry
// itself fails, Nack with requeue.
//
// # Connections and publishing
//
// Dial returns a Conn that keeps one AMQP connection open, reconnecting with
// backoff and jitter and re-running Options.Setup each time; Ready and
// Healthy serve /readyz. A Publisher publishes batches on confirm channels
// of a Conn with mandatory=true and waits for every confirm: a message
// counts as published only when RabbitMQ acked it and did not return it as
// unroutable.
package broker
