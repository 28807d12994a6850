package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
)

// opsCtl runs tandemctl against the test's database and vhost.
type opsCtl struct {
	t       *testing.T
	environ []string
}

func (c opsCtl) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, c.environ, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func (c opsCtl) json(v any, args ...string) {
	c.t.Helper()
	code, out, errs := c.run(append([]string{args[0], "-json"}, args[1:]...)...)
	require.Equal(c.t, exitOK, code, "tandemctl %v: %s", args, errs)
	require.NoError(c.t, json.Unmarshal([]byte(out), v), out)
}

// status, dlq and resync against real MariaDB and RabbitMQ.
func TestStatusDLQAndResync(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	amqpURL := testutil.NewVhost(t)
	ctx := context.Background()
	// The api declares the topology; here the test does.
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, []string{"stripe"}))
	c := opsCtl{t: t, environ: []string{"TANDEM_CONFIG=", "TANDEM_MYSQL_DSN=" + dsn, "TANDEM_AMQP_URL=" + amqpURL, "TANDEM_PROVIDERS=stripe"}}

	failed, err := st.CreateUser(ctx, store.NewUser{Email: "f@example.com", Name: "F"}, nil)
	require.NoError(t, err)
	_, err = st.CreateUser(ctx, store.NewUser{Email: "p@example.com", Name: "P"}, nil)
	require.NoError(t, err)
	reason := "Stripe: invalid email"
	_ = st.SyncLocked(ctx, failed.ID, "stripe", func(context.Context, store.User, store.Link) (store.LinkUpdate, error) {
		return store.LinkUpdate{Status: store.LinkFailed, LastError: &reason}, errors.New("400")
	})
	for i := range 3 {
		m := broker.Message{EventID: fmt.Sprintf("m%d", i), Type: store.EventUserCreated, UserID: failed.ID, Version: 1,
			OccurredAt: time.Now().UTC(), Origin: "api"}
		pub, err := m.Publishing()
		require.NoError(t, err)
		pub.Headers = amqp.Table{broker.HeaderError: reason}
		require.NoError(t, ch.PublishWithContext(ctx, "", broker.DeadQueue("stripe"), true, false, pub))
	}
	dead := func() int {
		q, err := ch.QueueDeclarePassive(broker.DeadQueue("stripe"), true, false, false, false, nil)
		require.NoError(t, err)
		return q.Messages
	}
	require.Eventually(t, func() bool { return dead() == 3 }, 10*time.Second, 10*time.Millisecond)

	var s struct {
		Outbox struct {
			Backlog int64 `json:"backlog"`
		} `json:"outbox"`
		Providers []struct {
			Name  string           `json:"name"`
			Dead  int              `json:"dead"`
			Users map[string]int64 `json:"users"`
		} `json:"providers"`
		Attention []struct {
			UserID string `json:"user_id"`
			Reason string `json:"reason"`
		} `json:"attention"`
	}
	c.json(&s, "status")
	require.EqualValues(t, 2, s.Outbox.Backlog)
	require.Len(t, s.Providers, 1)
	require.Equal(t, 3, s.Providers[0].Dead)
	require.EqualValues(t, 1, s.Providers[0].Users["failed"])
	require.EqualValues(t, 1, s.Providers[0].Users["pending"])
	require.Len(t, s.Attention, 1)
	require.Equal(t, failed.ID, s.Attention[0].UserID)
	require.Equal(t, reason, s.Attention[0].Reason)
	code, out, _ := c.run("status")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "dead 3")

	var list struct {
		Depth    int                 `json:"depth"`
		Messages []broker.DeadLetter `json:"messages"`
	}
	c.json(&list, "dlq", "list", "-provider", "stripe")
	require.Equal(t, 3, list.Depth)
	require.Len(t, list.Messages, 3)
	require.Equal(t, reason, list.Messages[0].Error)

	var replayed struct {
		Replayed int `json:"replayed"`
	}
	c.json(&replayed, "dlq", "replay", "-provider", "stripe", "-id", "m1")
	require.Equal(t, 1, replayed.Replayed)
	code, _, errs := c.run("dlq", "replay", "-provider", "stripe", "-id", "nope")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "no message nope in tandem.dead.stripe")
	var purged struct {
		Purged int `json:"purged"`
	}
	c.json(&purged, "dlq", "purge", "-provider", "stripe", "-id", "m0")
	require.Equal(t, 1, purged.Purged)
	c.json(&replayed, "dlq", "-provider", "stripe", "replay")
	require.Equal(t, 1, replayed.Replayed)
	require.Equal(t, 0, dead())
	q, err := ch.QueueDeclarePassive(broker.WorkQueue("stripe"), true, false, false, false, nil)
	require.NoError(t, err)
	require.Equal(t, 2, q.Messages, "m1 and m2 are back on the work queue")

	// resync: the failed user is pending again, with a resync in its outbox.
	var rs struct {
		Queued   []string `json:"queued"`
		NotFound []string `json:"not_found"`
	}
	c.json(&rs, "resync", "-provider", "stripe", failed.ID)
	require.Equal(t, []string{failed.ID}, rs.Queued)
	links, err := st.Links(ctx, failed.ID)
	require.NoError(t, err)
	require.Equal(t, store.LinkPending, links[failed.ID][0].Status)
	require.EqualValues(t, 1, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE user_id = ? AND origin = 'resync'", failed.ID))

	// Bad usage is exit 2, something that does not exist exit 1; nothing changes.
	missing := "0193a8b0-0000-7000-8000-000000000000"
	code, _, errs = c.run("resync", "-provider", "stripe", missing)
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "no such user: "+missing)
	for _, args := range [][]string{
		{"resync", failed.ID},
		{"resync", "-provider", "nope", failed.ID},
		{"resync", "-provider", "stripe", "not-an-id"},
		{"resync", "-provider", "stripe"},
		{"dlq", "frobnicate", "-provider", "stripe"},
		{"dlq", "list"},
		{"dlq"},
		{"status", "extra"},
	} {
		code, _, errs := c.run(args...)
		require.Equal(t, exitUsage, code, "tandemctl %v: %s", args, errs)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(errs), "\n")+1, "one line: %q", errs)
	}
	require.EqualValues(t, 1, testutil.QueryInt(t, dsn, "SELECT COUNT(*) FROM outbox WHERE origin = 'resync'"))
}
