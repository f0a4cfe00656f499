"""Read models over the mapping service's tables, for the gateway and the forwarder.

The tables belong to the mapping service, which alone writes them. Other
services read them only through the queries here, so a change to the tables
has one place to look for its readers.
"""
