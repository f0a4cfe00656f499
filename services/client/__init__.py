"""`havip havips ...`: the tenant's command-line client for the gateway's REST API.

config.py   where the gateway URL and token come from (flags, environment, TOML profiles)
api.py      the small HTTP client: retries on 429/503 with one Idempotency-Key, the error types
render.py   tables and JSON, pure functions
cli.py      the argparse wiring and one function per command; `register()` plugs it into `havip`
"""
