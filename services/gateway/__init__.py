"""The tenant REST API and the agent endpoint for VRRP reports.

What other packages may use (import it from its module: this package imports
nothing itself, so importing one of them costs only what that module needs):

- `services.gateway.main`: `run` (`havip serve gateway`); `services.gateway.app`: `create_app`.
- `services.gateway.tokens`: `Principal`, `store_token`, `issue_token`, `list_tokens`,
  `revoke_token`, `hash_token` (API tokens, for `havip admin` and dev seeds).
- `services.gateway.tenants`: tenants and their limits (`havip admin`, the dev stack).
- `services.gateway.renewals`: `write_renewals` (lease renewals as the gateway stores them; benches).

Everything else is the gateway's own. It reads the mapping service's tables only
through `services.readmodel`, which never imports it.
"""
