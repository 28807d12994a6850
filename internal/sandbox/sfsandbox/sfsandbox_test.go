package sfsandbox_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
	"github.com/tandem-sync/tandem/internal/sandbox/sfsandbox"
)

// TestUIEditsContactsAndSendsOutboundMessages: contacts created and edited
// from the UI's JSON API are stored and notified to the listener (with its
// token); deletes and merges are stored and not notified; Outbound Messages
// can be turned off; bad input and cross-origin posts change nothing.
func TestUIEditsContactsAndSendsOutboundMessages(t *testing.T) {
	t.Parallel()
	var got atomic.Int32
	var token atomic.Value
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		token.Store(r.URL.Query().Get("token"))
		w.Header().Set("Content-Type", salesforce.AckContentType)
		_, _ = w.Write(salesforce.AckResponse())
	}))
	defer rcv.Close()
	sb := sfsandbox.New(sfsandbox.Config{OutboundURL: rcv.URL, OutboundToken: "tok"})
	defer sb.Close()
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	post := func(path, body string, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := post("/_sandbox/contacts", `{"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com"}`)
	require.Equal(t, 200, code, body)
	var c struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	code, body = post("/_sandbox/contacts", `{"last_name":"Bob","email":"bob@example.com"}`)
	require.Equal(t, 200, code, body)
	var b struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(body), &b))
	code, _ = post("/_sandbox/contacts/"+c.ID, `{"last_name":"King"}`)
	require.Equal(t, 200, code)
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	require.EqualValues(t, 3, got.Load(), "two creates and an edit")
	require.Equal(t, "tok", token.Load())
	stored, ok := sb.Fake.Contact(c.ID)
	require.True(t, ok)
	require.Equal(t, "King", stored.LastName)
	require.Equal(t, "ada@example.com", stored.Email, "absent fields are kept")

	code, _ = post("/_sandbox/contacts", `{"email":"no-last-name@example.com"}`)
	require.Equal(t, 400, code, "LastName is required")
	code, _ = post("/_sandbox/contacts/"+c.ID, `{"nickname":"x"}`)
	require.Equal(t, 400, code)
	code, _ = post("/_sandbox/contacts/"+c.ID, `{"last_name":"Evil"}`, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, 403, code)

	code, _ = post("/_sandbox/outbound", `{"off":true}`)
	require.Equal(t, 200, code)
	code, _ = post("/_sandbox/contacts/"+c.ID, `{"phone":"+44 1"}`)
	require.Equal(t, 200, code)
	code, _ = post("/_sandbox/contacts/"+b.ID+"/merge", `{"into":"`+c.ID+`"}`)
	require.Equal(t, 200, code)
	require.NoError(t, sb.Fake.WaitDelivered(ctx))
	require.EqualValues(t, 3, got.Load(), "nothing sent while off")
	victim, _ := sb.Fake.Contact(b.ID)
	require.True(t, victim.IsDeleted)
	require.Equal(t, c.ID, victim.MasterRecordID)
	stored, _ = sb.Fake.Contact(c.ID)
	require.Equal(t, "King", stored.LastName)

	resp, err := http.Get(srv.URL + "/_sandbox/contacts")
	require.NoError(t, err)
	var list []map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Len(t, list, 2)
	resp, err = http.Get(srv.URL + "/_sandbox/")
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(page), "merged into "+c.ID)
}
