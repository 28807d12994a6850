package salesforcefake

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/httpclient"
)

// MaxNotificationsPerMessage is Salesforce's limit of notifications in one
// Outbound Message.
const MaxNotificationsPerMessage = 100

// Namespaces of Outbound Messages.
const (
	soapNS     = "http://schemas.xmlsoap.org/soap/envelope/"
	outboundNS = "http://soap.sforce.com/2005/09/outbound"
	sobjectNS  = "urn:sobject.enterprise.soap.sforce.com"
	soapTime   = "2006-01-02T15:04:05.000Z"
)

// DeliveryAttempt is one attempt to deliver one Outbound Message.
type DeliveryAttempt struct {
	NotificationIDs []string // the notification ids the message carried
	ContactIDs      []string // the contact of each notification
	Copy            int      // 0 for the original, 1.. for Options.DuplicateDeliveries copies
	Attempt         int      // 1 for the first try of the message's oldest notification
	Time            time.Time
	URL             string // where it was sent, token included
	Payload         []byte // the SOAP envelope
	StatusCode      int    // 0 when no response arrived
	Err             string // transport error or why the answer was no acknowledgement
	Acked           bool   // the listener answered 2xx with <Ack>true</Ack>
}

// DeliveryStats summarises Outbound Message delivery.
type DeliveryStats struct {
	Queued         int // notifications queued
	Pending        int // queued notifications not yet acknowledged, abandoned or dropped
	Messages       int // message attempts, copies included
	Acked          int // notifications acknowledged
	FailedAttempts int // message attempts not acknowledged
	Abandoned      int // notifications that used up Options.DeliveryAttempts
	Dropped        int // notifications dropped because their contact was deleted first
}

type notification struct {
	id        string
	contactID string
	deleted   bool // queued by a delete (Options.NotifyDeletes)
	attempts  int
	notBefore time.Time
	inFlight  bool
}

// outbound queues notifications and posts them to the listener.
type outbound struct {
	srv         *Server
	log         *slog.Logger
	client      *http.Client
	attemptsMax int
	backoff     time.Duration
	maxBackoff  time.Duration
	timeout     time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	mu         sync.Mutex
	url, token string
	batch      int
	duplicates int
	paused     bool
	pending    []*notification
	idle       chan struct{} // closed while nothing is pending
	stats      DeliveryStats
	attempts   []DeliveryAttempt
}

func newOutbound(opts Options, srv *Server) *outbound {
	o := &outbound{
		srv:         srv,
		log:         opts.Logger,
		client:      opts.HTTPClient,
		attemptsMax: max(opts.DeliveryAttempts, 0),
		backoff:     opts.RetryBackoff,
		maxBackoff:  opts.MaxRetryBackoff,
		timeout:     opts.DeliveryTimeout,
		wake:        make(chan struct{}, 1),
		url:         opts.OutboundURL,
		token:       opts.OutboundToken,
		batch:       clampBatch(opts.BatchSize),
		duplicates:  max(opts.DuplicateDeliveries, 0),
		idle:        make(chan struct{}),
	}
	close(o.idle)
	if o.client == nil {
		o.client = httpclient.New(0)
	}
	if o.backoff <= 0 {
		o.backoff = time.Second
	}
	if o.maxBackoff <= 0 {
		o.maxBackoff = 30 * time.Second
	}
	o.maxBackoff = max(o.maxBackoff, o.backoff)
	if o.timeout <= 0 {
		o.timeout = 10 * time.Second
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.wg.Add(1)
	go o.run()
	return o
}

func clampBatch(n int) int { return min(max(n, 1), MaxNotificationsPerMessage) }

func (o *outbound) close() {
	o.cancel()
	o.wg.Wait()
}

func (o *outbound) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// enqueue queues a notification for a contact, unless no listener is set.
func (o *outbound) enqueue(contactID string, deleted bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.url == "" {
		return
	}
	o.pending = append(o.pending, &notification{id: newID(notificationPrefix), contactID: contactID, deleted: deleted})
	o.stats.Queued++
	o.setIdle()
	o.signal()
}

// setIdle keeps o.idle closed exactly while nothing is pending. o.mu is held.
func (o *outbound) setIdle() {
	select {
	case <-o.idle:
		if len(o.pending) > 0 {
			o.idle = make(chan struct{})
		}
	default:
		if len(o.pending) == 0 {
			close(o.idle)
		}
	}
}

func (o *outbound) run() {
	defer o.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if o.ctx.Err() != nil {
			// Closing. deliver gives up on a batch as soon as the context
			// ends, leaving it due: without this check the loop would pick
			// it again for ever.
			return
		}
		batch, target, wait := o.pick(time.Now())
		if len(batch) > 0 {
			o.deliver(batch, target)
			continue
		}
		var tick <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-o.ctx.Done():
			return
		case <-o.wake:
		case <-tick:
		}
	}
}

// pick marks up to a batch of due notifications, oldest first, as in flight
// and returns them with the URL to send them to, or how long until one is
// due (0: nothing waiting).
func (o *outbound) pick(now time.Time) (batch []*notification, target string, wait time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.paused || o.url == "" {
		return nil, "", 0
	}
	for _, n := range o.pending {
		if len(batch) == o.batch {
			break
		}
		if n.notBefore.After(now) {
			if w := n.notBefore.Sub(now); wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		n.inFlight = true
		batch = append(batch, n)
	}
	target = o.url
	if o.token != "" {
		if u, err := url.Parse(o.url); err == nil {
			q := u.Query()
			q.Set("token", o.token)
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}
	return batch, target, wait
}

// deliver sends one message carrying batch until acknowledged, then its
// duplicates, and updates the queue.
func (o *outbound) deliver(batch []*notification, target string) {
	var send []*notification
	var contacts []Contact
	var dropped []*notification
	o.srv.mu.Lock()
	for _, n := range batch {
		c, ok := o.srv.contacts[n.contactID]
		if !ok || (c.IsDeleted && !n.deleted && !o.srv.opts.NotifyDeletes) {
			dropped = append(dropped, n)
			continue
		}
		send = append(send, n)
		contacts = append(contacts, c.clone())
	}
	o.srv.mu.Unlock()

	var rec DeliveryAttempt
	acked := false
	if len(send) > 0 {
		payload := o.srv.envelope(send, contacts)
		rec = DeliveryAttempt{Time: time.Now(), URL: target, Payload: payload}
		for i, n := range send {
			rec.NotificationIDs = append(rec.NotificationIDs, n.id)
			rec.ContactIDs = append(rec.ContactIDs, contacts[i].ID)
			rec.Attempt = max(rec.Attempt, n.attempts+1)
		}
		rec.StatusCode, rec.Err = o.send(target, payload)
		if o.ctx.Err() != nil {
			return // closing: the queue is being dropped
		}
		acked = rec.Err == ""
		rec.Acked = acked
		o.record(rec)
		if acked {
			for i := range o.duplicatesNow() {
				dup := rec
				dup.Copy, dup.Time = i+1, time.Now()
				dup.StatusCode, dup.Err = o.send(target, payload)
				dup.Acked = dup.Err == ""
				if o.ctx.Err() != nil {
					return
				}
				o.record(dup)
			}
		}
	}

	o.mu.Lock()
	for _, n := range dropped {
		o.stats.Dropped++
		o.remove(n)
	}
	for _, n := range send {
		n.inFlight = false
		n.attempts++
		switch {
		case acked:
			o.stats.Acked++
			o.remove(n)
		case o.attemptsMax > 0 && n.attempts >= o.attemptsMax:
			o.stats.Abandoned++
			o.remove(n)
		default:
			backoff := o.backoff << min(n.attempts-1, 30)
			if backoff <= 0 || backoff > o.maxBackoff {
				backoff = o.maxBackoff
			}
			n.notBefore = time.Now().Add(backoff)
		}
	}
	o.setIdle()
	o.mu.Unlock()
	if len(send) > 0 {
		o.log.Debug("salesforcefake outbound message", "notifications", len(send), "attempt", rec.Attempt,
			"status", rec.StatusCode, "acked", acked, "error", rec.Err)
	}
}

func (o *outbound) duplicatesNow() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.duplicates
}

func (o *outbound) record(rec DeliveryAttempt) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attempts = append(o.attempts, rec)
	o.stats.Messages++
	if !rec.Acked {
		o.stats.FailedAttempts++
	}
}

// remove drops n from the queue. o.mu is held.
func (o *outbound) remove(n *notification) {
	if i := slices.Index(o.pending, n); i >= 0 {
		o.pending = slices.Delete(o.pending, i, i+1)
	}
}

// send posts one message; the error string is empty only for an
// acknowledgement (2xx with <Ack>true</Ack>).
func (o *outbound) send(target string, payload []byte) (int, string) {
	ctx, cancel := context.WithTimeout(o.ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
	if err != nil {
		return 0, fmt.Sprintf("building request: %v", err)
	}
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.Header.Set("SOAPAction", `""`)
	req.Header.Set("User-Agent", "Jakarta Commons-HttpClient/3.1")
	resp, err := o.client.Do(req)
	if err != nil {
		// net/http quotes the URL, and with it the ?token= secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = config.RedactURL(ue.URL)
		}
		return 0, err.Error()
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil {
		return resp.StatusCode, fmt.Sprintf("reading the answer: %v", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Sprintf("status %d", resp.StatusCode)
	}
	if !isAck(body) {
		return resp.StatusCode, fmt.Sprintf("no <Ack>true</Ack> in the answer: %.200q", body)
	}
	return resp.StatusCode, ""
}

// isAck reports whether body is a SOAP envelope holding
// <notificationsResponse><Ack>true</Ack></notificationsResponse>.
func isAck(body []byte) bool {
	var env struct {
		XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
		Body    struct {
			Response *struct {
				Ack string `xml:"http://soap.sforce.com/2005/09/outbound Ack"`
			} `xml:"http://soap.sforce.com/2005/09/outbound notificationsResponse"`
		} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
	}
	if err := xml.Unmarshal(body, &env); err != nil || env.Body.Response == nil {
		return false
	}
	switch env.Body.Response.Ack {
	case "true", "1":
		return true
	}
	return false
}

// envelope renders the SOAP notifications message for notifications ns about
// contacts cs (same order). Null fields are left out, as Salesforce does.
func (s *Server) envelope(ns []*notification, cs []Contact) []byte {
	var b bytes.Buffer
	elem := func(name, value string) {
		b.WriteString("<" + name + ">")
		_ = xml.EscapeText(&b, []byte(value))
		b.WriteString("</" + name + ">")
	}
	org := s.opts.OrgID
	instance := s.URL()
	b.WriteString(xml.Header)
	b.WriteString(`<soapenv:Envelope xmlns:soapenv="` + soapNS + `" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`)
	b.WriteString(`<soapenv:Body><notifications xmlns="` + outboundNS + `">`)
	elem("OrganizationId", org)
	elem("ActionId", s.opts.ActionID)
	b.WriteString(`<SessionId xsi:nil="true"/>`)
	elem("EnterpriseUrl", instance+"/services/Soap/c/60.0/"+org[:15])
	elem("PartnerUrl", instance+"/services/Soap/u/60.0/"+org[:15])
	for i, n := range ns {
		c := cs[i]
		b.WriteString("<Notification>")
		elem("Id", n.id)
		b.WriteString(`<sObject xsi:type="sf:Contact" xmlns:sf="` + sobjectNS + `">`)
		fields := map[string]string{
			"Id":               c.ID,
			"Email":            c.Email,
			"FirstName":        c.FirstName,
			"IsDeleted":        fmt.Sprint(c.IsDeleted),
			"LastModifiedById": c.LastModifiedByID,
			"LastModifiedDate": c.LastModifiedDate.UTC().Format(soapTime),
			"LastName":         c.LastName,
			"Phone":            c.Phone,
			ExternalIDField:    c.TandemUserID,
		}
		for _, f := range s.opts.CustomFields {
			fields[f] = c.Custom[f]
		}
		names := make([]string, 0, len(fields))
		for k := range fields {
			if k != "Id" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		for _, k := range append([]string{"Id"}, names...) {
			if v := fields[k]; v != "" {
				elem("sf:"+k, v)
			}
		}
		b.WriteString("</sObject></Notification>")
	}
	b.WriteString("</notifications></soapenv:Body></soapenv:Envelope>")
	return b.Bytes()
}

// SetOutboundEndpoint changes the listener URL and its token= secret.
// Queued notifications go to the new endpoint; an empty url stops queuing
// new notifications (queued ones wait until an endpoint is set again).
func (s *Server) SetOutboundEndpoint(listenerURL, token string) {
	o := s.out
	o.mu.Lock()
	o.url, o.token = listenerURL, token
	o.mu.Unlock()
	o.signal()
}

// SetBatchSize changes how many notifications one message carries at most
// (clamped to 1..100).
func (s *Server) SetBatchSize(n int) {
	o := s.out
	o.mu.Lock()
	o.batch = clampBatch(n)
	o.mu.Unlock()
	o.signal()
}

// SetDuplicateDeliveries changes how many extra copies of each acknowledged
// message are sent from now on.
func (s *Server) SetDuplicateDeliveries(n int) {
	o := s.out
	o.mu.Lock()
	o.duplicates = max(n, 0)
	o.mu.Unlock()
}

// PauseDelivery stops sending messages; notifications keep queuing (and are
// batched on ResumeDelivery). A message in flight finishes.
func (s *Server) PauseDelivery() {
	o := s.out
	o.mu.Lock()
	o.paused = true
	o.mu.Unlock()
}

// ResumeDelivery undoes PauseDelivery.
func (s *Server) ResumeDelivery() {
	o := s.out
	o.mu.Lock()
	o.paused = false
	o.mu.Unlock()
	o.signal()
}

// WaitDelivered blocks until no notification is pending (each was
// acknowledged, abandoned or dropped) and returns nil, or returns an error
// wrapping ctx.Err() if ctx ends first. While delivery is paused with
// notifications queued, or the listener never acknowledges and
// Options.DeliveryAttempts is 0, it can only end through ctx.
func (s *Server) WaitDelivered(ctx context.Context) error {
	o := s.out
	o.mu.Lock()
	idle := o.idle
	o.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		o.mu.Lock()
		n := len(o.pending)
		o.mu.Unlock()
		return fmt.Errorf("salesforcefake: %d outbound notifications still pending: %w", n, ctx.Err())
	}
}

// DeliveryStats returns counters of Outbound Message delivery so far.
func (s *Server) DeliveryStats() DeliveryStats {
	o := s.out
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.stats
	st.Pending = len(o.pending)
	return st
}

// Deliveries returns every message attempt made so far, oldest first.
func (s *Server) Deliveries() []DeliveryAttempt {
	o := s.out
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.attempts)
}
