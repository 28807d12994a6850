package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ContentType is the content type of every Tandem message.
const ContentType = "application/json"

// Headers Tandem sets on retried and dead-lettered messages (contract:
// DESIGN §6).
const (
	// HeaderError carries the last error of a retried or dead-lettered
	// message, as text.
	HeaderError = "x-tandem-error"
	// HeaderAttempt counts the failed attempts of a retried message (an
	// int32, 1 after the first failure); a message without it has not failed
	// yet.
	HeaderAttempt = "x-tandem-attempt"
	// HeaderProvider names the provider whose queue a retried or
	// dead-lettered message came from.
	HeaderProvider = "x-tandem-provider"
	// HeaderNotBefore (Unix milliseconds) holds a message back until then:
	// set by PublishDelay when the wait is longer than every retry tier.
	HeaderNotBefore = "x-tandem-not-before"
)

// ErrInvalidMessage is returned (wrapped) by Decode for a body that is not a
// Tandem message.
var ErrInvalidMessage = errors.New("broker: invalid message")

// Message announces one committed change to a user (contract: DESIGN §5). It
// names the change; consumers read the current row, so a reordered or
// duplicated message cannot push stale data.
type Message struct {
	EventID    string    `json:"event_id"`    // the outbox row's UUIDv7; also the AMQP message_id
	Type       string    `json:"type"`        // user.created, user.updated or user.deleted
	UserID     string    `json:"user_id"`     // the user's id
	Version    int64     `json:"version"`     // the user's version after the change
	OccurredAt time.Time `json:"occurred_at"` // when the change was made (UTC)
	Origin     string    `json:"origin"`      // who made it (api)
}

// Publishing encodes m as a persistent JSON publishing with MessageId =
// EventID, ContentType application/json and Timestamp = OccurredAt.
func (m Message) Publishing() (amqp.Publishing, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("broker: encoding message %s: %w", m.EventID, err)
	}
	return amqp.Publishing{
		ContentType:  ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    m.EventID,
		Timestamp:    m.OccurredAt,
		Type:         m.Type,
		Body:         body,
	}, nil
}

// Decode decodes a message body. It returns an error wrapping
// ErrInvalidMessage when the body is not JSON or lacks event_id, type or
// user_id; such a message can never succeed and should be dead-lettered.
func Decode(body []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	switch {
	case m.EventID == "":
		return Message{}, fmt.Errorf("%w: no event_id", ErrInvalidMessage)
	case m.Type == "":
		return Message{}, fmt.Errorf("%w: event %s: no type", ErrInvalidMessage, m.EventID)
	case m.UserID == "":
		return Message{}, fmt.Errorf("%w: event %s: no user_id", ErrInvalidMessage, m.EventID)
	}
	return m, nil
}

// Attempt returns the x-tandem-attempt header of a delivery (0 when absent
// or not an integer).
func Attempt(d amqp.Delivery) int { return intHeader(d, HeaderAttempt) }

// NotBefore returns the time HeaderNotBefore holds a delivery back until
// (zero if none).
func NotBefore(d amqp.Delivery) time.Time {
	ms := intHeader(d, HeaderNotBefore)
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

// DeliveryCount returns RabbitMQ's x-delivery-count of a delivery from a
// quorum queue: how many times it was handed back before (0 if absent).
func DeliveryCount(d amqp.Delivery) int { return intHeader(d, "x-delivery-count") }

func intHeader(d amqp.Delivery, name string) int {
	switch v := d.Headers[name].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	case int16:
		return int(v)
	case int8:
		return int(v)
	case uint8:
		return int(v)
	default:
		return 0
	}
}
