"""Answers "who receives traffic for this address?" from memory.

What other packages may use: `services.forwarder.main.run` (`havip serve forwarder`), and for
the benches `lookups` (`RouteLookups`, `route_query`, `private_key_ok`, `MAX_VPC_ID_CHARS`) and
`routes.RouteTable`.
"""
