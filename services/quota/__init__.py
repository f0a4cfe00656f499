"""Validates every command against limits, inventory and ownership.

Read in this order: `rules` (the checks, pure), `decisions` and `releases` (what a decision
reserves and what the mapping service's answer frees, pure), `ledger` (decide and settle, over
a store), `handlers` (one per message), `store` (what the ledger needs of its tables) and
`postgres_store` (those tables in PostgreSQL); `main` wires them.

What other packages may use (take each from its module; this package imports nothing itself):
- `services.quota.main`: `run` (`havip serve quota`).
- `services.quota.tenant_limits`: `default_limits`, `limits_for`, `set_limits` (`havip admin`,
  the dev stack).
- `services.quota.rules`: `check_no_dependants` (the deletion dependency, which the mapping
  service applies to its own tables).
"""
