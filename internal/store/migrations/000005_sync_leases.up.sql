-- Sync truth (issue 10): what each provider is known to hold, what it may
-- hold, and per-user exclusion that survives a lost connection.
--
-- provider_links:
--   pushed_hash       now means the state the provider is last known to hold
--                     (a confirmed push, or an inbound event): it is no
--                     longer forgotten when a push fails.
--   attempt_version,  a push whose outcome is unknown (recorded before the
--   attempt_hash,     provider is called, cleared when its answer is known):
--   attempt_email,    the provider holds either pushed_hash or attempt_hash.
--   attempt_at
--   lease_seq,        the per-(user, provider) lease a worker holds while it
--   lease_until,      calls the provider, instead of a row lock held across
--   lease_owner
--                     the call; lease_seq is also the fencing token checked
--                     when the outcome is recorded, and is bumped by inbound
--                     changes so a push in flight cannot record over them.
--   recent_hashes     the states of the last pushes (a JSON array, newest
--                     last): a late push can land after a newer one was
--                     recorded, so a state read back from the provider that
--                     is one of them is Tandem's own, never a remote edit.
--   pushed_remote_at  the provider's own clock (its Date header) when it
--                     answered the last confirmed push: inbound events are
--                     compared with it, one clock per comparison.

ALTER TABLE provider_links
    ADD COLUMN attempt_version BIGINT UNSIGNED NULL,
    ADD COLUMN attempt_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN attempt_email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD COLUMN attempt_at DATETIME(6) NULL,
    ADD COLUMN lease_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN lease_until DATETIME(6) NULL,
    ADD COLUMN lease_owner CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN pushed_remote_at DATETIME(6) NULL,
    ADD COLUMN recent_hashes TEXT CHARACTER SET ascii COLLATE ascii_bin NULL,
    ALGORITHM=INPLACE, LOCK=NONE;

