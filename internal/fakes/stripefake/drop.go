package stripefake

// SetDropDeliveries makes the fake lose the webhook deliveries of a share
// of the events recorded from now on (0 to 1; 1 loses every one), as when
// an endpoint is down for longer than Stripe retries, or disabled: the
// events are recorded and listed by GET /v1/events as usual, but never
// queued for delivery (DeliveryStats.Dropped counts them). Which events are
// lost is drawn from the generator seeded by Options.Seed. 0 delivers every
// event again.
func (s *Server) SetDropDeliveries(ratio float64) {
	d := s.deliv
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drop = min(max(ratio, 0), 1)
}

// dropped draws whether the event being queued is lost, and counts it.
// Call with d.mu held.
func (d *deliverer) dropped() bool {
	if d.drop <= 0 || d.drop < 1 && d.rng.Float64() >= d.drop {
		return false
	}
	d.stats.Dropped++
	return true
}
