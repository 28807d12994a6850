package stripefake_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

func TestAPIEventsCarryTheRequest(t *testing.T) {
	t.Parallel()
	clk := newClock()
	fake, sc := startWithClient(t, stripefake.Options{Clock: clk.Now})

	c, err := sc.Customers.New(createParams("tandem-stripe-create-u1", "a@example.com", "u1"))
	require.NoError(t, err)
	upd := &stripe.CustomerParams{Name: stripe.String("Ada")}
	upd.AddMetadata("tandem_user_id", "u1") // unchanged
	upd.AddMetadata("plan", "pro")          // added
	upd.SetIdempotencyKey("tandem-stripe-update-u1-v2")
	updated, err := sc.Customers.Update(c.ID, upd)
	require.NoError(t, err)

	// An update that changes nothing emits nothing.
	_, err = sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String("Ada")})
	require.NoError(t, err)

	evs := fake.Events()
	require.Len(t, evs, 2)

	created, err := sc.Events.Get(evs[0].ID, nil)
	require.NoError(t, err)
	require.Equal(t, "event", created.Object)
	require.Equal(t, stripe.EventType("customer.created"), created.Type)
	require.Equal(t, stripe.APIVersion, created.APIVersion)
	require.Equal(t, clk.Now().Unix(), created.Created)
	require.Equal(t, c.LastResponse.RequestID, created.Request.ID)
	require.Equal(t, "tandem-stripe-create-u1", created.Request.IdempotencyKey)
	require.Equal(t, c.ID, created.GetObjectValue("id"))
	require.Equal(t, "u1", created.GetObjectValue("metadata", "tandem_user_id"))
	require.Nil(t, created.Data.PreviousAttributes)

	ev, err := sc.Events.Get(evs[1].ID, nil)
	require.NoError(t, err)
	require.Equal(t, stripe.EventType("customer.updated"), ev.Type)
	require.Equal(t, updated.LastResponse.RequestID, ev.Request.ID)
	require.Equal(t, "tandem-stripe-update-u1-v2", ev.Request.IdempotencyKey)
	require.Equal(t, "Ada", ev.GetObjectValue("name"))
	require.Equal(t, map[string]any{
		"name":     nil,
		"metadata": map[string]any{"plan": nil},
	}, ev.Data.PreviousAttributes)

	var cust stripe.Customer
	require.NoError(t, json.Unmarshal(ev.Data.Raw, &cust))
	require.Equal(t, "pro", cust.Metadata["plan"])

	_, err = sc.Events.Get("evt_missing", nil)
	require.Equal(t, http.StatusNotFound, stripeErr(t, err).HTTPStatusCode)
}

func TestDashboardChanges(t *testing.T) {
	t.Parallel()
	fake, url := start(t, stripefake.Options{})
	sc := newClient(url, stripefake.DefaultAPIKey, nil)

	c, err := fake.DashboardCreate(stripefake.Customer{
		Email:    "dash@example.com",
		Name:     "Dash",
		Metadata: map[string]string{"source": "dashboard", "old": "x"},
	})
	require.NoError(t, err)
	require.NotEmpty(t, c.ID)

	got, err := sc.Customers.Get(c.ID, nil)
	require.NoError(t, err)
	require.Equal(t, "dash@example.com", got.Email)

	upd, err := fake.DashboardUpdate(c.ID, func(c *stripefake.Customer) {
		c.Email = "new@example.com"
		c.Metadata["source"] = "edited"
		delete(c.Metadata, "old")
		c.ID = "cus_ignored"
	})
	require.NoError(t, err)
	require.Equal(t, c.ID, upd.ID)
	require.Equal(t, "new@example.com", upd.Email)

	// A no-op edit emits nothing.
	_, err = fake.DashboardUpdate(c.ID, func(*stripefake.Customer) {})
	require.NoError(t, err)

	require.NoError(t, fake.DashboardDelete(c.ID))
	require.ErrorIs(t, fake.DashboardDelete(c.ID), stripefake.ErrNotFound)
	_, err = fake.DashboardUpdate(c.ID, func(*stripefake.Customer) {})
	require.True(t, errors.Is(err, stripefake.ErrNotFound))

	var types []string
	it := sc.Events.List(&stripe.EventListParams{})
	for it.Next() {
		ev := it.Event()
		types = append(types, string(ev.Type))
		require.Empty(t, ev.Request.ID, "dashboard events have no request")
		require.Empty(t, ev.Request.IdempotencyKey)
		require.Equal(t, c.ID, ev.GetObjectValue("id"))
	}
	require.NoError(t, it.Err())
	require.Equal(t, []string{"customer.deleted", "customer.updated", "customer.created"}, types, "newest first")

	upEv := fake.Events()[1]
	var raw struct {
		Request map[string]any `json:"request"`
		Data    struct {
			PreviousAttributes map[string]any `json:"previous_attributes"`
		} `json:"data"`
	}
	b, err := json.Marshal(upEv)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &raw))
	require.Equal(t, map[string]any{"id": nil, "idempotency_key": nil}, raw.Request)
	require.Equal(t, map[string]any{
		"email":    "dash@example.com",
		"metadata": map[string]any{"source": "dashboard", "old": "x"},
	}, raw.Data.PreviousAttributes)

	require.Zero(t, fake.CountCreates(), "dashboard creates are not API creates")
}

func TestListEventsFilters(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})
	for range 3 {
		c, err := sc.Customers.New(createParams("", "a@example.com", "u"))
		require.NoError(t, err)
		_, err = sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String("n")})
		require.NoError(t, err)
	}
	all := fake.Events()
	require.Len(t, all, 6)

	list := func(p *stripe.EventListParams) []string {
		var ids []string
		it := sc.Events.List(p)
		for it.Next() {
			ids = append(ids, it.Event().ID)
		}
		require.NoError(t, it.Err())
		return ids
	}
	require.Equal(t, []string{all[4].ID, all[2].ID, all[0].ID},
		list(&stripe.EventListParams{Type: stripe.String("customer.created")}))
	require.Len(t, list(&stripe.EventListParams{Type: stripe.String("customer.*")}), 6)
	require.Len(t, list(&stripe.EventListParams{Types: stripe.StringSlice([]string{"customer.updated", "customer.deleted"})}), 3)
	require.Len(t, list(&stripe.EventListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(2)}}), 6, "pages through")
}

func TestDashboardEnforcesAPILimits(t *testing.T) {
	t.Parallel()
	fake, _ := start(t, stripefake.Options{})
	_, err := fake.DashboardCreate(stripefake.Customer{Email: "nope"})
	require.Error(t, err)

	c, err := fake.DashboardCreate(stripefake.Customer{Email: "ok@example.com"})
	require.NoError(t, err)
	_, err = fake.DashboardUpdate(c.ID, func(c *stripefake.Customer) {
		c.Name = "changed"
		c.Metadata[strings.Repeat("k", 41)] = "v"
	})
	require.Error(t, err)
	stored, _ := fake.Customer(c.ID)
	require.Empty(t, stored.Name, "a refused edit changes nothing")
	require.Len(t, fake.Events(), 1)
	require.Len(t, fake.Customers(), 1)
}

func TestListEventsByDeliverySuccess(t *testing.T) {
	t.Parallel()
	r := newReceiver(t, testSecret)
	r.setStatus(func(ev stripe.Event, _ int) int {
		if ev.GetObjectValue("email") == "fail@example.com" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	opts := webhookOptions(r)
	opts.DeliveryAttempts = 1
	fake, sc := startWithClient(t, opts)
	ok, err := sc.Customers.New(createParams("", "ok@example.com", "u1"))
	require.NoError(t, err)
	bad, err := sc.Customers.New(createParams("", "fail@example.com", "u2"))
	require.NoError(t, err)
	waitDelivered(t, fake)

	objectIDs := func(success bool) []string {
		var ids []string
		it := sc.Events.List(&stripe.EventListParams{DeliverySuccess: stripe.Bool(success)})
		for it.Next() {
			ids = append(ids, it.Event().GetObjectValue("id"))
		}
		require.NoError(t, it.Err())
		return ids
	}
	require.Equal(t, []string{ok.ID}, objectIDs(true))
	require.Equal(t, []string{bad.ID}, objectIDs(false))
}
