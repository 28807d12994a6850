DROP TABLE IF EXISTS inbound_events;
ALTER TABLE provider_links DROP COLUMN metadata_keys;
