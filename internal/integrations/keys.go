package integrations

import (
	"strconv"
	"strings"
)

// KeyPrefix starts every idempotency key Tandem sends (contract). The webhook
// treats an inbound event caused by a request with such a key as an echo of
// Tandem's own push.
const KeyPrefix = "tandem-"

// CreateKey is the idempotency key of creating the remote object for a user:
// tandem-<provider>-create-<user id> (contract). It depends only on the user,
// so a redelivered message never makes a second remote object.
func CreateKey(provider, userID string) string {
	return KeyPrefix + provider + "-create-" + userID
}

// UpdateKey is the idempotency key of pushing one version of a user:
// tandem-<provider>-update-<user id>-v<version> (contract).
func UpdateKey(provider, userID string, version int64) string {
	return KeyPrefix + provider + "-update-" + userID + "-v" + strconv.FormatInt(version, 10)
}

// AttemptKey is key made unique to one push attempt (Link.Attempt):
// <key>-a<attempt>, or key itself for attempt 0. A provider that saves the
// answer of a request under its key (Stripe keeps a 5xx for 24 h) is then
// never asked the same key twice with an answer Tandem could not use.
func AttemptKey(key string, attempt int64) string {
	if attempt <= 0 {
		return key
	}
	return key + "-a" + strconv.FormatInt(attempt, 10)
}

// DeleteKey is the idempotency key of deleting a user's remote object:
// tandem-<provider>-delete-<user id> (contract).
func DeleteKey(provider, userID string) string {
	return KeyPrefix + provider + "-delete-" + userID
}

// IsTandemKey reports whether an idempotency key was sent by Tandem (it starts
// with KeyPrefix).
func IsTandemKey(key string) bool { return strings.HasPrefix(key, KeyPrefix) }
