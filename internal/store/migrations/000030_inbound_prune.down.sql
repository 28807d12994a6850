ALTER TABLE inbound_events
    DROP KEY inbound_events_payload,
    DROP COLUMN payload_at,
    DROP KEY inbound_events_received;
