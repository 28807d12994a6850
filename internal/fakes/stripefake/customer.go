package stripefake

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Stripe's metadata limits.
const (
	maxMetadataKeys     = 50
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
)

// Customer is the fake's record of one Stripe customer. Empty strings stand
// for Stripe's null. Its JSON encoding is the Stripe customer object.
type Customer struct {
	ID               string
	Created          time.Time
	Email            string
	Name             string
	Phone            string
	Description      string
	Address          *Address
	Balance          int64
	InvoicePrefix    string
	TaxExempt        string // "none" (the default), "exempt" or "reverse"
	PreferredLocales []string
	Metadata         map[string]string
	// Deleted is set once the customer has been deleted. Deleted customers
	// stay in the fake: the API retrieves them as {"deleted": true} stubs.
	Deleted bool
}

// Address is a postal address; empty fields are null.
type Address struct {
	City       string
	Country    string
	Line1      string
	Line2      string
	PostalCode string
	State      string
}

func (c Customer) clone() Customer {
	c.Metadata = maps.Clone(c.Metadata)
	c.PreferredLocales = slices.Clone(c.PreferredLocales)
	if c.Address != nil {
		a := *c.Address
		c.Address = &a
	}
	return c
}

type addressJSON struct {
	City       *string `json:"city"`
	Country    *string `json:"country"`
	Line1      *string `json:"line1"`
	Line2      *string `json:"line2"`
	PostalCode *string `json:"postal_code"`
	State      *string `json:"state"`
}

type invoiceSettingsJSON struct {
	CustomFields         any `json:"custom_fields"`
	DefaultPaymentMethod any `json:"default_payment_method"`
	Footer               any `json:"footer"`
	RenderingOptions     any `json:"rendering_options"`
}

// customerJSON is the customer object as API version 2023-10-16 renders it.
type customerJSON struct {
	ID                  string              `json:"id"`
	Object              string              `json:"object"`
	Address             *addressJSON        `json:"address"`
	Balance             int64               `json:"balance"`
	Created             int64               `json:"created"`
	Currency            any                 `json:"currency"`
	DefaultSource       any                 `json:"default_source"`
	Delinquent          bool                `json:"delinquent"`
	Description         *string             `json:"description"`
	Discount            any                 `json:"discount"`
	Email               *string             `json:"email"`
	InvoicePrefix       string              `json:"invoice_prefix"`
	InvoiceSettings     invoiceSettingsJSON `json:"invoice_settings"`
	Livemode            bool                `json:"livemode"`
	Metadata            map[string]string   `json:"metadata"`
	Name                *string             `json:"name"`
	NextInvoiceSequence int64               `json:"next_invoice_sequence"`
	Phone               *string             `json:"phone"`
	PreferredLocales    []string            `json:"preferred_locales"`
	Shipping            any                 `json:"shipping"`
	TaxExempt           string              `json:"tax_exempt"`
	TestClock           any                 `json:"test_clock"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// MarshalJSON renders c as a Stripe customer object (never the deleted stub).
func (c Customer) MarshalJSON() ([]byte, error) {
	w := customerJSON{
		ID:                  c.ID,
		Object:              "customer",
		Balance:             c.Balance,
		Created:             c.Created.Unix(),
		Description:         nullable(c.Description),
		Email:               nullable(c.Email),
		InvoicePrefix:       c.InvoicePrefix,
		Metadata:            c.Metadata,
		Name:                nullable(c.Name),
		NextInvoiceSequence: 1,
		Phone:               nullable(c.Phone),
		PreferredLocales:    c.PreferredLocales,
		TaxExempt:           c.TaxExempt,
	}
	if w.Metadata == nil {
		w.Metadata = map[string]string{}
	}
	if w.PreferredLocales == nil {
		w.PreferredLocales = []string{}
	}
	if w.TaxExempt == "" {
		w.TaxExempt = "none"
	}
	if a := c.Address; a != nil {
		w.Address = &addressJSON{
			City:       nullable(a.City),
			Country:    nullable(a.Country),
			Line1:      nullable(a.Line1),
			Line2:      nullable(a.Line2),
			PostalCode: nullable(a.PostalCode),
			State:      nullable(a.State),
		}
	}
	return json.Marshal(w)
}

// deletedJSON is what Stripe returns for DELETE and for retrieving a deleted
// customer.
func deletedJSON(id string) []byte {
	b, _ := json.MarshalIndent(struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Deleted bool   `json:"deleted"`
	}{id, "customer", true}, "", "  ")
	return b
}

// customerParams holds the parsed parameters of a create or update. Nil
// pointers are parameters that were not sent; a pointer to "" unsets.
type customerParams struct {
	email, name, phone, description, invoicePrefix, taxExempt *string

	balance *int64

	clearMetadata bool
	metadata      map[string]string // "" deletes the key

	clearAddress bool
	address      map[string]string // address field -> value

	setLocales bool
	locales    []string
}

var addressFields = []string{"city", "country", "line1", "line2", "postal_code", "state"}

// unsupportedCustomerParams are real Stripe customer parameters this fake
// does not implement; they are rejected with a message saying so rather than
// as unknown.
var unsupportedCustomerParams = []string{
	"cash_balance", "coupon", "default_source", "invoice_settings", "next_invoice_sequence",
	"payment_method", "promotion_code", "shipping", "source", "tax", "tax_id_data",
	"test_clock", "validate",
}

// parseCustomerParams reads and validates create/update parameters. Limits that
// depend on the stored customer (the metadata key count) are checked when the
// parameters are applied.
func parseCustomerParams(fields []field) (customerParams, *apiError) {
	var p customerParams
	var locales []field
	for _, f := range fields {
		switch f.root {
		case "email", "name", "phone", "description", "invoice_prefix", "tax_exempt":
			if len(f.path) != 0 {
				return p, invalidRequest(f.root, "", "Invalid string: %s", f.key)
			}
			v := f.last()
			if err := validateScalar(f.root, v); err != nil {
				return p, err
			}
			switch f.root {
			case "email":
				p.email = &v
			case "name":
				p.name = &v
			case "phone":
				p.phone = &v
			case "description":
				p.description = &v
			case "invoice_prefix":
				p.invoicePrefix = &v
			case "tax_exempt":
				p.taxExempt = &v
			}
		case "balance":
			if len(f.path) != 0 {
				return p, invalidRequest("balance", codeInvalidInteger, "Invalid integer: %s", f.key)
			}
			n, err := strconv.ParseInt(f.last(), 10, 64)
			if err != nil {
				return p, invalidRequest("balance", codeInvalidInteger, "Invalid integer: %s", f.last())
			}
			p.balance = &n
		case "metadata":
			switch len(f.path) {
			case 0:
				if f.last() != "" {
					return p, invalidRequest("metadata", "", "Invalid hash")
				}
				p.clearMetadata = true
			case 1:
				k, v := f.path[0], f.last()
				if k == "" {
					return p, invalidRequest("metadata", "", "Invalid metadata: keys must not be empty")
				}
				if n := utf8.RuneCountInString(k); n > maxMetadataKeyLen {
					return p, invalidRequest("metadata", "",
						"Invalid key: %s must be a string under %d characters", k, maxMetadataKeyLen)
				}
				if n := utf8.RuneCountInString(v); n > maxMetadataValueLen {
					return p, invalidRequest("metadata", "",
						"Invalid val: %s must be a string under %d characters", truncate(v, 20), maxMetadataValueLen)
				}
				if p.metadata == nil {
					p.metadata = map[string]string{}
				}
				p.metadata[k] = v
			default:
				return p, invalidRequest("metadata", "", "Invalid val: metadata[%s] must be a string", f.path[0])
			}
		case "address":
			switch {
			case len(f.path) == 0 && f.last() == "":
				p.clearAddress = true
			case len(f.path) == 1 && slices.Contains(addressFields, f.path[0]):
				if n := utf8.RuneCountInString(f.last()); n > 5000 {
					return p, invalidRequest(f.key, codeStringTooLong, "Invalid string: must be at most 5000 characters")
				}
				if p.address == nil {
					p.address = map[string]string{}
				}
				p.address[f.path[0]] = f.last()
			case len(f.path) == 0:
				return p, invalidRequest("address", "", "Invalid object")
			default:
				return p, unknownParameter(f.key)
			}
		case "preferred_locales":
			if len(f.path) == 0 {
				if f.last() != "" {
					return p, invalidRequest("preferred_locales", "", "Invalid array")
				}
				p.setLocales = true
				continue
			}
			locales = append(locales, f)
		case "expand":
			// Accepted and ignored: nothing on a customer is expandable here.
		default:
			if slices.Contains(unsupportedCustomerParams, f.root) {
				return p, invalidRequest(f.root, "",
					"stripefake: parameter %q exists in the Stripe API but this fake does not implement it", f.root)
			}
			return p, unknownParameter(f.key)
		}
	}
	if len(locales) > 0 {
		l, err := stringList(locales)
		if err != nil {
			return p, err
		}
		p.setLocales, p.locales = true, l
	}
	return p, nil
}

func validateScalar(name, v string) *apiError {
	limits := map[string]int{
		"email": 512, "name": 256, "phone": 20, "description": 350, "invoice_prefix": 12,
	}
	if limit, ok := limits[name]; ok && utf8.RuneCountInString(v) > limit {
		return invalidRequest(name, codeStringTooLong,
			"Invalid string: %s; must be at most %d characters", truncate(v, 20), limit)
	}
	switch name {
	case "email":
		if v != "" && !validEmail(v) {
			return invalidRequest("email", codeEmailInvalid, "Invalid email address: %s", v)
		}
	case "tax_exempt":
		if v != "" && v != "none" && v != "exempt" && v != "reverse" {
			return invalidRequest("tax_exempt", "",
				"Invalid tax_exempt: must be one of none, exempt, or reverse")
		}
	case "invoice_prefix":
		if v != "" && (len(v) < 3 || strings.ToUpper(v) != v) {
			return invalidRequest("invoice_prefix", "",
				"Invalid invoice_prefix: must be 3-12 uppercase letters or numbers")
		}
	}
	return nil
}

// validEmail is a lenient check in the spirit of Stripe's: one @, a non-empty
// local part, a dotted domain, no spaces.
func validEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || strings.ContainsAny(s, " \t\r\n<>,;\"") || strings.Contains(domain, "@") {
		return false
	}
	dot := strings.LastIndexByte(domain, '.')
	return dot > 0 && dot < len(domain)-1 && !strings.Contains(domain, "..")
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "..."
}

// apply merges p into c with Stripe's update semantics: "" unsets a field,
// metadata keys merge and "" deletes a key. It fails when the merged metadata
// would exceed the key limit.
func (p customerParams) apply(c *Customer) *apiError {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.Email, p.email)
	set(&c.Name, p.name)
	set(&c.Phone, p.phone)
	set(&c.Description, p.description)
	if p.invoicePrefix != nil && *p.invoicePrefix != "" {
		c.InvoicePrefix = *p.invoicePrefix
	}
	if p.taxExempt != nil {
		c.TaxExempt = *p.taxExempt
		if c.TaxExempt == "" {
			c.TaxExempt = "none"
		}
	}
	if p.balance != nil {
		c.Balance = *p.balance
	}
	if p.clearMetadata {
		c.Metadata = map[string]string{}
	}
	if len(p.metadata) > 0 {
		md := maps.Clone(c.Metadata)
		if md == nil {
			md = map[string]string{}
		}
		for k, v := range p.metadata {
			if v == "" {
				delete(md, k)
			} else {
				md[k] = v
			}
		}
		if len(md) > maxMetadataKeys {
			return invalidRequest("metadata", "",
				"Metadata can have up to %d keys, but you've set %d.", maxMetadataKeys, len(md))
		}
		c.Metadata = md
	}
	if p.clearAddress {
		c.Address = nil
	}
	if len(p.address) > 0 {
		a := Address{}
		if c.Address != nil {
			a = *c.Address
		}
		for k, v := range p.address {
			switch k {
			case "city":
				a.City = v
			case "country":
				a.Country = v
			case "line1":
				a.Line1 = v
			case "line2":
				a.Line2 = v
			case "postal_code":
				a.PostalCode = v
			case "state":
				a.State = v
			}
		}
		c.Address = &a
	}
	if p.setLocales {
		c.PreferredLocales = p.locales
	}
	return nil
}

// validate applies the API's limits to a customer made or edited outside the
// API, as the dashboard enforces them too. It drops empty metadata values,
// which Stripe never stores.
func (c *Customer) validate() error {
	if c.Email != "" && !validEmail(c.Email) {
		return fmt.Errorf("stripefake: invalid email address %q", c.Email)
	}
	switch c.TaxExempt {
	case "none", "exempt", "reverse":
	default:
		return fmt.Errorf("stripefake: invalid tax_exempt %q", c.TaxExempt)
	}
	maps.DeleteFunc(c.Metadata, func(_, v string) bool { return v == "" })
	if len(c.Metadata) > maxMetadataKeys {
		return fmt.Errorf("stripefake: metadata can have up to %d keys, not %d", maxMetadataKeys, len(c.Metadata))
	}
	for k, v := range c.Metadata {
		if k == "" || utf8.RuneCountInString(k) > maxMetadataKeyLen {
			return fmt.Errorf("stripefake: metadata key %q must have 1 to %d characters", k, maxMetadataKeyLen)
		}
		if utf8.RuneCountInString(v) > maxMetadataValueLen {
			return fmt.Errorf("stripefake: metadata value of %q exceeds %d characters", k, maxMetadataValueLen)
		}
	}
	return nil
}
