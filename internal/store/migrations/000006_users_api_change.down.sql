ALTER TABLE users DROP COLUMN api_changed_at, DROP COLUMN api_version;
