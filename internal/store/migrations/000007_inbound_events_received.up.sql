-- inbound_events is pruned by time (internal/store/prune.go): this index
-- finds the rows past the retention oldest first, without a scan. Built in
-- place; the table stays writable (LOCK=NONE).
-- Migrations 7-9 are one statement each, so that an interrupted one can
-- be told applied or not by looking for what it adds.

ALTER TABLE inbound_events
    ADD KEY inbound_events_received (received_at),
    ALGORITHM=INPLACE, LOCK=NONE;
