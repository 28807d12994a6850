ALTER TABLE inbound_events DROP KEY inbound_events_received;
