package stripefake_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

func TestSearchCustomersByTagAndEmail(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})
	var ids []string
	for i := range 12 {
		p := &stripe.CustomerParams{Email: stripe.String(fmt.Sprintf("u%d@example.com", i))}
		if i%4 == 0 {
			p.AddMetadata("tandem_user_id", "user-a")
		}
		c, err := sc.Customers.New(p)
		require.NoError(t, err)
		ids = append(ids, c.ID)
	}
	_, err := sc.Customers.Del(ids[8], nil)
	require.NoError(t, err)

	search := func(q string, limit int64) []string {
		t.Helper()
		params := &stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: q, Limit: stripe.Int64(limit)}}
		it := sc.Customers.Search(params)
		var got []string
		for it.Next() {
			got = append(got, it.Customer().ID)
		}
		require.NoError(t, it.Err())
		return got
	}
	// Tagged, newest first, the deleted one left out, over pages of 1.
	require.Equal(t, []string{ids[4], ids[0]}, search(`metadata['tandem_user_id']:'user-a'`, 1))
	require.Equal(t, []string{ids[4], ids[0]}, search(`metadata["tandem_user_id"]:"user-a"`, 10))
	require.Empty(t, search(`metadata['tandem_user_id']:'user-b'`, 10))
	// Email case-insensitively; OR and AND.
	require.Equal(t, []string{ids[3]}, search(`email:'U3@Example.COM'`, 10))
	require.Equal(t, []string{ids[4], ids[3], ids[0]}, search(`email:'u3@example.com' OR metadata['tandem_user_id']:'user-a'`, 10))
	require.Equal(t, []string{ids[4]}, search(`email:'u4@example.com' AND metadata['tandem_user_id']:'user-a'`, 10))

	// One page by hand: Stripe's search_result shape.
	page := sc.Customers.Search(&stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{
		Query: `metadata['tandem_user_id']:'user-a'`, Limit: stripe.Int64(1), Single: true}})
	require.True(t, page.Next())
	res := page.CustomerSearchResult()
	require.True(t, res.HasMore)
	require.NotEmpty(t, res.NextPage)
	require.Equal(t, "/v1/customers/search", res.URL)

	// Bad queries are 400s naming the query.
	for _, q := range []string{"", "email:u3@example.com", `email~'u3'`, `created>'1'`, `email:'a' AND name:'b' OR phone:'c'`, `metadata['k':'v'`} {
		it := sc.Customers.Search(&stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: q}})
		require.False(t, it.Next(), q)
		se := stripeErr(t, it.Err())
		require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode, q)
		require.Equal(t, "query", se.Param, q)
	}
	require.Equal(t, 12, fake.CountCreates())
}

// The raw answer has next_page null on the last page and data [] when
// nothing matches, as Stripe's does.
func TestSearchResultShape(t *testing.T) {
	t.Parallel()
	_, base := start(t, stripefake.Options{})
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/customers/search?query="+url.QueryEscape(`email:'none@example.com'`), nil)
	req.Header.Set("Authorization", "Bearer "+stripefake.DefaultAPIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.JSONEq(t, `{"object":"search_result","data":[],"has_more":false,"next_page":null,"url":"/v1/customers/search"}`, string(body))
}

func TestSearchLagHidesNewCustomers(t *testing.T) {
	t.Parallel()
	clk := newClock()
	fake, sc := startWithClient(t, stripefake.Options{Clock: clk.Now})
	fake.SetSearchLag(time.Minute)
	p := &stripe.CustomerParams{Email: stripe.String("lag@example.com")}
	p.AddMetadata("tandem_user_id", "u1")
	c, err := sc.Customers.New(p)
	require.NoError(t, err)
	count := func() int {
		it := sc.Customers.Search(&stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: `metadata['tandem_user_id']:'u1'`}})
		n := 0
		for it.Next() {
			n++
		}
		require.NoError(t, it.Err())
		return n
	}
	require.Zero(t, count(), "search found a customer its index has not caught up with")
	it := sc.Customers.List(&stripe.CustomerListParams{Email: stripe.String("lag@example.com")})
	require.True(t, it.Next(), "the list is an exact read")
	require.Equal(t, c.ID, it.Customer().ID)
	clk.Advance(time.Minute)
	require.Equal(t, 1, count())
}

// Silent changes are visible to reads and send no event.
func TestSilentChangesEmitNoEvent(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, testSecret)
	fake, sc := startWithClient(t, stripefake.Options{WebhookURL: rcv.srv.URL, WebhookSecret: testSecret, RetryBackoff: time.Millisecond})
	past := time.Date(2019, 5, 1, 10, 0, 0, 0, time.UTC)
	c, err := fake.SilentCreate(stripefake.Customer{Email: "old@example.com", Name: "Old", Created: past})
	require.NoError(t, err)
	require.Equal(t, past, c.Created)
	_, err = fake.SilentUpdate(c.ID, func(c *stripefake.Customer) { c.Name = "Drifted" })
	require.NoError(t, err)

	got, err := sc.Customers.Get(c.ID, nil)
	require.NoError(t, err)
	require.Equal(t, "Drifted", got.Name)
	require.Equal(t, past.Unix(), got.Created)

	require.NoError(t, fake.SilentDelete(c.ID))
	require.ErrorIs(t, fake.SilentDelete(c.ID), stripefake.ErrNotFound)
	_, err = fake.SilentUpdate(c.ID, func(*stripefake.Customer) {})
	require.ErrorIs(t, err, stripefake.ErrNotFound)
	_, err = fake.SilentCreate(stripefake.Customer{Email: "not an email"})
	require.Error(t, err)

	// A dashboard change afterwards is delivered, and is the only event.
	_, err = fake.DashboardCreate(stripefake.Customer{Email: "new@example.com"})
	require.NoError(t, err)
	require.NoError(t, fake.WaitDelivered(t.Context()))
	require.Len(t, fake.Events(), 1)
	require.Len(t, rcv.accepted(), 1)
	require.Equal(t, 0, fake.CountCreates())
}
