-- The whole tenant lifecycle: tenants and their tokens, per-tenant limits, HAVIP
-- deletion, EIPs, and an outbox so no accepted request is lost between the
-- database and the broker. Each block names the service that writes it.

-- gateway: tenants, and tokens that can be listed (by a public id) and revoked.
CREATE TABLE tenants (
    tenant_id           text PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    -- Requests per second each of the tenant's tokens may make; NULL: the gateway's default.
    requests_per_second double precision CHECK (requests_per_second > 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE api_tokens
    ADD COLUMN token_id    text,
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN revoked_at  timestamptz;
UPDATE api_tokens SET token_id = 'tok-' || substr(token_sha256, 1, 20);
ALTER TABLE api_tokens ALTER COLUMN token_id SET NOT NULL;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_token_id UNIQUE (token_id);
CREATE INDEX api_tokens_instance ON api_tokens (tenant_id, instance_id) WHERE instance_id IS NOT NULL;

-- gateway: what a command-publishing request recorded but has not yet seen on the broker.
-- Written in the transaction that records the operation; deleted once the broker has it.
CREATE TABLE command_outbox (
    operation_id text PRIMARY KEY REFERENCES operations (operation_id),
    topic_key    text NOT NULL,
    value        bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- gateway: the first answer to a mutation that is not a command (agent tokens), per
-- Idempotency-Key. A body holding a secret is stored encrypted with a key derived from
-- the caller's token and the Idempotency-Key, neither of which is stored in clear.
CREATE TABLE idempotent_answers (
    tenant_id       text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    status          integer NOT NULL,
    sealed_body     bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);

-- quota: per-tenant limits; NULL takes the configured default.
CREATE TABLE quota_tenant_limits (
    tenant_id             text PRIMARY KEY,
    havips                integer CHECK (havips >= 0),
    attachments_per_havip integer CHECK (attachments_per_havip >= 0),
    havips_per_instance   integer CHECK (havips_per_instance >= 0),
    eips_per_havip        integer CHECK (eips_per_havip >= 0)
);

-- quota: a HAVIP being deleted keeps its address and counts until the mapping
-- service has applied the delete; deleting_command_id names the delete in flight.
ALTER TABLE quota_havips ADD COLUMN deleting_command_id text;
CREATE INDEX quota_havips_tenant ON quota_havips (tenant_id);

-- quota: which command made each reservation, so a command the mapping service
-- fails to apply releases exactly what it reserved.
ALTER TABLE quota_havips ADD COLUMN command_id text;
ALTER TABLE quota_attachments ADD COLUMN command_id text;

CREATE TABLE quota_havip_eips (
    eip_id      text PRIMARY KEY,
    havip_id    text NOT NULL REFERENCES quota_havips (havip_id),
    command_id  text NOT NULL
);
CREATE INDEX quota_havip_eips_havip ON quota_havip_eips (havip_id);

-- quota: a command_id names one command; the digest of its body tells a redelivery
-- (same body: the same decision again) from a reuse (another body: refused).
ALTER TABLE quota_decisions ADD COLUMN command_sha256 text;

-- mapping: the EIPs of each HAVIP (the column on havips was never written).
ALTER TABLE havips DROP COLUMN eip_address;
CREATE TABLE havip_eips (
    eip_id      text PRIMARY KEY,
    havip_id    text NOT NULL REFERENCES havips (havip_id),
    ip_address  inet NOT NULL
);
CREATE INDEX havip_eips_havip ON havip_eips (havip_id);

-- mapping: a command it could not apply is answered the same way when redelivered.
ALTER TABLE applied_commands
    ADD COLUMN rejected_code   text,
    ADD COLUMN rejected_reason text;
