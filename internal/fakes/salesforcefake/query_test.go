package salesforcefake_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
)

const queryPath = "/services/data/v60.0/query?q="

type queryAnswer struct {
	TotalSize      int              `json:"totalSize"`
	Done           bool             `json:"done"`
	NextRecordsURL string           `json:"nextRecordsUrl"`
	Records        []map[string]any `json:"records"`
}

func (c *client) query(soql string, header ...string) (answer, queryAnswer) {
	c.t.Helper()
	a := c.do(http.MethodGet, queryPath+url.QueryEscape(soql), nil, header...)
	var q queryAnswer
	if a.status == http.StatusOK {
		require.NoError(c.t, json.Unmarshal(a.body, &q))
	}
	return a, q
}

func TestQueryContactsByExternalIDAndEmail(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	for i := range 5 {
		a := c.do(http.MethodPatch, contactPath+"Tandem_User_Id__c/u"+fmt.Sprint(i), map[string]any{
			"LastName": fmt.Sprintf("L%d", i), "Email": fmt.Sprintf("U%d@Example.com", i)})
		require.Equal(t, http.StatusCreated, a.status, string(a.body))
	}
	untagged, err := fake.UICreate(salesforcefake.Contact{LastName: "Old", Email: "old@example.com"})
	require.NoError(t, err)
	gone, err := fake.UICreate(salesforcefake.Contact{LastName: "Gone", Email: "u1@example.com"})
	require.NoError(t, err)
	require.NoError(t, fake.UIDelete(gone.ID))

	a, q := c.query("SELECT Id, Email, Tandem_User_Id__c FROM Contact WHERE Tandem_User_Id__c = 'u3'")
	require.Equal(t, http.StatusOK, a.status, string(a.body))
	require.Equal(t, 1, q.TotalSize)
	require.True(t, q.Done)
	require.Equal(t, "U3@Example.com", q.Records[0]["Email"])
	require.Equal(t, "u3", q.Records[0]["Tandem_User_Id__c"])
	require.Contains(t, q.Records[0], "attributes")
	require.NotContains(t, q.Records[0], "LastName", "only the fields selected")

	// Email ignores case; the deleted contact is left out (queryAll has it).
	_, q = c.query("select Id from Contact where Email = 'u1@example.COM'")
	require.Equal(t, 1, q.TotalSize)
	_, q = c.query("SELECT Id, Email FROM Contact WHERE (Tandem_User_Id__c = 'u2' OR Email IN ('old@example.com', 'nobody@example.com'))")
	require.Equal(t, 2, q.TotalSize)
	require.Equal(t, untagged.ID, q.Records[1]["Id"])
	_, q = c.query("SELECT Id FROM Contact WHERE Tandem_User_Id__c = null")
	require.Equal(t, 1, q.TotalSize)
	_, q = c.query("SELECT Id FROM Contact WHERE Tandem_User_Id__c != null AND Email LIKE 'u%' ORDER BY Email DESC LIMIT 2")
	require.Equal(t, 2, q.TotalSize)
	a = c.do(http.MethodGet, "/services/data/v60.0/queryAll?q="+url.QueryEscape("SELECT Id, IsDeleted FROM Contact WHERE Email = 'u1@example.com'"), nil)
	require.Equal(t, http.StatusOK, a.status)
	require.Contains(t, string(a.body), `"IsDeleted":true`)

	for _, bad := range []string{
		"SELECT Id FROM Account",
		"SELECT Nope__c FROM Contact",
		"SELECT Id FROM Contact WHERE Email = 'a' AND LastName = 'b' OR Phone = 'c'",
		"SELECT Id FROM Contact WHERE Email > 'a'",
		"SELECT Id FROM Contact WHERE LastModifiedDate > 'yesterday'",
		"DELETE FROM Contact",
	} {
		a, _ := c.query(bad)
		require.Equal(t, http.StatusBadRequest, a.status, bad)
		require.Equal(t, "MALFORMED_QUERY", a.errors(t)[0].ErrorCode, bad)
	}
}

func TestQueryPagesWithNextRecordsURL(t *testing.T) {
	t.Parallel()
	fake, c := start(t, salesforcefake.Options{})
	for i := range 450 {
		_, err := fake.UICreate(salesforcefake.Contact{LastName: fmt.Sprint("L", i), Email: fmt.Sprintf("p%d@example.com", i)})
		require.NoError(t, err)
	}
	a, q := c.query("SELECT Id, Email FROM Contact", "Sforce-Query-Options", "batchSize=200")
	require.Equal(t, http.StatusOK, a.status, string(a.body))
	require.Equal(t, 450, q.TotalSize)
	require.False(t, q.Done)
	require.Len(t, q.Records, 200)
	seen := map[any]bool{}
	for _, r := range q.Records {
		seen[r["Id"]] = true
	}
	pages := 1
	for !q.Done {
		a = c.do(http.MethodGet, q.NextRecordsURL, nil)
		require.Equal(t, http.StatusOK, a.status, string(a.body))
		q = queryAnswer{}
		require.NoError(t, json.Unmarshal(a.body, &q))
		for _, r := range q.Records {
			seen[r["Id"]] = true
		}
		pages++
	}
	require.Equal(t, 3, pages)
	require.Len(t, seen, 450)
	require.Empty(t, q.NextRecordsURL)

	a = c.do(http.MethodGet, "/services/data/v60.0/query/01gNOPE-200", nil)
	require.Equal(t, http.StatusBadRequest, a.status)
	require.Equal(t, "INVALID_QUERY_LOCATOR", a.errors(t)[0].ErrorCode)
}
