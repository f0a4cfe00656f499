"""The tenant REST API and the agent endpoint for VRRP reports."""
