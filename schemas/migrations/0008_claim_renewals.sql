-- Lease renewals: a MASTER claim repeated, about once a second per live master, to keep it live.
-- A heartbeat, not an event, so it is kept out of the Kafka log: there it would be one record
-- per renewal, forever (the embedded broker can trim nothing), and a state change would wait
-- behind them in its partition. Gateways write the newest renewal of each claim here and
-- answer the agent once it is committed; mapping workers take what is new (`taken`) and apply
-- it through the same election as any report (services/mapping/handlers.py `apply_renewals`).
--
-- One row per claim, written over: a slow worker finds the newest renewal of each claim, never
-- a backlog. Taking a renewal only flips `taken`, and no index covers the columns that change,
-- so rows are updated in place (HOT, with the room fillfactor leaves) instead of piling up
-- dead index entries for the vacuum. UNLOGGED: a renewal lost in a crash is replaced by the
-- next one a second later, and there is no WAL to write for a heartbeat.
CREATE UNLOGGED TABLE claim_renewals (
    havip_id      text NOT NULL,
    instance_id   text NOT NULL,
    tenant_id     text NOT NULL,
    message_id    text NOT NULL,
    priority      integer NOT NULL,
    seq           bigint NOT NULL,
    reported_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    lease_seconds double precision NOT NULL,
    taken         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (havip_id, instance_id)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.05);
