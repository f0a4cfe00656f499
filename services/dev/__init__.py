"""Dev tooling, never imported by a service at run time: the embedded broker and
PostgreSQL, the process supervisor, `havip dev up`, the walk-through, benchmarks
and the keepalived lab."""
