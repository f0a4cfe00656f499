"""Applies accepted commands and VRRP reports; decides and publishes the owner.

Read in this order: `election` (who owns a HAVIP: the rules, pure), `report_batch` (a batch
of reports decided at once, pure), `commands` (what an accepted command changes), `handlers`
(one per message), `sweep` (what the timer does), `publishing` (what leaves the service),
`store` (what the service needs of its tables) and `postgres_store` (those tables in PostgreSQL).
`main` wires them.

What other packages may use: `services.mapping.main.run` (`havip serve mapping`); benches and
tests also use the pure modules. It reads the quota package's `rules.check_no_dependants` and
the read model's `load_mappings`, nothing else of another service.
"""
