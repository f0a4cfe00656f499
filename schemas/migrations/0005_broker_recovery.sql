-- Recovery from a broker that lost its topics (the embedded broker keeps them in memory; a
-- cluster can be rebuilt under a running system).

-- Every service: the highest end offset it has seen per partition of the topics it uses.
-- Kafka never moves an end offset back, so a smaller one means the log was lost, even for a
-- service that was not running when it happened. Each service writes only its own rows.
CREATE TABLE broker_watermarks (
    service    text NOT NULL,
    topic      text NOT NULL,
    partition  integer NOT NULL,
    end_offset bigint NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, topic, partition)
);

-- gateway: a command stays in the outbox until its operation ends, not only until it was
-- published, so the commands of Pending operations can be published again when the broker
-- lost them. NULL: not published yet (the relay's work).
ALTER TABLE command_outbox ADD COLUMN published_at timestamptz;
CREATE INDEX command_outbox_unpublished ON command_outbox (created_at) WHERE published_at IS NULL;

-- quota and mapping: the generation of each stream worker's consumer group. Offsets committed
-- against a lost log mean nothing in the new one, and a worker commits them there before it
-- can notice the loss; so after a loss the workers move on to a new group, which has no
-- offsets and starts every partition of the new log from its beginning.
CREATE TABLE consumer_group_epochs (
    group_id text PRIMARY KEY,
    epoch    integer NOT NULL
);
