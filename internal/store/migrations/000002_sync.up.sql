-- What the provider workers and webhooks need: the metadata keys last pushed
-- to a remote object (so removed keys can be removed there without reading
-- the remote object first), and the log of applied inbound events.

CREATE TABLE IF NOT EXISTS inbound_events (
    provider    VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_id    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    event_type  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id     CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
    outcome     VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    detail      TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    payload     MEDIUMBLOB NULL,
    occurred_at DATETIME(6) NULL,
    received_at DATETIME(6) NOT NULL,
    PRIMARY KEY (provider, event_id),
    KEY inbound_events_outcome (provider, outcome, received_at)
) ENGINE=InnoDB;

-- Last, and the only statement that cannot run twice: a run interrupted
-- before it can run again. In place, without blocking writes (MariaDB adds
-- the column instantly); a change that would copy the table fails instead.
ALTER TABLE provider_links
    ADD COLUMN metadata_keys TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL AFTER pushed_hash,
    ALGORITHM=INPLACE, LOCK=NONE;
