package config

import (
	"net/url"
	"strings"
)

// Redacted replaces a password (or a secret query value) in what RedactURL
// returns.
const Redacted = "xxxxx"

// secretParams are query parameters whose values are secrets (the
// Salesforce Outbound Message URL carries ?token=…).
var secretParams = []string{"password", "passwd", "pass", "pwd", "token", "secret", "key", "api_key", "access_token", "client_secret"}

// RedactURL returns rawURL fit for a log line or an error message: the
// password of its user information and the values of secret-looking query
// parameters are replaced by Redacted. A URL that does not parse loses its
// whole user information (everything between "://" and the last "@" of
// the authority), so a malformed URL never prints its password either.
func RedactURL(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), Redacted)
			}
		}
		if u.RawQuery != "" {
			q := u.Query()
			changed := false
			for key := range q {
				if isSecretParam(key) {
					q.Set(key, Redacted)
					changed = true
				}
			}
			if changed {
				u.RawQuery = q.Encode()
			}
		}
		return u.String()
	}
	rest, scheme := rawURL, ""
	if i := strings.Index(rawURL, "://"); i >= 0 {
		scheme, rest = rawURL[:i+3], rawURL[i+3:]
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = Redacted + rest[at:]
	}
	if q := strings.IndexAny(rest, "?#"); q >= 0 {
		// The query and fragment of an unparsable URL may hold a token.
		rest = rest[:q]
	}
	return scheme + rest
}

func isSecretParam(key string) bool {
	key = strings.ToLower(key)
	for _, s := range secretParams {
		if key == s {
			return true
		}
	}
	return false
}
