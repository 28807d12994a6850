-- A user's metadata (50 keys of up to 40 and 500 characters, as JSON with
-- every character up to 4 bytes and some escaped to 6) can exceed TEXT's
-- 65,535 bytes: MEDIUMTEXT holds any metadata the API accepts.

ALTER TABLE users
    MODIFY COLUMN metadata MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
