-- The HAVIP control plane's tables. Each block names the service that writes it.

-- mapping: its own copy of ens.inventory (upserts guarded by revision). Each service
-- keeps its own copy, so "did this change" means exactly that for the one asking.
CREATE TABLE vswitches (
    vswitch_id  text PRIMARY KEY,
    tenant_id   text NOT NULL,
    vpc_id      text NOT NULL,
    zone_id     text NOT NULL,
    cidr        cidr NOT NULL,
    revision    bigint NOT NULL
);

CREATE TABLE instances (
    instance_id text PRIMARY KEY,
    tenant_id   text NOT NULL,
    vpc_id      text NOT NULL,
    vswitch_id  text NOT NULL,
    private_ip  inet NOT NULL,
    status      text NOT NULL,
    host_id     text NOT NULL,
    revision    bigint NOT NULL
);
CREATE INDEX instances_vpc_ip ON instances (vpc_id, private_ip);

CREATE TABLE enis (
    eni_id      text PRIMARY KEY,
    instance_id text NOT NULL,
    tenant_id   text NOT NULL,
    vswitch_id  text NOT NULL,
    private_ip  inet NOT NULL,
    revision    bigint NOT NULL
);
CREATE INDEX enis_instance ON enis (instance_id);

CREATE TABLE eips (
    eip_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    ip_address  inet NOT NULL,
    revision    bigint NOT NULL
);

-- quota: its own copy of ens.inventory
CREATE TABLE quota_vswitches (
    vswitch_id  text PRIMARY KEY,
    tenant_id   text NOT NULL,
    vpc_id      text NOT NULL,
    zone_id     text NOT NULL,
    cidr        cidr NOT NULL,
    revision    bigint NOT NULL
);

CREATE TABLE quota_instances (
    instance_id text PRIMARY KEY,
    tenant_id   text NOT NULL,
    vpc_id      text NOT NULL,
    vswitch_id  text NOT NULL,
    private_ip  inet NOT NULL,
    status      text NOT NULL,
    host_id     text NOT NULL,
    revision    bigint NOT NULL
);
CREATE INDEX quota_instances_vpc_ip ON quota_instances (vpc_id, private_ip);

CREATE TABLE quota_enis (
    eni_id      text PRIMARY KEY,
    instance_id text NOT NULL,
    tenant_id   text NOT NULL,
    vswitch_id  text NOT NULL,
    private_ip  inet NOT NULL,
    revision    bigint NOT NULL
);
CREATE INDEX quota_enis_instance ON quota_enis (instance_id);

CREATE TABLE quota_eips (
    eip_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    ip_address  inet NOT NULL,
    revision    bigint NOT NULL
);

-- quota: the reservation ledger. Rows here are what quota has promised.
CREATE TABLE quota_havips (
    havip_id    text PRIMARY KEY,
    tenant_id   text NOT NULL,
    vpc_id      text NOT NULL,
    vswitch_id  text NOT NULL,
    ip_address  inet NOT NULL,
    UNIQUE (vpc_id, ip_address)
);

CREATE TABLE quota_attachments (
    havip_id    text NOT NULL REFERENCES quota_havips (havip_id),
    target_id   text NOT NULL,
    instance_id text NOT NULL,
    PRIMARY KEY (havip_id, target_id)
);
CREATE INDEX quota_attachments_instance ON quota_attachments (instance_id);

-- one decision per command, so a redelivered command gets the same answer
CREATE TABLE quota_decisions (
    command_id  text PRIMARY KEY,
    havip_id    text NOT NULL,
    outcome     jsonb NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now()
);

-- mapping: HAVIPs, attachments, VRRP reports, owner and its history
CREATE TABLE havips (
    havip_id        text PRIMARY KEY,
    tenant_id       text NOT NULL,
    vpc_id          text NOT NULL,
    vswitch_id      text NOT NULL,
    ip_address      inet NOT NULL,
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    status          text NOT NULL,
    eip_address     inet,
    owner_target_id text,
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX havips_tenant ON havips (tenant_id, havip_id);

CREATE TABLE attachments (
    havip_id    text NOT NULL REFERENCES havips (havip_id),
    target_id   text NOT NULL,
    instance_id text NOT NULL,
    eni_id      text,
    attached_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (havip_id, target_id)
);
CREATE INDEX attachments_instance ON attachments (instance_id);

-- the last VRRP report of each instance for each HAVIP
CREATE TABLE vrrp_reports (
    havip_id    text NOT NULL REFERENCES havips (havip_id),
    instance_id text NOT NULL,
    state       text NOT NULL,
    priority    integer NOT NULL,
    seq         bigint NOT NULL,
    reported_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (havip_id, instance_id)
);

CREATE TABLE owner_changes (
    id                   bigserial PRIMARY KEY,
    havip_id             text NOT NULL REFERENCES havips (havip_id),
    version              bigint NOT NULL,
    previous_instance_id text,
    instance_id          text,
    cause                text NOT NULL,
    detail               text NOT NULL DEFAULT '',
    changed_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX owner_changes_havip ON owner_changes (havip_id, id);

CREATE TABLE applied_commands (
    command_id  text PRIMARY KEY,
    havip_id    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- gateway: operations and API tokens
CREATE TABLE operations (
    operation_id    text PRIMARY KEY,
    tenant_id       text NOT NULL,
    kind            text NOT NULL,
    havip_id        text NOT NULL,
    status          text NOT NULL,
    error_code      text,
    error_message   text,
    request         jsonb NOT NULL,
    idempotency_key text,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX operations_havip ON operations (havip_id);

CREATE TABLE api_tokens (
    token_sha256 text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('tenant', 'agent')),
    tenant_id    text NOT NULL,
    instance_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'agent') = (instance_id IS NOT NULL))
);
