package stripefake

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/tandem-sync/tandem/internal/httpclient"
)

// DeliveryOrder chooses the order in which queued webhook deliveries are sent.
type DeliveryOrder int

const (
	// OrderPerCustomer sends the events of one customer one at a time, in
	// the order they happened (a failing delivery holds back the later
	// events of that customer until it succeeds or is abandoned); different
	// customers are served concurrently.
	OrderPerCustomer DeliveryOrder = iota
	// OrderShuffled sends one delivery at a time, picked at random (from
	// the Options.Seed generator) among those ready. Pause, make changes,
	// then resume to have a whole batch arrive shuffled.
	OrderShuffled
	// OrderReversed sends one delivery at a time, newest ready first: the
	// most reliable way to make a customer.updated arrive before its
	// customer.created (pause, change, resume).
	OrderReversed
)

// maxConcurrentDeliveries bounds deliveries in flight in OrderPerCustomer.
const maxConcurrentDeliveries = 16

// DeliveryAttempt is one attempt to deliver one copy of one event.
type DeliveryAttempt struct {
	EventID    string
	EventType  string
	CustomerID string
	Copy       int // 0 for the original, 1.. for Options.DuplicateDeliveries copies
	Attempt    int // 1 for the first try
	Time       time.Time
	StatusCode int    // 0 when no response arrived
	Err        string // transport error, if any
	OK         bool   // the endpoint answered 2xx
}

// DeliveryStats summarises webhook delivery.
type DeliveryStats struct {
	Queued         int // deliveries queued: events times (1 + DuplicateDeliveries)
	Pending        int // queued deliveries not yet delivered nor abandoned
	Attempts       int // delivery attempts made
	Delivered      int // deliveries the endpoint accepted with a 2xx
	FailedAttempts int // attempts answered non-2xx or not answered
	Abandoned      int // deliveries that used up Options.DeliveryAttempts
	Dropped        int // events never queued for delivery (SetDropDeliveries)
}

type delivery struct {
	seq       uint64
	eventID   string
	eventType string
	lane      string // the customer id: the unit of ordering
	payload   []byte
	copy      int
	attempts  int
	notBefore time.Time
	inFlight  bool
}

// deliverer queues events and posts them to the webhook endpoint.
type deliverer struct {
	log         *slog.Logger
	client      *http.Client
	signClock   func() time.Time
	onDelivered func(eventID string)
	attemptsMax int
	backoff     time.Duration
	maxBackoff  time.Duration
	timeout     time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	mu         sync.Mutex
	url        string
	secret     string
	order      DeliveryOrder
	duplicates int
	drop       float64 // share of events never delivered (SetDropDeliveries)
	paused     bool
	rng        *rand.Rand
	seq        uint64
	pending    []*delivery
	inFlight   int
	idle       chan struct{} // closed while nothing is pending
	stats      DeliveryStats
	attempts   []DeliveryAttempt
	maxRecords int // bound of attempts (0: none)
}

func newDeliverer(opts Options, onDelivered func(string)) *deliverer {
	d := &deliverer{
		log:         opts.Logger,
		client:      opts.HTTPClient,
		signClock:   opts.SignatureClock,
		onDelivered: onDelivered,
		attemptsMax: opts.DeliveryAttempts,
		backoff:     opts.RetryBackoff,
		maxBackoff:  opts.MaxRetryBackoff,
		timeout:     opts.DeliveryTimeout,
		wake:        make(chan struct{}, 1),
		url:         opts.WebhookURL,
		secret:      opts.WebhookSecret,
		order:       opts.DeliveryOrder,
		duplicates:  max(opts.DuplicateDeliveries, 0),
		rng:         rand.New(rand.NewPCG(opts.Seed, 0xde11)),
		idle:        make(chan struct{}),
		maxRecords:  opts.MaxDeliveryAttempts,
	}
	close(d.idle)
	if d.client == nil {
		d.client = httpclient.New(0)
	}
	if d.signClock == nil {
		d.signClock = time.Now
	}
	if d.attemptsMax <= 0 {
		d.attemptsMax = 8
	}
	if d.backoff <= 0 {
		d.backoff = time.Second
	}
	if d.maxBackoff <= 0 {
		d.maxBackoff = 30 * time.Second
	}
	d.maxBackoff = max(d.maxBackoff, d.backoff)
	if d.timeout <= 0 {
		d.timeout = 10 * time.Second
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.run()
	return d
}

func (d *deliverer) close() {
	d.cancel()
	d.wg.Wait()
}

func (d *deliverer) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *deliverer) hasEndpoint() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.url != ""
}

// enqueue queues 1 + duplicates deliveries of an event. It returns false when
// no endpoint is configured.
func (d *deliverer) enqueue(eventID, eventType, customerID string, payload []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.url == "" {
		return false
	}
	if d.dropped() {
		return false
	}
	for i := range 1 + d.duplicates {
		d.seq++
		d.pending = append(d.pending, &delivery{
			seq:       d.seq,
			eventID:   eventID,
			eventType: eventType,
			lane:      customerID,
			payload:   payload,
			copy:      i,
		})
		d.stats.Queued++
	}
	d.setIdle()
	d.signal()
	return true
}

// setIdle keeps d.idle closed exactly while nothing is pending. Call with
// d.mu held.
func (d *deliverer) setIdle() {
	select {
	case <-d.idle:
		if len(d.pending) > 0 {
			d.idle = make(chan struct{})
		}
	default:
		if len(d.pending) == 0 {
			close(d.idle)
		}
	}
}

func (d *deliverer) run() {
	defer d.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		picked, wait := d.pick(time.Now())
		for _, p := range picked {
			d.wg.Add(1)
			go d.attempt(p)
		}
		var tick <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-d.ctx.Done():
			return
		case <-d.wake:
		case <-tick:
		}
	}
}

// pick marks the deliveries to start now as in flight and returns them, with
// how long until a waiting retry becomes due (0: nothing waiting).
func (d *deliverer) pick(now time.Time) (picked []*delivery, wait time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused || d.url == "" {
		return nil, 0
	}
	due := func(p *delivery) bool {
		if p.notBefore.After(now) {
			if w := p.notBefore.Sub(now); wait == 0 || w < wait {
				wait = w
			}
			return false
		}
		return true
	}
	start := func(p *delivery) {
		p.inFlight = true
		d.inFlight++
		picked = append(picked, p)
	}
	if d.order == OrderPerCustomer {
		busy := map[string]bool{}
		for _, p := range d.pending {
			if busy[p.lane] {
				continue
			}
			busy[p.lane] = true
			if !p.inFlight && due(p) && d.inFlight < maxConcurrentDeliveries {
				start(p)
			}
		}
		return picked, wait
	}
	if d.inFlight > 0 {
		return nil, 0
	}
	var ready []*delivery
	for _, p := range d.pending {
		if due(p) {
			ready = append(ready, p)
		}
	}
	switch {
	case len(ready) == 0:
	case d.order == OrderShuffled:
		start(ready[d.rng.IntN(len(ready))])
	default:
		start(ready[len(ready)-1])
	}
	return picked, wait
}

func (d *deliverer) attempt(p *delivery) {
	defer d.wg.Done()
	d.mu.Lock()
	url, secret := d.url, d.secret
	d.mu.Unlock()

	at := time.Now()
	status, err := d.send(url, secret, p.payload)
	if d.ctx.Err() != nil {
		return // closing: the queue is being dropped
	}
	ok := err == nil && status >= 200 && status < 300
	rec := DeliveryAttempt{
		EventID:    p.eventID,
		EventType:  p.eventType,
		CustomerID: p.lane,
		Copy:       p.copy,
		Time:       at,
		StatusCode: status,
		OK:         ok,
	}
	if err != nil {
		rec.Err = err.Error()
	}

	d.mu.Lock()
	p.inFlight = false
	d.inFlight--
	p.attempts++
	rec.Attempt = p.attempts
	d.attempts = append(d.attempts, rec)
	trimOldest(&d.attempts, d.maxRecords, nil)
	d.stats.Attempts++
	switch {
	case ok:
		d.stats.Delivered++
		d.remove(p)
	case p.attempts >= d.attemptsMax:
		d.stats.FailedAttempts++
		d.stats.Abandoned++
		d.remove(p)
	default:
		d.stats.FailedAttempts++
		backoff := d.backoff << min(p.attempts-1, 30)
		if backoff <= 0 || backoff > d.maxBackoff {
			backoff = d.maxBackoff
		}
		p.notBefore = time.Now().Add(backoff)
	}
	d.setIdle()
	d.mu.Unlock()
	d.signal()

	d.log.Debug("stripefake webhook delivery", "event_id", p.eventID, "event_type", p.eventType,
		"attempt", rec.Attempt, "status", status, "ok", ok, "error", rec.Err)
	if ok {
		d.onDelivered(p.eventID)
	}
}

// remove drops p from the queue. Call with d.mu held.
func (d *deliverer) remove(p *delivery) {
	if i := slices.Index(d.pending, p); i >= 0 {
		d.pending = slices.Delete(d.pending, i, i+1)
	}
}

// send posts one signed payload and returns the response status.
func (d *deliverer) send(url, secret string, payload []byte) (int, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, fmt.Errorf("building webhook request: %w", err)
	}
	ts := d.signClock()
	sig := webhook.ComputeSignature(ts, payload, secret)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Accept", "*/*; q=0.5, application/xml")
	req.Header.Set("Stripe-Signature", fmt.Sprintf("t=%d,v1=%s", ts.Unix(), hex.EncodeToString(sig)))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// SetWebhookEndpoint changes the endpoint URL and signing secret. Queued
// deliveries go to the new endpoint; an empty url stops queuing new events
// (queued ones wait until an endpoint is set again).
func (s *Server) SetWebhookEndpoint(url, secret string) {
	d := s.deliv
	d.mu.Lock()
	d.url, d.secret = url, secret
	d.mu.Unlock()
	d.signal()
}

// SetDeliveryOrder changes the delivery order for what is sent from now on.
func (s *Server) SetDeliveryOrder(o DeliveryOrder) {
	d := s.deliv
	d.mu.Lock()
	d.order = o
	d.mu.Unlock()
	d.signal()
}

// SetDuplicateDeliveries changes how many extra copies of each event are
// queued from now on.
func (s *Server) SetDuplicateDeliveries(n int) {
	d := s.deliv
	d.mu.Lock()
	d.duplicates = max(n, 0)
	d.mu.Unlock()
}

// PauseDelivery stops starting deliveries; events keep queuing. Deliveries
// already in flight finish.
func (s *Server) PauseDelivery() {
	d := s.deliv
	d.mu.Lock()
	d.paused = true
	d.mu.Unlock()
}

// ResumeDelivery undoes PauseDelivery.
func (s *Server) ResumeDelivery() {
	d := s.deliv
	d.mu.Lock()
	d.paused = false
	d.mu.Unlock()
	d.signal()
}

// WaitDelivered blocks until no delivery is pending (each was delivered or
// abandoned) and returns nil, or returns an error wrapping ctx.Err() if ctx
// ends first. While delivery is paused with events queued it can only end
// through ctx.
func (s *Server) WaitDelivered(ctx context.Context) error {
	d := s.deliv
	d.mu.Lock()
	idle := d.idle
	d.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		d.mu.Lock()
		n := len(d.pending)
		d.mu.Unlock()
		return fmt.Errorf("stripefake: %d webhook deliveries still pending: %w", n, ctx.Err())
	}
}

// DeliveryStats returns counters of webhook delivery so far.
func (s *Server) DeliveryStats() DeliveryStats {
	d := s.deliv
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.stats
	st.Pending = len(d.pending)
	return st
}

// Deliveries returns every delivery attempt made so far, oldest first.
func (s *Server) Deliveries() []DeliveryAttempt {
	d := s.deliv
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.attempts)
}
