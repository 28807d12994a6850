package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// HeaderReplayed counts how many times an operator sent a dead letter back
// to its work queue (DeadLetters.Replay).
const HeaderReplayed = "x-tandem-replayed"

// ErrNoDeadLetter is returned (wrapped) by Replay and Purge when -id names
// no message of the dead-letter queue.
var ErrNoDeadLetter = errors.New("no such dead letter")

// QueueStats is what a passive declare tells of a queue.
type QueueStats struct {
	Name      string `json:"name"`
	Messages  int    `json:"messages"`  // ready (not held by a consumer)
	Consumers int    `json:"consumers"` // consumers attached
	Missing   bool   `json:"missing,omitempty"`
}

// ProviderQueues are a provider's queues at a glance.
type ProviderQueues struct {
	Work  QueueStats   `json:"work"`
	Retry []QueueStats `json:"retry"`
	Dead  QueueStats   `json:"dead"`
}

// Retrying is the number of messages waiting in the retry queues.
func (q ProviderQueues) Retrying() int {
	n := 0
	for _, r := range q.Retry {
		n += r.Messages
	}
	return n
}

// InspectQueues reads the depth and consumers of provider's work, retry
// and dead-letter queues with passive declares (no management plugin
// needed). A queue that does not exist is reported Missing.
func InspectQueues(conn *Conn, provider string, tiers ...time.Duration) (ProviderQueues, error) {
	if len(tiers) == 0 {
		tiers = RetryTiers
	}
	var out ProviderQueues
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	inspect := func(name string) (QueueStats, error) {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = conn.Channel(); err != nil {
				return QueueStats{}, err
			}
		}
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			ch = nil // closed by the broker
			return QueueStats{Name: name, Missing: true}, nil
		}
		if err != nil {
			return QueueStats{}, fmt.Errorf("broker: inspecting queue %s: %w", name, err)
		}
		return QueueStats{Name: name, Messages: q.Messages, Consumers: q.Consumers}, nil
	}
	var err error
	if out.Work, err = inspect(WorkQueue(provider)); err != nil {
		return out, err
	}
	for _, t := range tiers {
		r, err := inspect(RetryQueue(provider, t))
		if err != nil {
			return out, err
		}
		out.Retry = append(out.Retry, r)
	}
	if out.Dead, err = inspect(DeadQueue(provider)); err != nil {
		return out, err
	}
	return out, nil
}

// DeadLetter is one message of a dead-letter queue.
type DeadLetter struct {
	MessageID string    `json:"message_id"`
	UserID    string    `json:"user_id"`
	Type      string    `json:"type"`
	Version   int64     `json:"version"`
	Error     string    `json:"error"`    // x-tandem-error, or RabbitMQ's x-death reason
	Attempts  int       `json:"attempts"` // x-tandem-attempt
	Replayed  int       `json:"replayed"` // x-tandem-replayed
	Published time.Time `json:"published_at"`
}

func deadLetterOf(d amqp.Delivery) DeadLetter {
	dl := DeadLetter{MessageID: d.MessageId, Attempts: Attempt(d), Replayed: intHeader(d, HeaderReplayed), Published: d.Timestamp.UTC()}
	if m, err := Decode(d.Body); err == nil {
		dl.UserID, dl.Type, dl.Version = m.UserID, m.Type, m.Version
	} else {
		dl.Error = "not a Tandem message: " + err.Error()
	}
	if s, ok := d.Headers[HeaderError].(string); ok && s != "" {
		dl.Error = s
	} else if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if t, ok := deaths[0].(amqp.Table); ok {
			dl.Error = fmt.Sprintf("dead-lettered by RabbitMQ: %v (from %v)", t["reason"], t["queue"])
		}
	}
	return dl
}

// DeadLetters reads and moves one provider's dead letters. A Conn and a
// Publisher (whose confirms make a move safe) are all it needs.
type DeadLetters struct {
	Conn     *Conn
	Pub      *Publisher
	Provider string
	// AfterPublish, if set, is called after a message was confirmed on the
	// work queue and before it is acked off the dead-letter queue (tests
	// stop a replay there, as a kill would).
	AfterPublish func(DeadLetter) error
}

// List returns up to limit dead letters from the head of the queue, and
// the queue's depth. The messages are only looked at: they are handed back
// before List returns (a quorum queue puts them at its tail).
func (q DeadLetters) List(ctx context.Context, limit int) ([]DeadLetter, int, error) {
	ch, depth, err := q.open()
	if err != nil {
		return nil, 0, err
	}
	defer ch.Close()
	var out []DeadLetter
	var last uint64
	for len(out) < min(limit, depth) && ctx.Err() == nil {
		d, ok, err := ch.Get(DeadQueue(q.Provider), false)
		if err != nil {
			return nil, depth, fmt.Errorf("broker: reading %s: %w", DeadQueue(q.Provider), err)
		}
		if !ok {
			break
		}
		last = d.DeliveryTag
		out = append(out, deadLetterOf(d))
	}
	if err := q.handBack(ctx, ch, last, len(out)); err != nil {
		return nil, depth, err
	}
	return out, depth, ctx.Err()
}

// handBack returns the kept messages taken on ch (delivery tags up to last)
// to the dead-letter queue and waits until it holds at least kept messages
// again (a quorum queue takes returned messages back asynchronously; only
// this process takes messages off it, so the count cannot drop below).
func (q DeadLetters) handBack(ctx context.Context, ch *amqp.Channel, last uint64, kept int) error {
	if kept == 0 {
		return nil
	}
	if err := ch.Nack(last, true, true); err != nil {
		return fmt.Errorf("broker: handing messages back to %s: %w", DeadQueue(q.Provider), err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		dq, err := ch.QueueDeclarePassive(DeadQueue(q.Provider), true, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("broker: %s: %w", DeadQueue(q.Provider), err)
		}
		if dq.Messages >= kept {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker: %d messages handed back to %s are not back yet: %w", kept, DeadQueue(q.Provider), ctx.Err())
		case <-t.C:
		}
	}
}

// open opens a channel and reads the dead-letter queue's depth.
func (q DeadLetters) open() (*amqp.Channel, int, error) {
	if q.Provider == "" {
		return nil, 0, errors.New("broker: dead letters: no provider")
	}
	ch, err := q.Conn.Channel()
	if err != nil {
		return nil, 0, err
	}
	dq, err := ch.QueueDeclarePassive(DeadQueue(q.Provider), true, false, false, false, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("broker: %s: %w (is %q a provider of this deployment? its api or worker declares the queue)",
			DeadQueue(q.Provider), err, q.Provider)
	}
	return ch, dq.Messages, nil
}

// Replay moves the dead letters (only the one with message id id, if not
// "") back to the provider's work queue, and returns how many it moved.
// Each message is published with a publisher confirm before it is acked
// off the dead-letter queue, so a replay stopped anywhere (killed, the
// connection lost) loses nothing: a message not yet confirmed stays a dead
// letter; one confirmed but not yet acked is both queued and, again, a dead
// letter, and a later replay sends it a second time. Such a duplicate is
// harmless: the worker re-reads the user and skips a push the provider
// already holds. Its retry budget starts afresh (x-tandem-attempt and
// x-tandem-error are dropped; x-tandem-replayed counts the replays). Only
// the messages in the queue when Replay starts are moved, so workers
// dead-lettering meanwhile cannot keep it going.
func (q DeadLetters) Replay(ctx context.Context, id string) (int, error) {
	return q.each(ctx, id, func(d amqp.Delivery) error {
		pub := replayPublishing(d)
		if _, err := q.Pub.PublishTo(ctx, "", WorkQueue(q.Provider), []amqp.Publishing{pub}); err != nil {
			return fmt.Errorf("replaying message %s to %s: %w", d.MessageId, WorkQueue(q.Provider), err)
		}
		if q.AfterPublish != nil {
			return q.AfterPublish(deadLetterOf(d))
		}
		return nil
	})
}

// Purge drops the dead letters (only the one with message id id, if not
// "") and returns how many it dropped.
func (q DeadLetters) Purge(ctx context.Context, id string) (int, error) {
	if id == "" {
		ch, _, err := q.open()
		if err != nil {
			return 0, err
		}
		defer ch.Close()
		n, err := ch.QueuePurge(DeadQueue(q.Provider), false)
		if err != nil {
			return 0, fmt.Errorf("broker: purging %s: %w", DeadQueue(q.Provider), err)
		}
		return n, nil
	}
	return q.each(ctx, id, func(amqp.Delivery) error { return nil })
}

// each takes the messages in the queue now (those with message id id, if
// not ""), calls fn on each and acks it when fn returns nil. The others are
// handed back when it returns.
func (q DeadLetters) each(ctx context.Context, id string, fn func(amqp.Delivery) error) (int, error) {
	ch, depth, err := q.open()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	var kept int
	var lastKept uint64
	defer func() {
		// Hand back what was skipped (a message acked later is not
		// affected: Nack multiple covers only unacked tags).
		_ = q.handBack(context.WithoutCancel(ctx), ch, lastKept, kept)
	}()
	done := 0
	for seen := 0; seen < depth; seen++ {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		d, ok, err := ch.Get(DeadQueue(q.Provider), false)
		if err != nil {
			return done, fmt.Errorf("broker: reading %s: %w", DeadQueue(q.Provider), err)
		}
		if !ok {
			break
		}
		if id != "" && d.MessageId != id {
			kept, lastKept = kept+1, d.DeliveryTag
			continue // handed back at the end
		}
		if err := fn(d); err != nil {
			_ = d.Nack(false, true)
			return done, err
		}
		if err := d.Ack(false); err != nil {
			return done, fmt.Errorf("broker: acking message %s off %s: %w", d.MessageId, DeadQueue(q.Provider), err)
		}
		done++
		if id != "" {
			return done, nil
		}
	}
	if id != "" {
		return 0, fmt.Errorf("%w: no message %s in %s", ErrNoDeadLetter, id, DeadQueue(q.Provider))
	}
	return done, nil
}

// replayPublishing is d as sent back to its work queue.
func replayPublishing(d amqp.Delivery) amqp.Publishing {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	delete(headers, HeaderError)
	delete(headers, HeaderAttempt)
	delete(headers, HeaderNotBefore)
	headers[HeaderReplayed] = int32(intHeader(d, HeaderReplayed) + 1)
	mode := d.DeliveryMode
	if mode == 0 {
		mode = amqp.Persistent
	}
	return amqp.Publishing{Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: mode, CorrelationId: d.CorrelationId, MessageId: d.MessageId, Timestamp: d.Timestamp,
		Type: d.Type, AppId: d.AppId, Body: d.Body}
}
