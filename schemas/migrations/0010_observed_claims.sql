-- Claims seen on the host (`havip observe`: VRRP adverts and gratuitous ARP on an instance's port)
-- beside claims reported by the agent in the guest. An instance still has one report per HAVIP,
-- its last word whoever heard it, so it counts once in the election; `source` says who heard it.
-- Reports of one source are ordered by that source's numbers; across sources by received_at,
-- the platform's clock (services/mapping/election.py `Report.newer_than`): a guest's clock or
-- numbers can never make the observer's claims stale, nor the observer's the agent's.
ALTER TABLE vrrp_reports
    ADD COLUMN source text NOT NULL DEFAULT 'agent' CHECK (source IN ('agent', 'observer'));
