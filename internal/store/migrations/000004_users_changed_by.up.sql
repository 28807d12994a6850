-- Who made a user's current version: 'api' (a REST API write, which has an
-- outbox row and is pushed to every provider) or the provider whose webhook
-- applied it (no outbox row: not pushed anywhere). An inbound event is
-- outranked only by a newer API change, the one its provider will be sent.
-- Rows written before this migration count as API changes.

-- In place, without blocking writes (MariaDB adds the column instantly); a
-- change that would copy the table fails instead.

ALTER TABLE users
    ADD COLUMN changed_by VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'api' AFTER version,
    ALGORITHM=INPLACE, LOCK=NONE;
