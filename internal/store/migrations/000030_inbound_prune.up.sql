-- What pruning inbound_events needs (internal/store/prune.go): an index by
-- time, so rows past the retention are found oldest first without a scan,
-- and one that holds only the rows that still keep a payload, so payloads
-- are dropped earlier than rows without walking the (payload-less) rest.
-- payload_at is a VIRTUAL column: it costs the table nothing, only its
-- index (whose entries are few: payloads are kept for conflicts).
-- Each ALTER leaves the table writable: the virtual column is added
-- instantly (metadata only), the indexes are built in place (LOCK=NONE).

ALTER TABLE inbound_events
    ADD KEY inbound_events_received (received_at),
    ALGORITHM=INPLACE, LOCK=NONE;

ALTER TABLE inbound_events
    ADD COLUMN payload_at DATETIME(6) AS (IF(payload IS NULL, NULL, received_at)) VIRTUAL,
    ALGORITHM=INSTANT;

ALTER TABLE inbound_events
    ADD KEY inbound_events_payload (payload_at),
    ALGORITHM=INPLACE, LOCK=NONE;
