-- The index of payload_at (migration 8). Built in place; the table stays
-- writable (LOCK=NONE).

ALTER TABLE inbound_events
    ADD KEY inbound_events_payload (payload_at),
    ALGORITHM=INPLACE, LOCK=NONE;
