"""The instance agent: forwards keepalived's VRRP state to the gateway.

It runs next to keepalived on a tenant instance. keepalived writes one line
per state change to a notify FIFO; the agent numbers each line as a report,
spools it on disk, delivers the spool oldest first, and renews the MASTER
claims keepalived still holds. `havip notify` is the same path for tenants
who use keepalived's notify script instead of the FIFO.

Modules, one job each:
- `keepalived`: parse a notify line and map its state to the platform's (pure)
- `reports`: a report as spooled and as sent (pure)
- `claims`: what keepalived last said per name; lease, renewal and withdrawal rules (pure)
- `config`: the agent's TOML configuration; `check`: what `--check` prints
- `files`: atomic writes and flock; `sequence`: report numbers that only grow;
  `spool`: reports on disk until the gateway has answered for them
- `delivery`: the gateway's answers, backoff, and draining the spool
- `fifo`: following keepalived's FIFO
- `agent`: the daemon's two tasks; `main`: its process; `notify`: the one-shot command
"""
