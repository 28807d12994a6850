-- Sync truth (issue 10), continued:
-- users:
--   api_version,      the last change made through the REST API (the one
--   api_changed_at    every provider is sent), kept apart from changed_by so
--                     a later change from another provider cannot hide it.
--                     NULL for rows written before this migration: the store
--                     then falls back to version/updated_at when changed_by
--                     is 'api' (no table rewrite here).


ALTER TABLE users
    ADD COLUMN api_version BIGINT UNSIGNED NULL,
    ADD COLUMN api_changed_at DATETIME(6) NULL,
    ALGORITHM=INPLACE, LOCK=NONE;
