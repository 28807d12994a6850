package broker

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Exchange is the durable fanout exchange every user change is published to
// (contract: DESIGN §5).
const Exchange = "tandem.users"

// DeliveryLimit is the x-delivery-limit of every work queue: a message handed
// back to its queue this many times (a worker crashed or shut down while
// holding it, or it was nacked with requeue) is dead-lettered to
// tandem.dead.<provider> by RabbitMQ itself. It guards against poison
// messages that kill workers; ordinary retries go through the delay queues
// and are counted by the worker (TANDEM_MAX_ATTEMPTS). It is a constant, not
// a setting: the api and every worker declare the same queues and RabbitMQ
// refuses a declaration whose arguments differ.
const DeliveryLimit = 20

// RetryTiers are the default delays of the retry queues, shortest first
// (TANDEM_RETRY_TIERS overrides them; the api and every worker of a
// deployment must use the same tiers, since they are queue arguments). A
// message retried for the nth time waits RetryTier(n).
var RetryTiers = []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}

// ErrTopologyMismatch is returned (wrapped) by DeclareTopology when an
// exchange or queue already exists with other settings than Tandem's
// (RabbitMQ's PRECONDITION_FAILED, 406). Redeclaring cannot fix it: an
// operator must move the queue's messages and delete it, or use another vhost.
var ErrTopologyMismatch = errors.New("broker: existing RabbitMQ topology differs from Tandem's")

// WorkQueue is the quorum queue a provider's workers consume:
// tandem.sync.<provider>.
func WorkQueue(provider string) string { return "tandem.sync." + provider }

// DeadQueue is a provider's dead-letter queue: tandem.dead.<provider>.
func DeadQueue(provider string) string { return "tandem.dead." + provider }

// RetryQueue is a provider's delay queue for one tier:
// tandem.retry.<provider>.<tier>, the tier named by its duration (1s, 10s,
// 1m, 10m).
func RetryQueue(provider string, tier time.Duration) string {
	return "tandem.retry." + provider + "." + TierName(tier)
}

// TierName names a delay: whole hours, minutes or seconds as 2h, 10m, 30s,
// anything else in milliseconds (1500ms).
func TierName(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d >= time.Minute && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d >= time.Second && d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	default:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
}

// RetryTier is the delay before the given retry (1 for the first retry): the
// tiers in order, then the longest one again. With no tiers given it uses
// RetryTiers.
func RetryTier(retry int, tiers ...time.Duration) time.Duration {
	if len(tiers) == 0 {
		tiers = RetryTiers
	}
	switch {
	case retry < 1:
		return tiers[0]
	case retry > len(tiers):
		return tiers[len(tiers)-1]
	default:
		return tiers[retry-1]
	}
}

// WorkQueueArgs are the arguments of tandem.sync.<provider>: a quorum queue
// whose rejected (and delivery-limit exceeded) messages are dead-lettered,
// at least once, to tandem.dead.<provider> through the default exchange.
// At-least-once dead-lettering needs x-overflow reject-publish.
func WorkQueueArgs(provider string) amqp.Table {
	return amqp.Table{
		"x-queue-type":              "quorum",
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": DeadQueue(provider),
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
		"x-delivery-limit":          int32(DeliveryLimit),
	}
}

// RetryQueueArgs are the arguments of a delay queue: messages expire after
// tier and are dead-lettered, at least once, back to the provider's work queue
// through the default exchange (so a retry reaches that provider only, never
// the other providers bound to the fanout exchange).
func RetryQueueArgs(provider string, tier time.Duration) amqp.Table {
	return amqp.Table{
		"x-queue-type":              "quorum",
		"x-message-ttl":             int32(tier.Milliseconds()),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": WorkQueue(provider),
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
	}
}

// DeadQueueArgs are the arguments of tandem.dead.<provider>: a plain quorum
// queue that keeps dead letters until an operator looks at them.
func DeadQueueArgs() amqp.Table { return amqp.Table{"x-queue-type": "quorum"} }

// DeclareTopology declares, idempotently, the exchange and every provider's
// work, retry and dead-letter queues, and binds each work queue to the
// exchange. cmd/api and cmd/worker both call it (through Options.Setup) after
// every (re)connect.
//
// When an exchange or queue exists with other settings it returns an error
// wrapping ErrTopologyMismatch that names the entity and says what to do; the
// channel is closed by RabbitMQ then. Other errors (connection lost, access
// refused) are returned wrapped with the entity's name.
//
// tiers are the retry delays (RetryTiers when none are given).
func DeclareTopology(ch *amqp.Channel, providers []string, tiers ...time.Duration) error {
	if len(tiers) == 0 {
		tiers = RetryTiers
	}
	if err := ch.ExchangeDeclare(Exchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return declareError("exchange", Exchange, "a durable fanout exchange", err)
	}
	for _, p := range providers {
		if p == "" {
			return errors.New("broker: declaring topology: empty provider name")
		}
		if err := declareQueue(ch, DeadQueue(p), DeadQueueArgs(), "a durable quorum queue"); err != nil {
			return err
		}
		if err := declareQueue(ch, WorkQueue(p), WorkQueueArgs(p),
			"a durable quorum queue dead-lettering (at-least-once, x-overflow reject-publish, x-delivery-limit "+
				strconv.Itoa(DeliveryLimit)+") to "+DeadQueue(p)); err != nil {
			return err
		}
		for _, tier := range tiers {
			if err := declareQueue(ch, RetryQueue(p, tier), RetryQueueArgs(p, tier),
				"a durable quorum queue with x-message-ttl "+strconv.FormatInt(tier.Milliseconds(), 10)+
					" dead-lettering to "+WorkQueue(p)); err != nil {
				return err
			}
		}
		if err := ch.QueueBind(WorkQueue(p), "", Exchange, false, nil); err != nil {
			return fmt.Errorf("broker: binding queue %s to exchange %s: %w", WorkQueue(p), Exchange, err)
		}
	}
	return nil
}

func declareQueue(ch *amqp.Channel, name string, args amqp.Table, want string) error {
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return declareError("queue", name, want, err)
	}
	return nil
}

func declareError(kind, name, want string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		howto := "rabbitmqctl delete_queue " + name + " -p <vhost>"
		if kind == "exchange" {
			howto = "rabbitmqadmin -V <vhost> delete exchange name=" + name
		}
		return fmt.Errorf("%w: %s %s exists with other settings; Tandem needs %s. "+
			"Move its messages elsewhere if you need them (for example with a shovel), delete it "+
			"(%s, or the management UI) and Tandem re-creates it on its next attempt, "+
			"or point TANDEM_AMQP_URL at another vhost: %w",
			ErrTopologyMismatch, kind, name, want, howto, err)
	}
	return fmt.Errorf("broker: declaring %s %s: %w", kind, name, err)
}
