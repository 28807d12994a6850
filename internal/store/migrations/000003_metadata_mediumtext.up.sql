-- A user's metadata (50 keys of up to 40 and 500 characters, as JSON with
-- every character up to 4 bytes and some escaped to 6) can exceed TEXT's
-- 65,535 bytes: MEDIUMTEXT holds any metadata the API accepts.

-- Changing a column's type copies the whole table (MariaDB has no in-place
-- way), blocking writes to users meanwhile: stated, so it is no surprise.
-- Migrate refuses it on a large table unless allowed (-migrate-allow-copy);
-- README "Upgrading a large table" tells how to do it online instead.

ALTER TABLE users
    MODIFY COLUMN metadata MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    ALGORITHM=COPY, LOCK=SHARED;
