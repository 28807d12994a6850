ALTER TABLE provider_links
    DROP COLUMN recent_hashes, DROP COLUMN pushed_remote_at, DROP COLUMN lease_owner, DROP COLUMN lease_until, DROP COLUMN lease_seq,
    DROP COLUMN attempt_at, DROP COLUMN attempt_email, DROP COLUMN attempt_hash, DROP COLUMN attempt_version;
