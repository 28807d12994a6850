-- Users, their outbox, provider links and API idempotency keys.
-- Written for MariaDB >= 10.6 and MySQL >= 8.0 (SKIP LOCKED, generated columns).
-- IF NOT EXISTS: a run interrupted between two statements can run again
-- (internal/store/migrate.go recovers it).

CREATE TABLE IF NOT EXISTS users (
    id          CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    email       VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    name        VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    phone       VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    metadata    TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    version     BIGINT UNSIGNED NOT NULL,
    created_at  DATETIME(6) NOT NULL,
    updated_at  DATETIME(6) NOT NULL,
    deleted_at  DATETIME(6) NULL,
    -- Emails are unique among live users, case-insensitively: deleted rows
    -- drop out of the index so their email can be used again.
    live_email  VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                AS (IF(deleted_at IS NULL, LOWER(email), NULL)) STORED,
    PRIMARY KEY (id),
    UNIQUE KEY users_live_email (live_email)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS outbox (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    event_id     CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id      CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version      BIGINT UNSIGNED NOT NULL,
    type         VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    origin       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at   DATETIME(6) NOT NULL,
    published_at DATETIME(6) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY outbox_event_id (event_id),
    KEY outbox_unpublished (published_at, id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS provider_links (
    user_id         CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    provider        VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    remote_id       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    status          VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    synced_version  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    pushed_hash     CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    last_inbound_at DATETIME(6) NULL,
    last_error      TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    synced_at       DATETIME(6) NULL,
    updated_at      DATETIME(6) NOT NULL,
    PRIMARY KEY (user_id, provider),
    UNIQUE KEY provider_links_remote (provider, remote_id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope         CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    idem_key      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    request_hash  CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    status_code   SMALLINT NULL,
    response_body MEDIUMBLOB NULL,
    created_at    DATETIME(6) NOT NULL,
    expires_at    DATETIME(6) NOT NULL,
    PRIMARY KEY (scope, idem_key),
    KEY idempotency_keys_expires (expires_at)
) ENGINE=InnoDB;
