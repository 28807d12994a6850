-- The catch-up's position in each provider's own change log
-- (internal/store/cursor.go). One row per provider, written by whichever
-- process runs a catch-up round. A new table: no lock on any other.

CREATE TABLE IF NOT EXISTS provider_cursors (
    provider     VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- The adapter's opaque position (Stripe: a time and an event id).
    position     VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- Every change the provider recorded before this time (its clock) has
    -- been read; positions only move forward by it.
    read_through DATETIME(6) NOT NULL,
    -- The provider's time of the newest change read, NULL before the first.
    newest_at    DATETIME(6) NULL,
    -- A stretch of the log that could not be read (the position had aged
    -- out of the provider's log): changes between gap_from and gap_to may
    -- have been missed until a reconcile; NULL when there is none.
    gap_from     DATETIME(6) NULL,
    gap_to       DATETIME(6) NULL,
    updated_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (provider)
) ENGINE=InnoDB;
