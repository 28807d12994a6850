ALTER TABLE users DROP COLUMN changed_by;
