package salesforce

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/integrations"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	errBody := func(code, msg string) []byte {
		return []byte(`[{"message":"` + msg + `","errorCode":"` + code + `","fields":[]}]`)
	}
	cases := []struct {
		name      string
		r         response
		permanent bool
		notFound  bool
		wait      time.Duration // RateLimited with this wait; 0: not rate limited
		msg       string
	}{
		{name: "400", r: response{status: 400, body: errBody("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]")},
			permanent: true, msg: "salesforce 400 REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]"},
		{name: "single object body", r: response{status: 404, body: []byte(`{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}`)},
			permanent: true, notFound: true, msg: "salesforce 404 NOT_FOUND"},
		{name: "deleted", r: response{status: 404, body: errBody("ENTITY_IS_DELETED", "entity is deleted")}, permanent: true, notFound: true},
		{name: "401", r: response{status: 401, body: errBody("INVALID_SESSION_ID", "Session expired or invalid")}, permanent: true},
		{name: "limit", r: response{status: 403, body: errBody("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")}, wait: LimitBackoff},
		{name: "limit with a longer Retry-After", r: response{status: 403, header: http.Header{"Retry-After": {"3600"}},
			body: errBody("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")}, wait: time.Hour},
		{name: "other 403", r: response{status: 403, body: errBody("INSUFFICIENT_ACCESS", "no")}, permanent: true},
		{name: "429", r: response{status: 429}, wait: LimitBackoff},
		{name: "500", r: response{status: 500, body: errBody("UNKNOWN_EXCEPTION", "boom")}},
		{name: "503 html", r: response{status: 503, body: []byte("<html>maintenance</html>")}, msg: "unexpected answer"},
		{name: "lock", r: response{status: 400, body: errBody("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")}},
		{name: "4xx html", r: response{status: 404, body: []byte("<html>not here</html>")}, msg: "salesforce 404 Not Found: unexpected answer"},
		{name: "300", r: response{status: 300, body: []byte(`["/services/data/v60.0/sobjects/Contact/003A","/services/data/v60.0/sobjects/Contact/003B"]`)},
			permanent: true, msg: "003A, /services/data/v60.0/sobjects/Contact/003B"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := classify(tc.r)
			require.Error(t, err)
			require.Equal(t, tc.permanent, integrations.IsPermanent(err), "%v", err)
			require.Equal(t, tc.notFound, errors.Is(err, integrations.ErrNotFound), "%v", err)
			wait, limited := integrations.RetryAfter(err)
			require.Equal(t, tc.wait != 0, limited, "%v", err)
			require.Equal(t, tc.wait, wait)
			if tc.msg != "" {
				require.Contains(t, err.Error(), tc.msg)
			}
		})
	}
	require.NoError(t, classify(response{status: 204}))
	require.NoError(t, classify(response{status: 201}))
}

func TestParseLimitInfo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		h           string
		used, limit float64
		ok          bool
	}{
		{"api-usage=18/15000", 18, 15000, true},
		{"api-usage=10018/100000; api-bursts=1/750", 10018, 100000, true},
		{"per-app-api-usage=17/250(appName=x); api-usage=25/5000", 25, 5000, true},
		{"", 0, 0, false},
		{"api-usage=18", 0, 0, false},
		{"api-usage=a/b", 0, 0, false},
	} {
		used, limit, ok := parseLimitInfo(tc.h)
		require.Equal(t, tc.ok, ok, tc.h)
		require.Equal(t, tc.used, used, tc.h)
		require.Equal(t, tc.limit, limit, tc.h)
	}
}

func TestSplitName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, first, last, back string }{
		{"Ada Lovelace", "Ada", "Lovelace", "Ada Lovelace"},
		{"Cher", "", "Cher", "Cher"},
		{"Ada King Lovelace", "Ada", "King Lovelace", "Ada King Lovelace"},
		{"  Ada  Lovelace ", "Ada", "Lovelace", "Ada Lovelace"},
		{"Ada\tLovelace", "Ada", "Lovelace", "Ada Lovelace"},
		{"", "", "", ""},
		{"José María Ñúñez", "José", "María Ñúñez", "José María Ñúñez"},
	} {
		first, last := splitName(tc.name)
		require.Equal(t, tc.first, first, tc.name)
		require.Equal(t, tc.last, last, tc.name)
		require.Equal(t, tc.back, joinName(first, last), tc.name)
	}
}

func TestSameID(t *testing.T) {
	t.Parallel()
	require.True(t, SameID("001D000000IRFma", "001D000000IRFmaIAH"))
	require.True(t, SameID("001D000000IRFmaIAH", "001D000000IRFmaIAH"))
	require.False(t, SameID("001D000000IRFma", "001D000000IRFMa"), "15-character ids are case-sensitive")
	require.False(t, SameID("", ""))
	require.False(t, SameID("abc", "abcd"))
	require.True(t, SameID("abc", "abc"))
}
