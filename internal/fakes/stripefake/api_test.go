package stripefake_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	stripe "github.com/stripe/stripe-go/v76"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

func TestCustomerLifecycle(t *testing.T) {
	t.Parallel()
	clk := newClock()
	fake, sc := startWithClient(t, stripefake.Options{Clock: clk.Now})

	params := &stripe.CustomerParams{
		Email: stripe.String("ada@example.com"),
		Name:  stripe.String("Ada Lovelace"),
		Phone: stripe.String("+441234567"),
	}
	params.AddMetadata("tandem_user_id", "u1")
	params.AddMetadata("plan", "pro")
	created, err := sc.Customers.New(params)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(created.ID, "cus_"), created.ID)
	require.Equal(t, "customer", created.Object)
	require.Equal(t, "ada@example.com", created.Email)
	require.Equal(t, "Ada Lovelace", created.Name)
	require.Equal(t, "+441234567", created.Phone)
	require.Equal(t, map[string]string{"tandem_user_id": "u1", "plan": "pro"}, created.Metadata)
	require.Equal(t, clk.Now().Unix(), created.Created)
	require.False(t, created.Livemode)
	require.False(t, created.Deleted)
	require.Equal(t, stripe.CustomerTaxExemptNone, created.TaxExempt)
	require.NotEmpty(t, created.LastResponse.RequestID)
	require.Equal(t, http.StatusOK, created.LastResponse.StatusCode)

	got, err := sc.Customers.Get(created.ID, nil)
	require.NoError(t, err)
	require.Equal(t, created.Email, got.Email)
	require.Equal(t, created.Metadata, got.Metadata)

	// Update: metadata merges, "" deletes a key, "" unsets a field.
	upd := &stripe.CustomerParams{Name: stripe.String("Ada King"), Phone: stripe.String("")}
	upd.AddMetadata("plan", "")
	upd.AddMetadata("team", "analytical")
	updated, err := sc.Customers.Update(created.ID, upd)
	require.NoError(t, err)
	require.Equal(t, "Ada King", updated.Name)
	require.Empty(t, updated.Phone)
	require.Equal(t, "ada@example.com", updated.Email)
	require.Equal(t, map[string]string{"tandem_user_id": "u1", "team": "analytical"}, updated.Metadata)

	stored, ok := fake.Customer(created.ID)
	require.True(t, ok)
	require.Equal(t, "Ada King", stored.Name)
	require.False(t, stored.Deleted)

	del, err := sc.Customers.Del(created.ID, nil)
	require.NoError(t, err)
	require.True(t, del.Deleted)
	require.Equal(t, created.ID, del.ID)

	// A deleted customer is still retrievable, as a stub.
	gone, err := sc.Customers.Get(created.ID, nil)
	require.NoError(t, err)
	require.True(t, gone.Deleted)
	require.Empty(t, gone.Email)

	_, err = sc.Customers.Del(created.ID, nil)
	se := stripeErr(t, err)
	require.Equal(t, http.StatusNotFound, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeInvalidRequest, se.Type)
	require.Equal(t, stripe.ErrorCodeResourceMissing, se.Code)
	require.Equal(t, fmt.Sprintf("No such customer: '%s'", created.ID), se.Msg)
	require.NotEmpty(t, se.RequestID)

	_, err = sc.Customers.Update(created.ID, &stripe.CustomerParams{Name: stripe.String("x")})
	require.Equal(t, http.StatusNotFound, stripeErr(t, err).HTTPStatusCode)

	_, err = sc.Customers.Get("cus_doesnotexist", nil)
	se = stripeErr(t, err)
	require.Equal(t, http.StatusNotFound, se.HTTPStatusCode)
	require.Equal(t, "id", se.Param)

	all := fake.Customers()
	require.Len(t, all, 1)
	require.True(t, all[0].Deleted)
	require.Equal(t, 1, fake.CountCreates())
}

func TestListCustomers(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})

	var ids []string // creation order
	for i := range 25 {
		email := fmt.Sprintf("user%d@example.com", i)
		if i%5 == 0 {
			email = "shared@example.com"
		}
		c, err := sc.Customers.New(&stripe.CustomerParams{Email: stripe.String(email)})
		require.NoError(t, err)
		ids = append(ids, c.ID)
	}
	_, err := sc.Customers.Del(ids[3], nil)
	require.NoError(t, err)

	// The iterator walks every page, newest first, without the deleted one.
	var listed []string
	it := sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(7)}})
	for it.Next() {
		listed = append(listed, it.Customer().ID)
	}
	require.NoError(t, it.Err())
	var want []string
	for i := len(ids) - 1; i >= 0; i-- {
		if i != 3 {
			want = append(want, ids[i])
		}
	}
	require.Equal(t, want, listed)

	// One page at a time.
	first := sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(10), Single: true}})
	require.True(t, first.Next())
	page := first.CustomerList()
	require.True(t, page.HasMore)
	require.Len(t, page.Data, 10)
	require.Equal(t, "/v1/customers", page.URL)
	require.Equal(t, want[:10], customerIDs(page.Data))

	next := sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{
		Limit: stripe.Int64(10), StartingAfter: stripe.String(want[9]), Single: true,
	}})
	require.True(t, next.Next())
	require.Equal(t, want[10:20], customerIDs(next.CustomerList().Data))

	back := sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{
		Limit: stripe.Int64(3), EndingBefore: stripe.String(want[10]), Single: true,
	}})
	require.True(t, back.Next())
	require.Equal(t, want[7:10], customerIDs(back.CustomerList().Data))
	require.True(t, back.CustomerList().HasMore)

	// Email filter, exact match.
	var shared []string
	it = sc.Customers.List(&stripe.CustomerListParams{Email: stripe.String("shared@example.com")})
	for it.Next() {
		shared = append(shared, it.Customer().ID)
	}
	require.NoError(t, it.Err())
	require.Equal(t, []string{ids[20], ids[15], ids[10], ids[5], ids[0]}, shared)

	// Bad limit and unknown cursor.
	it = sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(101)}})
	require.False(t, it.Next())
	se := stripeErr(t, it.Err())
	require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode)
	require.Equal(t, "limit", se.Param)

	it = sc.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{StartingAfter: stripe.String("cus_nope")}})
	require.False(t, it.Next())
	require.Equal(t, "starting_after", stripeErr(t, it.Err()).Param)

	require.Equal(t, 25, fake.CountCreates())
}

func customerIDs(cs []*stripe.Customer) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	fake, url := start(t, stripefake.Options{APIKey: "sk_test_right"})

	sc := newClient(url, "sk_test_wrongkey1234", nil)
	_, err := sc.Customers.New(&stripe.CustomerParams{Email: stripe.String("a@example.com")})
	se := stripeErr(t, err)
	require.Equal(t, http.StatusUnauthorized, se.HTTPStatusCode)
	require.Equal(t, stripe.ErrorTypeInvalidRequest, se.Type)
	require.Equal(t, "Invalid API Key provided: sk_test_********1234", se.Msg)
	require.NotEmpty(t, se.RequestID)

	// No key at all, with a raw request.
	resp, body := do(t, http.MethodGet, url+"/v1/customers", "", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Request-Id"))
	require.Contains(t, errorBody(t, body).Message, "You did not provide an API key")

	// Basic auth with the key as user name, as curl -u sends it.
	req, err := http.NewRequest(http.MethodGet, url+"/v1/customers", nil)
	require.NoError(t, err)
	req.SetBasicAuth("sk_test_right", "")
	basic, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, basic.Body.Close())
	require.Equal(t, http.StatusOK, basic.StatusCode)

	require.Empty(t, fake.Customers())
	require.Equal(t, 2, fake.Stats().Unauthorized)
	require.Zero(t, fake.CountCreates())
}

func TestValidationErrors(t *testing.T) {
	t.Parallel()
	_, sc := startWithClient(t, stripefake.Options{})

	manyKeys := &stripe.CustomerParams{}
	for i := range 51 {
		manyKeys.AddMetadata(fmt.Sprintf("k%d", i), "v")
	}
	longKey := &stripe.CustomerParams{}
	longKey.AddMetadata(strings.Repeat("k", 41), "v")
	longValue := &stripe.CustomerParams{}
	longValue.AddMetadata("k", strings.Repeat("v", 501))
	unknown := &stripe.CustomerParams{}
	unknown.AddExtra("favourite_colour", "blue")
	unknownNested := &stripe.CustomerParams{}
	unknownNested.AddExtra("address[planet]", "Mars")

	for name, tc := range map[string]struct {
		params *stripe.CustomerParams
		code   stripe.ErrorCode
		param  string
		msg    string
	}{
		"51 metadata keys":   {manyKeys, "", "metadata", "Metadata can have up to 50 keys, but you've set 51."},
		"41-char key":        {longKey, "", "metadata", "must be a string under 40 characters"},
		"501-char value":     {longValue, "", "metadata", "must be a string under 500 characters"},
		"unknown parameter":  {unknown, stripe.ErrorCodeParameterUnknown, "favourite_colour", "Received unknown parameter: favourite_colour"},
		"unknown nested key": {unknownNested, stripe.ErrorCodeParameterUnknown, "address[planet]", "Received unknown parameter: address[planet]"},
		"invalid email":      {&stripe.CustomerParams{Email: stripe.String("not-an-email")}, stripe.ErrorCodeEmailInvalid, "email", "Invalid email address: not-an-email"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := sc.Customers.New(tc.params)
			se := stripeErr(t, err)
			require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode)
			require.Equal(t, stripe.ErrorTypeInvalidRequest, se.Type)
			require.Equal(t, tc.code, se.Code)
			require.Equal(t, tc.param, se.Param)
			require.Contains(t, se.Msg, tc.msg)
			var typed *stripe.InvalidRequestError
			require.ErrorAs(t, se.Err, &typed)
		})
	}
}

func TestMetadataLimitAppliesAfterMerge(t *testing.T) {
	t.Parallel()
	fake, sc := startWithClient(t, stripefake.Options{})

	params := &stripe.CustomerParams{}
	for i := range 50 {
		params.AddMetadata(fmt.Sprintf("k%d", i), "v")
	}
	c, err := sc.Customers.New(params)
	require.NoError(t, err)

	one := &stripe.CustomerParams{}
	one.AddMetadata("k50", "v")
	_, err = sc.Customers.Update(c.ID, one)
	se := stripeErr(t, err)
	require.Equal(t, http.StatusBadRequest, se.HTTPStatusCode)
	require.Equal(t, "metadata", se.Param)

	// Replacing a key keeps the count at 50 and is fine.
	swap := &stripe.CustomerParams{}
	swap.AddMetadata("k0", "")
	swap.AddMetadata("k50", "v")
	_, err = sc.Customers.Update(c.ID, swap)
	require.NoError(t, err)

	stored, _ := fake.Customer(c.ID)
	require.Len(t, stored.Metadata, 50)
	require.Contains(t, stored.Metadata, "k50")
	require.NotContains(t, stored.Metadata, "k0")
}

func TestRequestIDAndUnknownRoutes(t *testing.T) {
	t.Parallel()
	_, base := start(t, stripefake.Options{})

	resp, body := do(t, http.MethodGet, base+"/v1/charges", stripefake.DefaultAPIKey, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Request-Id"), "req_"))
	require.Contains(t, errorBody(t, body).Message, "Unrecognized request URL (GET: /v1/charges)")

	resp, _ = do(t, http.MethodPut, base+"/v1/customers", stripefake.DefaultAPIKey, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	resp, body = do(t, http.MethodPost, base+"/v1/customers", stripefake.DefaultAPIKey,
		url.Values{"email": {"raw@example.com"}, "metadata[a]": {"1"}})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Request-Id"), "req_"))
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var raw map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	// Unset fields are null, as on Stripe.
	for _, k := range []string{"name", "phone", "description", "address", "currency", "discount", "shipping", "test_clock"} {
		v, ok := raw[k]
		require.True(t, ok, "field %s missing", k)
		require.Nil(t, v, "field %s", k)
	}
	require.Equal(t, map[string]any{"a": "1"}, raw["metadata"])
	require.Equal(t, false, raw["livemode"])
}

// do sends a raw form request and returns the response and its body.
func do(t *testing.T, method, target, key string, form url.Values) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

type errorFields struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

func errorBody(t *testing.T, body []byte) errorFields {
	t.Helper()
	var e struct {
		Error *errorFields `json:"error"`
	}
	require.NoError(t, json.Unmarshal(body, &e), string(body))
	require.NotNil(t, e.Error, string(body))
	return *e.Error
}

func TestHandlerListenAndClose(t *testing.T) {
	t.Parallel()
	fake := stripefake.New(stripefake.Options{})
	t.Cleanup(fake.Close)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	sc := newClient(srv.URL, stripefake.DefaultAPIKey, nil)
	_, err := sc.Customers.New(&stripe.CustomerParams{Email: stripe.String("h@example.com")})
	require.NoError(t, err)
	require.Empty(t, fake.URL())

	base, err := fake.Listen("127.0.0.1:0")
	require.NoError(t, err)
	require.Equal(t, base, fake.URL())
	_, err = fake.Listen("127.0.0.1:0")
	require.Error(t, err, "one listener per Server")

	it := newClient(base, stripefake.DefaultAPIKey, nil).Customers.List(nil)
	require.True(t, it.Next())
	require.NoError(t, it.Err())
	require.Equal(t, "h@example.com", it.Customer().Email)

	fake.Close()
	fake.Close()
	_, err = fake.Listen("127.0.0.1:0")
	require.Error(t, err)
	_, err = http.Get(base + "/v1/customers")
	require.Error(t, err, "the listener is gone")
}

func TestIdempotencyKeyTooLong(t *testing.T) {
	t.Parallel()
	fake, base := start(t, stripefake.Options{})
	req, err := http.NewRequest(http.MethodPost, base+"/v1/customers", strings.NewReader("email=a%40example.com"))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+stripefake.DefaultAPIKey)
	req.Header.Set("Idempotency-Key", strings.Repeat("k", 256))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, errorBody(t, body).Message, "Idempotency-Key")
	require.Empty(t, fake.Customers())
	require.Equal(t, []string{"a@example.com"}, fake.Requests()[0].Params["email"])
}
