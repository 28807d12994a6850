package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// deadLetter puts a message on provider's dead-letter queue as a worker
// would.
func deadLetter(t *testing.T, ch *amqp.Channel, provider, id, cause string) {
	t.Helper()
	pub, err := message(id).Publishing()
	require.NoError(t, err)
	pub.Headers = amqp.Table{broker.HeaderError: cause, broker.HeaderAttempt: int32(10), broker.HeaderProvider: provider}
	require.NoError(t, ch.PublishWithContext(context.Background(), "", broker.DeadQueue(provider), true, false, pub))
}

// drain takes every message of queue and returns their ids (acking them).
func drain(t *testing.T, ch *amqp.Channel, queue string) ([]string, []amqp.Delivery) {
	t.Helper()
	var ids []string
	var ds []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		if !ok {
			return ids, ds
		}
		ids = append(ids, d.MessageId)
		ds = append(ds, d)
	}
}

// A replay stopped between a message's confirm on the work queue and its
// ack off the dead-letter queue (as a kill there would) loses nothing: the
// message is in both, and the next replay moves the rest.
func TestDeadLetterReplayStoppedHalfWay(t *testing.T) {
	t.Parallel()
	amqpURL := testutil.NewVhost(t)
	conn := dial(t, amqpURL, []string{"stripe"}, nil)
	require.NoError(t, conn.WaitReady(context.Background()))
	pub := broker.NewPublisher(conn, broker.PublisherOptions{})
	t.Cleanup(func() { pub.Close() })
	ch := channel(t, amqpURL)
	ctx := context.Background()
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("m%d", i)
		ids = append(ids, id)
		deadLetter(t, ch, "stripe", id, "400: email invalid")
	}
	require.Eventually(t, func() bool { return messages(t, ch, broker.DeadQueue("stripe")) == 6 }, 10*time.Second, 10*time.Millisecond)

	dlq := broker.DeadLetters{Conn: conn, Pub: pub, Provider: "stripe"}
	list, depth, err := dlq.List(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, 6, depth)
	require.Len(t, list, 4)
	require.Equal(t, "m0", list[0].MessageID)
	require.Equal(t, "u-m0", list[0].UserID)
	require.Equal(t, "400: email invalid", list[0].Error)
	require.Equal(t, 10, list[0].Attempts)
	require.Eventually(t, func() bool { return messages(t, ch, broker.DeadQueue("stripe")) == 6 }, 10*time.Second, 10*time.Millisecond,
		"listing took messages away")

	stop := errors.New("killed")
	moved, halfway := 0, ""
	dlq.AfterPublish = func(dl broker.DeadLetter) error {
		moved++
		if moved == 3 {
			halfway = dl.MessageID
			return stop
		}
		return nil
	}
	n, err := dlq.Replay(ctx, "")
	require.ErrorIs(t, err, stop)
	require.Equal(t, 2, n)
	require.Eventually(t, func() bool { return messages(t, ch, broker.DeadQueue("stripe")) == 4 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 3, messages(t, ch, broker.WorkQueue("stripe")), "confirmed on the work queue: two moved and the one stopped half-way")

	dlq.AfterPublish = nil
	n, err = dlq.Replay(ctx, "")
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.Equal(t, 0, messages(t, ch, broker.DeadQueue("stripe")))
	got, ds := drain(t, ch, broker.WorkQueue("stripe"))
	require.ElementsMatch(t, append(ids, halfway), got, "every dead letter is back, the one stopped half-way twice")
	for _, d := range ds {
		require.NotContains(t, d.Headers, broker.HeaderError)
		require.NotContains(t, d.Headers, broker.HeaderAttempt, "a replayed message starts a fresh retry budget")
		require.EqualValues(t, 1, d.Headers[broker.HeaderReplayed])
	}
}

// -id replays or purges one message; an id that is not there is an error
// and moves nothing; purge without -id empties the queue.
func TestDeadLetterByIDAndPurge(t *testing.T) {
	t.Parallel()
	amqpURL := testutil.NewVhost(t)
	conn := dial(t, amqpURL, []string{"stripe"}, nil)
	require.NoError(t, conn.WaitReady(context.Background()))
	pub := broker.NewPublisher(conn, broker.PublisherOptions{})
	t.Cleanup(func() { pub.Close() })
	ch := channel(t, amqpURL)
	ctx := context.Background()
	for i := range 4 {
		deadLetter(t, ch, "stripe", fmt.Sprintf("m%d", i), "boom")
	}
	require.Eventually(t, func() bool { return messages(t, ch, broker.DeadQueue("stripe")) == 4 }, 10*time.Second, 10*time.Millisecond)
	dlq := broker.DeadLetters{Conn: conn, Pub: pub, Provider: "stripe"}

	_, err := dlq.Replay(ctx, "nope")
	require.ErrorIs(t, err, broker.ErrNoDeadLetter)
	_, err = dlq.Purge(ctx, "nope")
	require.ErrorIs(t, err, broker.ErrNoDeadLetter)
	require.Eventually(t, func() bool { return messages(t, ch, broker.DeadQueue("stripe")) == 4 }, 10*time.Second, 10*time.Millisecond)

	n, err := dlq.Replay(ctx, "m2")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = dlq.Purge(ctx, "m1")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got, _ := drain(t, ch, broker.WorkQueue("stripe"))
	require.Equal(t, []string{"m2"}, got)
	require.Eventually(t, func() bool { return messages(t, ch, broker.DeadQueue("stripe")) == 2 }, 10*time.Second, 10*time.Millisecond)

	q, err := broker.InspectQueues(conn, "stripe")
	require.NoError(t, err)
	require.Equal(t, 2, q.Dead.Messages)
	require.Equal(t, 0, q.Work.Messages)
	require.Len(t, q.Retry, len(broker.RetryTiers))
	q, err = broker.InspectQueues(conn, "nosuch")
	require.NoError(t, err)
	require.True(t, q.Work.Missing)

	n, err = dlq.Purge(ctx, "")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, 0, messages(t, ch, broker.DeadQueue("stripe")))
}
