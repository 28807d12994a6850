package webhook

import (
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
)

// Change is the store's view of a verified event, exactly as the webhook
// applies it: the remote state validated as the REST API validates a user
// (an invalid one carries the reason), hashed as the pushing side hashes
// it. Other paths that apply remote states by the inbound rules (tandemctl
// reconcile) use it, so the rules cannot differ.
func Change(ev integrations.InboundEvent) store.InboundChange { return change(ev) }

// Refetch is the store.RefetchFunc the webhook passes with ev: it re-reads
// ev's remote object through recv (within FetchTimeout).
func Refetch(recv integrations.WebhookReceiver, ev integrations.InboundEvent) store.RefetchFunc {
	return (&handler{recv: recv}).refetch(ev)
}
