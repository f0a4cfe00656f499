"""The HAVIP control plane services: gateway, quota, mapping, forwarder."""
