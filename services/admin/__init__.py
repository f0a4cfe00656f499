"""Operators' tools: `havip admin` (tenants, their limits and their tokens)."""
