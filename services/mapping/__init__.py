"""Applies accepted commands and VRRP reports; decides and publishes the owner."""
