-- A database that loses commits it had acknowledged: a crash with fsync off, an asynchronous
-- replica promoted, a restore from a backup. What it lost was already on Kafka (owners
-- published to havip.mappings, consumer offsets committed past the reports behind them), so
-- the rest of the system is ahead of it. Two tables let the stream workers catch up with
-- the database they now have (README, "A database that forgets").

-- quota and mapping: how far each worker's group had applied each partition, written just
-- before the same offsets are committed to Kafka, i.e. after the transactions that applied
-- them. A database restored to an earlier moment holds earlier positions, never later than
-- its state: the workers start from the lower of these and Kafka's committed offsets, so
-- what the database lost is read and applied again (every handler is idempotent).
CREATE TABLE consumer_positions (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    saved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Each PostgreSQL server run (pg_postmaster_start_time) a service has started against. A
-- run not listed here is a restart, a failover or a restore: whatever it lost, the mapping
-- service moves every HAVIP's version past anything it could have published before (to the
-- server's clock in microseconds) and publishes them all again, so forwarders, which keep
-- only newer versions, take the state the database holds now.
CREATE TABLE database_incarnations (
    service     text NOT NULL,
    incarnation text NOT NULL,
    adopted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, incarnation)
);
