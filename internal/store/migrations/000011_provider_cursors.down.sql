DROP TABLE IF EXISTS provider_cursors;
