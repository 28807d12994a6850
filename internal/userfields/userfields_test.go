package userfields_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	_ "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/testutil"
	"github.com/tandem-sync/tandem/internal/userfields"
)

var goodEmails = []string{
	"ada@example.com",
	"Ada.Lovelace@Example.COM",
	"o'brien+tag@xn--bcher-kva.example",
	"!#$%&'*+-/=?^_`{|}~@a-b.c0",
	strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 57),
}

var badEmails = []string{
	"",
	"ada",
	"ada@",
	"@example.com",
	"ada@example",
	"ada@example.",
	"ada@.example.com",
	"ada@example..com",
	"ada@-example.com",
	"ada@example-.com",
	"ada@example.123",
	"ada@[192.0.2.1]",
	"ada@exa_mple.com",
	"a@b@example.com",
	".ada@example.com",
	"ada.@example.com",
	"a..da@example.com",
	`"ada"@example.com`,
	"ada lovelace@example.com",
	"Ada <ada@example.com>",
	"ada@example.com (Ada)",
	"\u212Aate@example.com",
	"\u0130nga@example.com",
	"kate\u202E@example.com",
	"ka\u200Bte@example.com",
	"kate\x00@example.com",
	"kate\t@example.com",
	"jos\u00e9@example.com",
	"kate@b\u00fccher.example",
	"kate@example.com\xff",
	strings.Repeat("a", 65) + "@example.com",
	"a@" + strings.Repeat("b", 64) + ".com",
	strings.Repeat("a", 64) + "@" + strings.Repeat("b.", 94) + "com", // 255 bytes
}

func TestCheckEmail(t *testing.T) {
	t.Parallel()
	for _, e := range goodEmails {
		require.Empty(t, userfields.CheckEmail(e), "%q", e)
	}
	for _, e := range badEmails {
		errs := userfields.CheckEmail(e)
		require.Len(t, errs, 1, "%q", e)
		require.Equal(t, "email", errs[0].Field)
	}
}

// TestEmailKeyIsTheDatabaseKey: for every accepted email, EmailKey equals
// the users.live_email MariaDB computes (LOWER(email)) for a live row, and
// two accepted emails collide in the unique index exactly when their keys
// are equal. The refused ones show why the rule exists: MariaDB folds them
// onto ASCII addresses.
func TestEmailKeyIsTheDatabaseKey(t *testing.T) {
	t.Parallel()
	st, dsn := testutil.NewStore(t)
	ctx := context.Background()

	// Every printable ASCII character that may appear in an email.
	var all strings.Builder
	for c := byte(0x21); c < 0x7f; c++ {
		all.WriteByte(c)
	}
	var atext strings.Builder
	for _, c := range all.String() {
		if userfields.CheckEmail(string(c)+"@example.com") == nil {
			atext.WriteRune(c)
		}
	}
	require.Len(t, atext.String(), 26*2+10+19, "the local part's repertoire: %s", atext.String())
	rep := atext.String()
	emails := append([]string{rep[:40] + "@ABCDEFGHIJKLMNOPQRSTUVWXYZ.abcdefghijklmnopqrstuvwxyz-0123456789.Com",
		rep[40:] + "@example.com"}, goodEmails...)
	for i, e := range emails {
		require.Empty(t, userfields.CheckEmail(e), "%q", e)
		u, err := st.CreateUser(ctx, store.NewUser{Email: e, Name: fmt.Sprint("user ", i), Metadata: map[string]string{}}, nil)
		require.NoError(t, err, "%q", e)
		var live string
		db, err := sql.Open("mysql", dsn)
		require.NoError(t, err)
		require.NoError(t, db.QueryRowContext(ctx, "SELECT live_email FROM users WHERE id = ?", u.ID).Scan(&live))
		db.Close()
		require.Equal(t, userfields.EmailKey(e), live, "%q", e)
		require.Equal(t, strings.ToLower(e), userfields.EmailKey(e))
		// The same address in other cases is taken.
		_, err = st.CreateUser(ctx, store.NewUser{Email: strings.ToUpper(e), Name: "again", Metadata: map[string]string{}}, nil)
		require.ErrorIs(t, err, store.ErrConflict, "%q", e)
	}

	// What the rule keeps out: LOWER() maps these onto another address's key.
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	for _, e := range []string{"\u212Aate@example.com", "\u0130nga@example.com"} {
		var lowered string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT LOWER(?)", e).Scan(&lowered))
		require.True(t, utf8.ValidString(lowered))
		require.NotEmpty(t, userfields.CheckEmail(e), "%q lowers to %q", e, lowered)
	}
}

func TestEmailKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, "ada.lovelace@example.com", userfields.EmailKey("Ada.Lovelace@Example.COM"))
	// Only ASCII letters fold; other bytes are left alone.
	require.Equal(t, "\u212Aate@x.io", userfields.EmailKey("\u212AATE@X.IO"))
}

func TestCleanText(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "Ada Lovelace", "Zoë", "李小龍", "می\u200cخواهم", "\U0001F469\u200D\U0001F4BB", "tab-free € ✓", "\U0010FFFD"} {
		require.True(t, userfields.CleanText(s), "%q", s)
	}
	for _, s := range []string{"\x00", "a\tb", "a\nb", "a\rb", "\x7f", "\u0085", "\u200B", "\u200E", "\u200F",
		"\u202A", "\u202E", "\u2066", "\u2069", "\u2060", "\uFEFF", "\u00AD", "\u061C", "\u2028", "\u2029",
		"\U000E0041", "a\xffb", "\xed\xa0\x80"} {
		require.False(t, userfields.CleanText(s), "%q", s)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	require.Empty(t, userfields.Validate("ada@example.com", "Ada", "+44 20 7946 0000", map[string]string{"plan": "pro"}))
	require.Empty(t, userfields.Validate("ada@example.com", "Ada", "", nil))

	md := map[string]string{
		"tandem_user_id":        "x",
		"a[b]":                  "v",
		strings.Repeat("k", 41): "v",
		"long":                  strings.Repeat("v", 501),
		"nul\x00":               "v",
		"rlo":                   "x\u202Ey",
		"":                      "v",
		strings.Repeat("é", 40): strings.Repeat("€", 500), // limits count characters, not bytes
		"bad-utf8-value":        "\xff",
	}
	for i := range 45 {
		md[fmt.Sprintf("ok%02d", i)] = "v"
	}
	errs := userfields.Validate("\u212Aate@example.com", " ", "call me", md)
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	require.Equal(t, []string{"email", "metadata", "metadata", "metadata.a[b]",
		"metadata.bad-utf8-value", "metadata." + strings.Repeat("k", 41), "metadata.long", "metadata.nul\x00", "metadata.rlo", "metadata.tandem_user_id", "name", "phone"}, fields)
	require.Contains(t, errs[1].Message+errs[2].Message, "at most 50 keys (has 54)")
	require.Equal(t, "phone: "+errs[len(errs)-1].Message, errs[len(errs)-1].Error())

	// Removing a key: every rule but the text rule.
	require.Empty(t, userfields.CheckRemovedMetadataKey("bad\u202ekey"))
	require.NotEmpty(t, userfields.CheckMetadataKey("bad\u202ekey"))
	for _, k := range []string{"", strings.Repeat("k", 41), "a[b]", "tandem_user_id", "\xff"} {
		require.NotEmpty(t, userfields.CheckRemovedMetadataKey(k), "%q", k)
		require.Equal(t, userfields.CheckMetadataKey(k), userfields.CheckRemovedMetadataKey(k), "%q", k)
	}

	require.NotEmpty(t, userfields.CheckName(strings.Repeat("n", 257)))
	require.Empty(t, userfields.CheckName(strings.Repeat("ñ", 256)))
	require.NotEmpty(t, userfields.CheckName("A\u202Eda"))
	require.NotEmpty(t, userfields.CheckName("\xff"))
	require.NotEmpty(t, userfields.CheckPhone("+"+strings.Repeat("1", 20)))
	require.NotEmpty(t, userfields.CheckPhone("０１２")) // fullwidth digits
	require.Empty(t, userfields.CheckPhone("020 (7946) 00-00.1"))
}

// FuzzValidate: whatever the input, Validate does not panic, sorts its
// errors, and what it accepts holds the package's promises: ASCII emails
// whose key is their ASCII lower case, clean texts within their limits.
func FuzzValidate(f *testing.F) {
	for _, e := range append(goodEmails, badEmails...) {
		f.Add(e, "Ada", "+1 555", "plan", "pro")
	}
	f.Add("a@b.co", "A\u202Eb", "", "k\x00", "v\u200b")
	f.Add("a@b.co", "می\u200cخواهم", "", "tandem_x", "")
	f.Fuzz(func(t *testing.T, email, name, phone, key, value string) {
		errs := userfields.Validate(email, name, phone, map[string]string{key: value})
		for i := 1; i < len(errs); i++ {
			require.LessOrEqual(t, errs[i-1].Field, errs[i].Field)
		}
		if userfields.CheckEmail(email) == nil {
			for i := 0; i < len(email); i++ {
				require.Less(t, email[i], byte(0x7f), "%q", email)
				require.Greater(t, email[i], byte(0x20), "%q", email)
			}
			require.Equal(t, strings.ToLower(email), userfields.EmailKey(email))
			require.LessOrEqual(t, len(email), userfields.MaxEmailLen)
		}
		if userfields.CheckName(name) == nil {
			require.True(t, userfields.CleanText(name))
			require.LessOrEqual(t, utf8.RuneCountInString(name), userfields.MaxNameLen)
		}
		if userfields.CheckMetadataKey(key) == nil && userfields.CheckMetadataValue(key, value) == nil {
			require.True(t, userfields.CleanText(key) && userfields.CleanText(value))
			require.False(t, strings.HasPrefix(key, userfields.ReservedPrefix))
		}
	})
}
