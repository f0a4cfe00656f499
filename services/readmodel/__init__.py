"""Read models over the mapping service's tables, for the gateway and the forwarder.

The tables belong to the mapping service, which alone writes them. Other
services read them only through the queries here, so a change to the tables
has one place to look for its readers. This package imports no other service
(nor `services.gateway`: tests/unit/test_package_layers.py), and imports
nothing itself; take each name from its module:

- `mappings`: `load_mappings` (a HAVIP's published state: mapping, benches),
  `stream_route_rows` (the forwarder's snapshot).
- `havips`: `find_havip`, `list_havips`, `havip_visible`, `HaVipFilters`, `HaVipRecord`
  (HAVIPs as a tenant sees them); `status`: `shown_status` and the rules it answers with.
- `reporters`: `ReporterStanding`, `reporter_standing`, `havip_tenants`, `attached_havips`
  (may an instance report for a HAVIP; the gateway's agent directory).
- `instances`: `find_instance`; `owner_history`: `owner_history`.
"""
