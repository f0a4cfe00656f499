-- gateway: every gateway replica keeps an in-memory directory of agent tokens and of which
-- instance is attached to which HAVIP, so a VRRP report needs no database round trip (and is
-- still accepted while PostgreSQL is away). These triggers tell the replicas what to re-read,
-- within milliseconds of the commit (NOTIFY is delivered at commit, in commit order).
--
-- They write nothing: the tables stay their owners' (api_tokens: gateway; havips and
-- attachments: mapping). The payload names one key, `<kind>:<id>`, never a secret.

CREATE FUNCTION notify_agent_directory() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV: the key column, then the kind of key. Identical payloads in one transaction
    -- are delivered once, so a batch that touches one key many times costs one re-read.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('havip_agent_directory', TG_ARGV[1] || ':' || (to_jsonb(OLD) ->> TG_ARGV[0]));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('havip_agent_directory', TG_ARGV[1] || ':' || (to_jsonb(NEW) ->> TG_ARGV[0]));
    END IF;
    RETURN NULL;
END
$$;

-- Issued and revoked tokens.
CREATE TRIGGER api_tokens_agent_directory AFTER INSERT OR UPDATE OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION notify_agent_directory('token_id', 'token');

-- Attached and detached instances.
CREATE TRIGGER attachments_agent_directory AFTER INSERT OR UPDATE OR DELETE ON attachments
    FOR EACH ROW EXECUTE FUNCTION notify_agent_directory('instance_id', 'instance');

-- Which tenant a HAVIP belongs to. Not on every update: an owner change (every failover)
-- changes nothing the directory holds.
CREATE TRIGGER havips_agent_directory AFTER INSERT OR DELETE OR UPDATE OF tenant_id ON havips
    FOR EACH ROW EXECUTE FUNCTION notify_agent_directory('havip_id', 'havip');
