package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	neturl "net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/config"
)

// ErrNotConnected is returned (wrapped, with the last connection error when
// there is one) while the Conn has no open connection to RabbitMQ.
var ErrNotConnected = errors.New("broker: not connected to RabbitMQ")

// ErrConnClosed is returned (wrapped) after Conn.Close.
var ErrConnClosed = errors.New("broker: connection manager closed")

// Options tune Dial. The zero value works.
type Options struct {
	// Setup runs on a fresh channel after every (re)connect, before the
	// connection is reported ready; typically a call to DeclareTopology. If it
	// fails, the connection is closed and tried again after a backoff.
	Setup func(ch *amqp.Channel) error
	// Name is the connection name shown by RabbitMQ's management UI and the
	// connection label of the metrics (default "tandem").
	Name string
	// MinBackoff and MaxBackoff bound the delay between connection attempts
	// (defaults 100ms and 2s); the delay doubles after each failure, with
	// jitter (a random half of it), so after an outage of any length the
	// broker is found again within MaxBackoff without replicas reconnecting
	// in lockstep. A topology mismatch waits MaxBackoff at once.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds the TCP connect and the AMQP handshake (default 10s).
	DialTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval (default 10s); a broker that
	// stops answering is noticed within about two of them.
	Heartbeat time.Duration
	// Registerer receives tandem_amqp_reconnects_total and
	// tandem_amqp_connected, labelled connection=Name (nil: not registered).
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	if o.Name == "" {
		o.Name = "tandem"
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 10 * time.Second
	}
}

// Conn keeps one connection to RabbitMQ open: it reconnects with exponential
// backoff and jitter whenever the connection drops (it watches
// Connection.NotifyClose; amqp091-go's experimental automatic recovery is not
// used) and runs Options.Setup after each connect. It is safe for concurrent
// use.
//
// Channels opened with Channel die with their connection; users watch their
// channel's NotifyClose (or just check IsClosed) and open a new one, waiting
// with WaitReady if needed. Publisher does this for you.
type Conn struct {
	url    string
	target string // host:port/vhost, for messages (no credentials)
	config amqp.Config
	logger *slog.Logger
	opts   Options

	reconnects prometheus.Counter
	connected  prometheus.Gauge

	mu      sync.Mutex
	conn    *amqp.Connection // nil while down
	lastErr error
	changed chan struct{} // closed and replaced on every state change
	closed  bool

	stop chan struct{}
	done chan struct{}
}

// Dial starts a connection manager for url. It makes the first connection
// attempt before returning (bounded by ctx and Options.DialTimeout) but does
// not fail when RabbitMQ is unreachable: the manager keeps trying in the
// background, Ready reports false meanwhile, and WaitReady waits. This lets
// the api accept writes while the broker is down (they wait in the outbox).
//
// Dial returns an error only for an invalid url (naming TANDEM_AMQP_URL) or
// a metrics registration conflict. Close the Conn when done.
func Dial(ctx context.Context, url string, logger *slog.Logger, opts Options) (*Conn, error) {
	uri, err := amqp.ParseURI(url)
	if err != nil {
		return nil, fmt.Errorf("broker: TANDEM_AMQP_URL %q: %s", config.RedactURL(url), uriProblem(err))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts.setDefaults()
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(opts.Name)
	c := &Conn{
		url:    url,
		target: uri.Host + ":" + strconv.Itoa(uri.Port) + "/" + uri.Vhost,
		config: amqp.Config{
			Heartbeat:  opts.Heartbeat,
			Properties: props,
			Dial:       amqp.DefaultDial(opts.DialTimeout),
		},
		opts:    opts,
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "tandem_amqp_reconnects_total",
			Help:        "Connections to RabbitMQ re-established after being lost.",
			ConstLabels: prometheus.Labels{"connection": opts.Name},
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "tandem_amqp_connected",
			Help:        "1 while the connection to RabbitMQ is open and set up, else 0.",
			ConstLabels: prometheus.Labels{"connection": opts.Name},
		}),
	}
	c.logger = logger.With("amqp_target", c.target, "connection", opts.Name)
	if opts.Registerer != nil {
		c.reconnects, err = registerCollector(opts.Registerer, c.reconnects)
		if err != nil {
			return nil, err
		}
		c.connected, err = registerCollector(opts.Registerer, c.connected)
		if err != nil {
			return nil, err
		}
	}
	first := make(chan struct{})
	go c.run(first)
	select {
	case <-first:
	case <-ctx.Done():
	}
	return c, nil
}

// uriProblem describes why amqp.ParseURI refused a URL without quoting
// it: net/url's errors carry the whole URL, password included, and an
// escape error a piece of the password.
func uriProblem(err error) string {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return "not a valid URL (percent-encode reserved characters such as : @ / ? # % in the user name and password)"
	}
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return "the port is not a number"
	}
	return err.Error()
}

// registerCollector registers col, or returns the collector already
// registered under the same description.
func registerCollector[T prometheus.Collector](reg prometheus.Registerer, col T) (T, error) {
	if err := reg.Register(col); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return col, fmt.Errorf("broker: registering metrics: %w", err)
	}
	return col, nil
}

// run connects, waits for the connection to drop, and connects again, until
// Close. first is closed after the first attempt.
func (c *Conn) run(first chan struct{}) {
	defer close(c.done)
	failures := 0
	everConnected := false
	for {
		conn, err := c.connect()
		if err != nil {
			failures++
			c.setDown(err)
			if first != nil {
				close(first)
				first = nil
			}
			delay := c.backoff(failures)
			if errors.Is(err, ErrTopologyMismatch) {
				// An operator must act; retry slowly so the fix is picked up
				// without a restart, and stay unready meanwhile.
				delay = c.opts.MaxBackoff
				c.logger.Error("RabbitMQ topology differs from Tandem's; staying unready", "error", err, "retry_in", delay)
			} else {
				c.logger.Warn("connecting to RabbitMQ failed", "error", err, "attempt", failures, "retry_in", delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-c.stop:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}

		failures = 0
		closes := conn.NotifyClose(make(chan *amqp.Error, 1))
		if everConnected {
			c.reconnects.Inc()
			c.logger.Info("reconnected to RabbitMQ")
		} else {
			c.logger.Info("connected to RabbitMQ")
		}
		everConnected = true
		c.setUp(conn)
		if first != nil {
			close(first)
			first = nil
		}

		select {
		case <-c.stop:
			_ = conn.Close()
			c.setDown(ErrConnClosed)
			return
		case amqpErr, ok := <-closes:
			lost := errors.New("connection closed")
			if ok && amqpErr != nil {
				lost = amqpErr
			}
			c.setDown(fmt.Errorf("broker: connection to %s lost: %w", c.target, lost))
			c.logger.Warn("connection to RabbitMQ lost; reconnecting", "error", lost)
			// Reconnect at once; failures from here on back off.
		}
	}
}

// connect dials and runs Setup on a temporary channel.
func (c *Conn) connect() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(c.url, c.config)
	if err != nil {
		return nil, fmt.Errorf("broker: connecting to %s: %w", c.target, err)
	}
	if c.opts.Setup == nil {
		return conn, nil
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("broker: opening setup channel on %s: %w", c.target, err)
	}
	if err := c.opts.Setup(ch); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("broker: setting up %s: %w", c.target, err)
	}
	// A failed Setup may have closed the channel already; Close on a closed
	// channel only reports that.
	_ = ch.Close()
	return conn, nil
}

// backoff is the delay before attempt n+1 after n consecutive failures:
// MinBackoff·2^(n-1), capped at MaxBackoff, with "equal jitter" (half fixed,
// half random) so replicas don't reconnect in lockstep.
func (c *Conn) backoff(failures int) time.Duration {
	return Backoff(failures, c.opts.MinBackoff, c.opts.MaxBackoff)
}

// Backoff returns the delay after n consecutive failures (n ≥ 1):
// min·2^(n-1) capped at max, of which a random half is jitter.
func Backoff(n int, minDelay, maxDelay time.Duration) time.Duration {
	d := minDelay
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	if d > maxDelay {
		d = maxDelay
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func (c *Conn) setUp(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	c.lastErr = nil
	c.connected.Set(1)
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Conn) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = nil
	c.lastErr = err
	c.connected.Set(0)
	close(c.changed)
	c.changed = make(chan struct{})
}

// notConnected builds the error for "no connection now".
func (c *Conn) notConnectedLocked() error {
	if c.closed {
		return ErrConnClosed
	}
	if c.lastErr != nil {
		return fmt.Errorf("%w: %w", ErrNotConnected, c.lastErr)
	}
	return ErrNotConnected
}

// Ready reports whether the connection is open and set up.
func (c *Conn) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil && !c.conn.IsClosed()
}

// Healthy returns nil while the connection is open and set up, else an
// error wrapping ErrNotConnected and the last connection error (for example
// ErrTopologyMismatch), or ErrConnClosed. It does no I/O; ctx is for the
// readiness-check signature.
func (c *Conn) Healthy(_ context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	return c.notConnectedLocked()
}

// WaitReady waits until the connection is open and set up. It returns early
// with the error when the last attempt failed with ErrTopologyMismatch
// (waiting won't help until an operator acts), ErrConnClosed after Close,
// and ctx's error (with the last connection error) when ctx ends first.
func (c *Conn) WaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		if c.conn != nil && !c.conn.IsClosed() {
			c.mu.Unlock()
			return nil
		}
		if c.closed || errors.Is(c.lastErr, ErrTopologyMismatch) {
			err := c.notConnectedLocked()
			c.mu.Unlock()
			return err
		}
		changed, lastErr := c.changed, c.lastErr
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("broker: waiting for RabbitMQ: %w (last error: %w)", ctx.Err(), lastErr)
			}
			return fmt.Errorf("broker: waiting for RabbitMQ: %w", ctx.Err())
		case <-changed:
		}
	}
}

// Channel opens a new channel on the current connection. It returns an error
// wrapping ErrNotConnected while there is none (or it drops meanwhile), or
// ErrConnClosed after Close. The caller closes the channel.
func (c *Conn) Channel() (*amqp.Channel, error) {
	c.mu.Lock()
	conn := c.conn
	if conn == nil {
		err := c.notConnectedLocked()
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: opening channel: %w", ErrNotConnected, err)
	}
	return ch, nil
}

// Close stops reconnecting and closes the connection (and so every channel
// opened on it). It waits for a connection attempt in progress (at most
// Options.DialTimeout). It is idempotent and returns nil.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	return nil
}
