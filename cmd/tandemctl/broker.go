package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/tandem-sync/tandem/internal/broker"
)

// broker connects to RabbitMQ once (waiting up to 15 s for it) and returns
// the connection and a confirming publisher, closed by run afterwards. It
// declares nothing: the api and the workers own the topology.
func (e *env) broker(ctx context.Context) (*broker.Conn, *broker.Publisher, error) {
	if e.conn != nil {
		return e.conn, e.pub, nil
	}
	conn, err := broker.Dial(ctx, e.cfg.AMQPURL, e.log, broker.Options{Name: "tandemctl"})
	if err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := conn.WaitReady(wctx); err != nil {
		conn.Close()
		return nil, nil, err
	}
	pub := broker.NewPublisher(conn, broker.PublisherOptions{RetryTiers: e.cfg.RetryTiers})
	e.conn, e.pub = conn, pub
	e.closers = append(e.closers, func() { conn.Close() }, func() { pub.Close() })
	return conn, pub, nil
}

// providerName checks that name is a provider of this deployment
// (TANDEM_PROVIDERS) without building its adapter (no secrets needed).
func (e *env) providerName(name string) (string, error) {
	if name == "" {
		return "", usagef("-provider is required (enabled: %s)", strings.Join(e.cfg.Providers, ", "))
	}
	if !slices.Contains(e.cfg.Providers, name) {
		return "", usagef("provider %q is not enabled (TANDEM_PROVIDERS: %s)", name, strings.Join(e.cfg.Providers, ", "))
	}
	return name, nil
}
