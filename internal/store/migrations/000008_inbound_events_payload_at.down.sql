ALTER TABLE inbound_events DROP COLUMN payload_at;
