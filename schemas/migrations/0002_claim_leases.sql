-- mapping: MASTER claims with leases, and owner history that names what caused each change.

-- When a MASTER claim stops being live unless its agent renews it. NULL: no lease
-- (a plain notify script cannot renew; its claim is live until it reports another state).
ALTER TABLE vrrp_reports ADD COLUMN expires_at timestamptz;
-- The lease sweep looks for owners whose claim has run out.
CREATE INDEX vrrp_reports_master_expiry ON vrrp_reports (expires_at)
    WHERE state = 'MASTER' AND expires_at IS NOT NULL;

-- What caused an owner change: a VRRP report (its message, instance and seq), a lease
-- that ran out (when), an accepted command, or an inventory change.
ALTER TABLE owner_changes
    ADD COLUMN trigger_kind        text NOT NULL DEFAULT 'Unknown',
    ADD COLUMN trigger_message_id  text,
    ADD COLUMN trigger_instance_id text,
    ADD COLUMN trigger_seq         bigint,
    ADD COLUMN lease_expired_at    timestamptz;

-- The last version of each HAVIP published to havip.mappings: what is committed but not
-- published (a worker died between the two, or a lease expiry had no message to redeliver)
-- is published again by the mapping service's sweep.
ALTER TABLE havips ADD COLUMN published_version bigint NOT NULL DEFAULT 0;
UPDATE havips SET published_version = version;
CREATE INDEX havips_unpublished ON havips (havip_id) WHERE published_version < version;
