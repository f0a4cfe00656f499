"""Validates every command against limits, inventory and ownership."""
