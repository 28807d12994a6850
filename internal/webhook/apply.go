package webhook

import (
	"context"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
)

// Apply applies one verified event of provider, read by recv (its
// ParseWebhook, or its integrations.ChangeLog), exactly as the webhook
// route does: store.ApplyInbound with the state mapped and validated as the
// API validates, re-reading the object through recv.Fetch when the store
// asks (recv nil: never re-read; the store then decides from the event
// alone). noCreate is TANDEM_INBOUND_CREATE=false. Other paths that apply
// remote states by the inbound rules (catch-up, tandemctl reconcile) use
// it, so the rules cannot differ. An InboundIgnored event must not be
// passed. Check the event with CheckEvent first. It returns
// ApplyInbound's result and error.
func Apply(ctx context.Context, st Store, provider string, recv integrations.WebhookReceiver, ev integrations.InboundEvent, noCreate bool) (store.InboundResult, error) {
	ch := change(ev)
	ch.NoCreate = noCreate
	var re store.RefetchFunc
	if recv != nil {
		re = refetch(recv, ev)
	}
	return st.ApplyInbound(ctx, provider, ch, re)
}

// CheckEvent refuses an event whose ids cannot be keys (a receiver's bug,
// or a hostile sender holding the secret): the webhook answers it 400, the
// catch-up skips it.
func CheckEvent(ev integrations.InboundEvent) error { return checkEvent(ev) }

// refetch re-reads ev's remote object through recv, as the store needs it.
func refetch(recv integrations.WebhookReceiver, ev integrations.InboundEvent) store.RefetchFunc {
	return func(ctx context.Context) (store.RemoteState, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
		defer cancel()
		obj, found, err := recv.Fetch(ctx, ev.RemoteID)
		if err != nil || !found {
			return store.RemoteState{}, false, err
		}
		return stateOf(obj.Customer, ev.WithoutMetadata || obj.WithoutMetadata), true, nil
	}
}
