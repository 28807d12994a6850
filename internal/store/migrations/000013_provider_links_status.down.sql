ALTER TABLE provider_links DROP KEY provider_links_status;
