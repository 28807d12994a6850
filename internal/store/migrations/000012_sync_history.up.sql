-- What Tandem did for each user, for operators (GET /v1/users/{id}/history,
-- the console): local changes, push attempts and inbound events, newest
-- first by (at, id). Written in batches, off the request and push paths
-- (internal/store/history.go); pruned by time (sync_history_at) after
-- TANDEM_HISTORY_RETENTION. One statement, idempotent: an interrupted run
-- is recovered by looking for the table (migrate.go).

CREATE TABLE IF NOT EXISTS sync_history (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id     CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    at          DATETIME(6) NOT NULL,
    kind        VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    provider    VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    version     BIGINT UNSIGNED NULL,
    origin      VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    outcome     VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    event_id    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    error       TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    duration_us BIGINT UNSIGNED NULL,
    PRIMARY KEY (id),
    KEY sync_history_user (user_id, at, id),
    KEY sync_history_at (at)
) ENGINE=InnoDB;
