package salesforce

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Outbound Messages are SOAP 1.1 requests Salesforce POSTs to a listener
// when a workflow rule (or flow) fires on a contact: a <notifications>
// element (namespace OutboundNamespace) holding OrganizationId, ActionId,
// SessionId, EnterpriseUrl, PartnerUrl and 1 to 100 <Notification>s, each
// with its own Id (the notification id, stable across redeliveries) and the
// contact's fields in an <sObject xsi:type="sf:Contact">.
//
// Salesforce retries a message, with backoff, for up to 24 hours until the
// listener answers 2xx with AckResponse; it may also deliver a message more
// than once, batch notifications differently on retry, deliver them out of
// order, and send the contact's latest data rather than the data at the time
// of the change. Workflow rules do not fire on delete, so deletions made in
// Salesforce produce no message at all.

// Limits of Outbound Messages.
const (
	// MaxNotifications is the most notifications one message may carry.
	MaxNotifications = 100
	// MaxMessageBytes bounds a message ParseOutboundMessage reads: 100
	// notifications of contacts whose metadata field holds its maximum
	// (131,072 characters, up to 4 bytes each, XML-escaped) would not fit,
	// but real ones are far smaller. The webhook should cap the request
	// body at this size.
	MaxMessageBytes = 16 << 20
)

// XML namespaces of Outbound Messages.
const (
	SOAPNamespace     = "http://schemas.xmlsoap.org/soap/envelope/"
	OutboundNamespace = "http://soap.sforce.com/2005/09/outbound"
)

// AckContentType is the Content-Type of AckResponse and FaultResponse.
const AckContentType = "text/xml; charset=utf-8"

// Errors of ParseOutboundMessage. Every error it returns matches
// ErrInvalidMessage; a document carrying a DTD also matches ErrDTD, one with
// too many notifications ErrTooManyNotifications.
var (
	ErrInvalidMessage       = errors.New("salesforce: not a valid Outbound Message")
	ErrDTD                  = errors.New("XML document type declarations (DOCTYPE, ENTITY) are refused")
	ErrTooManyNotifications = fmt.Errorf("more than %d notifications in one message", MaxNotifications)
)

// OutboundMessage is a parsed Outbound Message. The SessionId it may carry
// is deliberately dropped: Tandem makes no calls with it (configure the
// outbound message without "Send Session ID"), and a credential is better
// not held at all.
type OutboundMessage struct {
	OrganizationID string // the sending org (18 characters); check it with InboundConfig.FromOrg
	ActionID       string // the outbound message (workflow action) id
	EnterpriseURL  string
	PartnerURL     string
	Notifications  []Notification // 1 to MaxNotifications, in message order
}

// Notification is one contact change of an Outbound Message. Salesforce
// leaves out fields that are null, so an absent field reads as "" (the
// outbound message must be configured to send every field below).
type Notification struct {
	// ID is the notification id: the same on every delivery of this
	// notification, so it is the de-duplication key.
	ID string
	// ContactID is the contact's record id (sObject Id).
	ContactID string
	// TandemUserID is Tandem_User_Id__c: "" for a contact Tandem did not
	// create.
	TandemUserID string
	Email        string
	FirstName    string
	LastName     string
	Phone        string
	// LastModifiedDate is when the contact last changed, to the second
	// (Salesforce's resolution); zero if the field was not sent.
	LastModifiedDate time.Time
	// LastModifiedByID is the user who last changed the contact; the
	// integration user for Tandem's own writes (see InboundConfig.IsEcho).
	LastModifiedByID string
	// IsDeleted is the IsDeleted field; false if it was not sent.
	IsDeleted bool
	// Fields holds every field of the sObject as sent, by API name
	// ("Id", "Email", "Tandem_Metadata__c", …); a nil one is "".
	Fields map[string]string
}

type envelope struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Body    struct {
		Notifications *notificationsXML `xml:"http://soap.sforce.com/2005/09/outbound notifications"`
		Fault         *struct {
			Code   string `xml:"faultcode"`
			String string `xml:"faultstring"`
		} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

type notificationsXML struct {
	OrganizationID string            `xml:"http://soap.sforce.com/2005/09/outbound OrganizationId"`
	ActionID       string            `xml:"http://soap.sforce.com/2005/09/outbound ActionId"`
	EnterpriseURL  string            `xml:"http://soap.sforce.com/2005/09/outbound EnterpriseUrl"`
	PartnerURL     string            `xml:"http://soap.sforce.com/2005/09/outbound PartnerUrl"`
	Notifications  []notificationXML `xml:"http://soap.sforce.com/2005/09/outbound Notification"`
}

type notificationXML struct {
	ID      string `xml:"http://soap.sforce.com/2005/09/outbound Id"`
	SObject *struct {
		Type   string     `xml:"http://www.w3.org/2001/XMLSchema-instance type,attr"`
		Fields []fieldXML `xml:",any"`
	} `xml:"http://soap.sforce.com/2005/09/outbound sObject"`
}

type fieldXML struct {
	XMLName xml.Name
	Nil     string `xml:"http://www.w3.org/2001/XMLSchema-instance nil,attr"`
	Value   string `xml:",chardata"`
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}

// ParseOutboundMessage parses an Outbound Message about contacts (the body
// of the POST Salesforce sends). It refuses, with an error matching
// ErrInvalidMessage: an empty body or one over MaxMessageBytes; XML that is
// not well formed (one root element, nothing but white space around it);
// any document type declaration (ErrDTD: encoding/xml would not expand
// entities anyway, but a document carrying a DTD is not Salesforce's); more
// than MaxNotifications notifications (ErrTooManyNotifications, checked
// before they are decoded); a SOAP fault or any body without a
// <notifications> element; a message without OrganizationId or without
// notifications; a notification without Id, without an sObject or sObject
// Id, about another object than Contact, or with a LastModifiedDate or
// IsDeleted it cannot read.
//
// How to answer, in the webhook: only after every notification is applied
// (or deliberately skipped: a duplicate notification id, an echo, a change
// older than the one applied), 200 with AckResponse. Anything else (non-2xx,
// a SOAP fault, Ack false, an empty body) makes Salesforce deliver the whole
// message again later, which is what a transient failure wants: answer 500
// with FaultResponse, and the notifications already applied are skipped by
// their ids next time. A message that fails ParseOutboundMessage, comes from
// another org or lacks the token will be retried for 24 hours whatever the
// answer; answer 4xx (no SOAP needed), never an Ack, so nothing is lost
// silently.
func ParseOutboundMessage(body []byte) (OutboundMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return OutboundMessage{}, invalid("empty body")
	}
	if len(body) > MaxMessageBytes {
		return OutboundMessage{}, invalid("%d bytes, more than %d", len(body), MaxMessageBytes)
	}
	if err := scan(body); err != nil {
		return OutboundMessage{}, err
	}
	var env envelope
	if err := xml.Unmarshal(body, &env); err != nil {
		return OutboundMessage{}, invalid("%v", err)
	}
	if f := env.Body.Fault; f != nil {
		return OutboundMessage{}, invalid("the body is a SOAP fault (%s: %s), not notifications", clip(f.Code), clip(f.String))
	}
	n := env.Body.Notifications
	if n == nil {
		return OutboundMessage{}, invalid("no <notifications> element (namespace %s) in the SOAP body", OutboundNamespace)
	}
	msg := OutboundMessage{
		OrganizationID: strings.TrimSpace(n.OrganizationID),
		ActionID:       strings.TrimSpace(n.ActionID),
		EnterpriseURL:  strings.TrimSpace(n.EnterpriseURL),
		PartnerURL:     strings.TrimSpace(n.PartnerURL),
	}
	if msg.OrganizationID == "" {
		return OutboundMessage{}, invalid("no OrganizationId")
	}
	switch {
	case len(n.Notifications) == 0:
		return OutboundMessage{}, invalid("no Notification")
	case len(n.Notifications) > MaxNotifications: // scan counts first; kept for safety
		return OutboundMessage{}, fmt.Errorf("%w: %w", ErrInvalidMessage, ErrTooManyNotifications)
	}
	msg.Notifications = make([]Notification, 0, len(n.Notifications))
	for i, x := range n.Notifications {
		note, err := parseNotification(x)
		if err != nil {
			return OutboundMessage{}, invalid("notification %d: %v", i+1, err)
		}
		msg.Notifications = append(msg.Notifications, note)
	}
	return msg, nil
}

// scan walks the whole document once before it is decoded: it checks that it
// is well formed, refuses directives (DOCTYPE and the ENTITY declarations
// inside it) and counts notifications.
func scan(body []byte) error {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	depth, roots, notifications := 0, 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return invalid("%v", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return fmt.Errorf("%w: %w", ErrInvalidMessage, ErrDTD)
		case xml.StartElement:
			if depth == 0 {
				if roots++; roots > 1 {
					return invalid("more than one root element")
				}
			}
			depth++
			if t.Name.Space == OutboundNamespace && t.Name.Local == "Notification" {
				if notifications++; notifications > MaxNotifications {
					return fmt.Errorf("%w: %w", ErrInvalidMessage, ErrTooManyNotifications)
				}
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(t)) > 0 {
				return invalid("text outside the root element")
			}
		}
	}
	if roots == 0 {
		return invalid("no root element")
	}
	return nil
}

func parseNotification(x notificationXML) (Notification, error) {
	n := Notification{ID: strings.TrimSpace(x.ID)}
	if n.ID == "" {
		return n, errors.New("no Id")
	}
	if x.SObject == nil {
		return n, fmt.Errorf("%s: no sObject", n.ID)
	}
	if t := x.SObject.Type; t != "" {
		if _, local, _ := strings.Cut(t, ":"); local != "Contact" && t != "Contact" {
			return n, fmt.Errorf("%s: sObject of type %q, not a Contact", n.ID, clip(t))
		}
	}
	n.Fields = make(map[string]string, len(x.SObject.Fields))
	for _, f := range x.SObject.Fields {
		v := f.Value
		if isNil, _ := strconv.ParseBool(strings.TrimSpace(f.Nil)); isNil {
			v = ""
		}
		n.Fields[f.XMLName.Local] = v
	}
	n.ContactID = strings.TrimSpace(n.Fields["Id"])
	if n.ContactID == "" {
		return n, fmt.Errorf("%s: sObject without Id", n.ID)
	}
	n.TandemUserID = strings.TrimSpace(n.Fields[ExternalIDField])
	n.Email = n.Fields["Email"]
	n.FirstName = n.Fields["FirstName"]
	n.LastName = n.Fields["LastName"]
	n.Phone = n.Fields["Phone"]
	n.LastModifiedByID = strings.TrimSpace(n.Fields["LastModifiedById"])
	if v := strings.TrimSpace(n.Fields["LastModifiedDate"]); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return n, fmt.Errorf("%s: LastModifiedDate %q: want an xsd:dateTime such as 2024-03-01T12:00:00.000Z", n.ID, clip(v))
		}
		n.LastModifiedDate = t.UTC()
	}
	if v := strings.TrimSpace(n.Fields["IsDeleted"]); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return n, fmt.Errorf("%s: IsDeleted %q: want true or false", n.ID, clip(v))
		}
		n.IsDeleted = b
	}
	return n, nil
}

// clip shortens text quoted in error messages.
func clip(s string) string { return truncate(s, 100) }

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

const ackXML = xml.Header + `<soapenv:Envelope xmlns:soapenv="` + SOAPNamespace + `">` +
	`<soapenv:Body><notificationsResponse xmlns="` + OutboundNamespace + `">` +
	`<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>`

// AckResponse is the body that acknowledges an Outbound Message (send it
// with status 200 and AckContentType): a SOAP envelope holding
// <notificationsResponse><Ack>true</Ack></notificationsResponse>. Salesforce
// then drops every notification of the message. Each call returns a new
// slice.
func AckResponse() []byte { return []byte(ackXML) }

// FaultResponse is a SOAP 1.1 fault (faultcode soapenv:Server) with reason
// as its faultstring (escaped, cut to 200 bytes), to send with status 500
// and AckContentType when a message could not be applied now: Salesforce
// will deliver it again. Keep internal details out of reason; it goes back
// to Salesforce, which shows it in the outbound message queue.
func FaultResponse(reason string) []byte {
	reason = truncate(reason, 200)
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<soapenv:Envelope xmlns:soapenv="` + SOAPNamespace + `"><soapenv:Body><soapenv:Fault>`)
	b.WriteString(`<faultcode>soapenv:Server</faultcode><faultstring>`)
	_ = xml.EscapeText(&b, []byte(strings.ToValidUTF8(reason, "\uFFFD")))
	b.WriteString(`</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>`)
	return b.Bytes()
}
