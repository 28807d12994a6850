-- Payloads are dropped earlier than rows (internal/store/prune.go).
-- payload_at is received_at for the rows that still hold a payload and
-- NULL for the others; migration 9 indexes it, so the rows to clear are
-- found without walking the (payload-less) rest. VIRTUAL: it costs the
-- table nothing and is added instantly (metadata only).

ALTER TABLE inbound_events
    ADD COLUMN payload_at DATETIME(6) AS (IF(payload IS NULL, NULL, received_at)) VIRTUAL,
    ALGORITHM=INSTANT, LOCK=NONE;
