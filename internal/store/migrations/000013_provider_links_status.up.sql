-- The operator's views find links by provider and status: the console's
-- attention list and counts by status (internal/store/status.go) and
-- GET /v1/users?sync_status= (users.go). Without this index each of them
-- read all of provider_links. updated_at last: the attention list reads a
-- status's links newest first and stops at its limit. Built in place; the
-- table stays writable (LOCK=NONE). One statement: an interrupted run is
-- recovered by looking for the index (migrate.go).

ALTER TABLE provider_links
    ADD KEY provider_links_status (provider, status, updated_at),
    ALGORITHM=INPLACE, LOCK=NONE;
