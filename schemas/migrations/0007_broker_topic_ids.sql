-- Every service: the id the broker gave each topic it uses (Kafka's KIP-516; Tansu too). A
-- topic deleted and created again, or a broker that came back empty and had its topics made
-- afresh, has a new id: the log was lost, even for a service that was not running when it
-- happened. Cheaper to ask for than where each partition ends (services/runtime/topic_ids.py),
-- so the broker watch compares ids every second and end offsets only now and then. Each
-- service writes only its own rows.
CREATE TABLE broker_topic_ids (
    service  text NOT NULL,
    topic    text NOT NULL,
    topic_id uuid NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, topic)
);
