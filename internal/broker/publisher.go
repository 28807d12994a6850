package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Per-message publish failures (wrapped, in the slice Publish returns).
var (
	// ErrReturned: the broker returned the message as unroutable
	// (basic.return of a mandatory publish): no queue is bound, for
	// example, so nobody would ever get it.
	ErrReturned = errors.New("broker: message returned unroutable")
	// ErrNacked: the broker refused the message (basic.nack), for example a
	// queue in reject-publish overflow.
	ErrNacked = errors.New("broker: message nacked")
	// ErrConfirmTimeout: no confirm arrived within ConfirmTimeout.
	ErrConfirmTimeout = errors.New("broker: timed out waiting for publisher confirms")
	// ErrChannelClosed: the channel or connection closed before the
	// message was confirmed; the broker may or may not have it.
	ErrChannelClosed = errors.New("broker: channel closed before confirm")
)

// MaxBatch is the most messages Publish sends before waiting for confirms;
// longer slices are sent in chunks of MaxBatch.
const MaxBatch = 1024

// PublisherOptions tune NewPublisher. The zero value works.
type PublisherOptions struct {
	// ConfirmTimeout bounds the wait for one batch's confirms (default 10s).
	// A batch that times out is reported failed and its channel discarded.
	ConfirmTimeout time.Duration
	// RetryTiers are the delays PublishRetry chooses from (default
	// RetryTiers); they must be the tiers the topology was declared with.
	RetryTiers []time.Duration
}

// Publisher publishes with publisher confirms and mandatory=true on
// channels of a Conn. It is safe for concurrent use: each call in flight
// uses a confirm channel of its own (kept for reuse, replaced when it
// dies), so concurrent batches overlap instead of queueing.
type Publisher struct {
	conn *Conn
	opts PublisherOptions

	mu     sync.Mutex
	idle   []*confirmChannel
	closed bool
}

// confirmChannel is a channel in confirm mode with its listeners; one batch
// uses it at a time.
type confirmChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
}

// NewPublisher returns a Publisher on conn. It opens channels lazily, on
// the first publish.
func NewPublisher(conn *Conn, opts PublisherOptions) *Publisher {
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = 10 * time.Second
	}
	return &Publisher{conn: conn, opts: opts}
}

// Publish publishes msgs to the Exchange (fanout to every provider's work
// queue) and waits for all their confirms. failed has one entry per message:
// nil when the broker confirmed it (routed to every bound queue and, the
// queues being durable and the messages persistent, stored), else an error
// wrapping ErrReturned, ErrNacked, ErrConfirmTimeout, ErrChannelClosed or
// ErrNotConnected. err is nil exactly when every message was confirmed;
// otherwise it is the first failure, with context.
func (p *Publisher) Publish(ctx context.Context, msgs []Message) (failed []error, err error) {
	pubs := make([]amqp.Publishing, len(msgs))
	for i, m := range msgs {
		if pubs[i], err = m.Publishing(); err != nil {
			return fill(len(msgs), err), err
		}
	}
	return p.PublishTo(ctx, Exchange, "", pubs)
}

// PublishTo publishes pubs to exchange with routing key key, mandatory, and
// waits for their confirms, MaxBatch at a time. Returned messages are matched
// to pubs by MessageId, so give each a distinct one. Results as for Publish.
func (p *Publisher) PublishTo(ctx context.Context, exchange, key string, pubs []amqp.Publishing) (failed []error, err error) {
	failed = make([]error, len(pubs))
	for start := 0; start < len(pubs); start += MaxBatch {
		end := min(start+MaxBatch, len(pubs))
		p.publishBatch(ctx, exchange, key, pubs[start:end], failed[start:end])
	}
	for _, e := range failed {
		if e != nil {
			return failed, fmt.Errorf("publishing to exchange %q: %w", exchange, e)
		}
	}
	return failed, nil
}

// publishBatch publishes at most MaxBatch messages and fills failed.
func (p *Publisher) publishBatch(ctx context.Context, exchange, key string, pubs []amqp.Publishing, failed []error) {
	cc, err := p.take()
	if err != nil {
		copy(failed, fill(len(pubs), err))
		return
	}
	healthy := cc.publish(ctx, exchange, key, pubs, failed, p.opts.ConfirmTimeout)
	p.give(cc, healthy)
}

// publish runs one batch on cc and reports whether cc is still usable.
func (cc *confirmChannel) publish(ctx context.Context, exchange, key string, pubs []amqp.Publishing, failed []error, timeout time.Duration) (healthy bool) {
	healthy = true
	dcs := make([]*amqp.DeferredConfirmation, len(pubs))
	for i := range pubs {
		dc, err := cc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, pubs[i])
		if err != nil {
			if ctx.Err() == nil {
				err = cc.closedErr(err)
			}
			for j := i; j < len(pubs); j++ {
				failed[j] = fmt.Errorf("publishing message %s: %w", pubs[j].MessageId, err)
			}
			healthy = false
			break
		}
		dcs[i] = dc
	}

	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i, dc := range dcs {
		if dc == nil {
			continue
		}
		var err error
		select {
		case <-dc.Done():
		case <-wctx.Done():
			// Prefer a confirm that arrived meanwhile over the timeout.
			select {
			case <-dc.Done():
			default:
				err = wctx.Err()
			}
		}
		switch {
		case err != nil:
			// Confirms may still come for this channel: never reuse it.
			healthy = false
			if ctx.Err() == nil {
				err = fmt.Errorf("%w (%s)", ErrConfirmTimeout, timeout)
			}
			failed[i] = fmt.Errorf("message %s: %w", pubs[i].MessageId, err)
		case !dc.Acked():
			// A channel that closed nacks everything still pending.
			if cc.ch.IsClosed() {
				healthy = false
				failed[i] = fmt.Errorf("message %s: %w", pubs[i].MessageId, cc.closedErr(nil))
			} else {
				failed[i] = fmt.Errorf("message %s: %w", pubs[i].MessageId, ErrNacked)
			}
		}
	}

	// RabbitMQ sends basic.return before the basic.ack of the same message,
	// and amqp091-go delivers both from one reader goroutine: the return is
	// in cc.returns (buffered for a whole batch) before its confirm completes.
	cc.drainReturns(pubs, failed)
	return healthy
}

// drainReturns marks the returned messages of the batch just confirmed.
func (cc *confirmChannel) drainReturns(pubs []amqp.Publishing, failed []error) {
	for {
		select {
		case r, ok := <-cc.returns:
			if !ok {
				return
			}
			err := fmt.Errorf("%w: %d %s (exchange %q, routing key %q)", ErrReturned, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
			matched := false
			for i := range pubs {
				if r.MessageId != "" && pubs[i].MessageId == r.MessageId {
					failed[i] = fmt.Errorf("message %s: %w", pubs[i].MessageId, err)
					matched = true
				}
			}
			if !matched {
				// Cannot tell which one came back: fail every message without an id.
				for i := range pubs {
					if pubs[i].MessageId == "" {
						failed[i] = err
					}
				}
			}
		default:
			return
		}
	}
}

// closedErr explains why the channel is unusable.
func (cc *confirmChannel) closedErr(cause error) error {
	select {
	case e, ok := <-cc.closes:
		if ok && e != nil {
			return fmt.Errorf("%w: %w", ErrChannelClosed, e)
		}
	default:
	}
	if cause != nil {
		return fmt.Errorf("%w: %w", ErrChannelClosed, cause)
	}
	return ErrChannelClosed
}

// take returns an idle open confirm channel, or opens one.
func (p *Publisher) take() (*confirmChannel, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("broker: publisher closed: %w", ErrConnClosed)
	}
	for len(p.idle) > 0 {
		cc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !cc.ch.IsClosed() {
			p.mu.Unlock()
			return cc, nil
		}
	}
	p.mu.Unlock()

	ch, err := p.conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: enabling publisher confirms: %w", ErrNotConnected, err)
	}
	return &confirmChannel{
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, MaxBatch)),
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

// give returns cc for reuse, or closes it when it is unhealthy or the
// publisher is closed.
func (p *Publisher) give(cc *confirmChannel, healthy bool) {
	p.mu.Lock()
	if healthy && !p.closed && !cc.ch.IsClosed() {
		p.idle = append(p.idle, cc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = cc.ch.Close()
}

// Close closes the publisher's idle channels (not the Conn); a batch in
// flight keeps its channel until it completes, then closes it. Later
// publishes fail with ErrConnClosed. It returns nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, cc := range idle {
		_ = cc.ch.Close()
	}
	return nil
}

// PublishRetry schedules a delivery taken from provider's work queue for
// another attempt: it republishes body and properties to the delay queue of
// the next tier (RetryQueue(provider, RetryTier(attempt))), with
// x-tandem-attempt = attempt, x-tandem-error = cause and
// x-tandem-provider = provider, and waits for the confirm. attempt is the
// failed attempt count including this one: Attempt(d)+1. When the delay
// expires RabbitMQ moves the message back to WorkQueue(provider). Ack d only
// after PublishRetry returns nil. It returns the delay chosen; errors as for
// Publish.
func (p *Publisher) PublishRetry(ctx context.Context, provider string, d amqp.Delivery, attempt int, cause string) (time.Duration, error) {
	tier := RetryTier(attempt, p.opts.RetryTiers...)
	pub := republish(d, provider, cause)
	pub.Headers[HeaderAttempt] = int32(attempt)
	if _, err := p.PublishTo(ctx, "", RetryQueue(provider, tier), []amqp.Publishing{pub}); err != nil {
		return tier, fmt.Errorf("scheduling retry of message %s in %s: %w", d.MessageId, RetryQueue(provider, tier), err)
	}
	return tier, nil
}

// PublishDelay puts a delivery taken from provider's work queue back after
// at least wait, without counting an attempt (x-tandem-attempt is kept): for
// waits that are nobody's failure (the provider asked to slow down, another
// worker is pushing the user). It uses the shortest retry tier not shorter
// than wait; a wait longer than every tier also sets x-tandem-not-before,
// and the worker sends the message round again until then (NotBefore). It
// returns the tier used. Ack d only after it returns nil.
func (p *Publisher) PublishDelay(ctx context.Context, provider string, d amqp.Delivery, wait time.Duration, cause string) (time.Duration, error) {
	tiers := p.opts.RetryTiers
	if len(tiers) == 0 {
		tiers = RetryTiers
	}
	tier := tiers[len(tiers)-1]
	for _, t := range tiers {
		if t >= wait {
			tier = t
			break
		}
	}
	pub := republish(d, provider, cause)
	delete(pub.Headers, HeaderNotBefore)
	if wait > tier {
		pub.Headers[HeaderNotBefore] = time.Now().Add(wait).UnixMilli()
	}
	if _, err := p.PublishTo(ctx, "", RetryQueue(provider, tier), []amqp.Publishing{pub}); err != nil {
		return tier, fmt.Errorf("delaying message %s in %s: %w", d.MessageId, RetryQueue(provider, tier), err)
	}
	return tier, nil
}

// PublishDead moves a delivery taken from provider's work queue to
// DeadQueue(provider) with x-tandem-error = cause and x-tandem-provider =
// provider (x-tandem-attempt is kept), and waits for the confirm. Ack d only
// after it returns nil. Errors as for Publish.
func (p *Publisher) PublishDead(ctx context.Context, provider string, d amqp.Delivery, cause string) error {
	pub := republish(d, provider, cause)
	if _, err := p.PublishTo(ctx, "", DeadQueue(provider), []amqp.Publishing{pub}); err != nil {
		return fmt.Errorf("dead-lettering message %s to %s: %w", d.MessageId, DeadQueue(provider), err)
	}
	return nil
}

// maxErrorHeader bounds x-tandem-error (headers share one AMQP frame).
const maxErrorHeader = 4096

func republish(d amqp.Delivery, provider, cause string) amqp.Publishing {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	if len(cause) > maxErrorHeader {
		cause = strings.ToValidUTF8(cause[:maxErrorHeader], "")
	}
	headers[HeaderError] = cause
	headers[HeaderProvider] = provider
	mode := d.DeliveryMode
	if mode == 0 {
		mode = amqp.Persistent
	}
	return amqp.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    mode,
		CorrelationId:   d.CorrelationId,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

func fill(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}
