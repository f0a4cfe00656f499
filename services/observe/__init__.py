"""havip observe: VRRP adverts and gratuitous ARPs seen on instances' ports, turned into ownership claims.

What other packages may use: `services.observe.main` (`run`, `check_settings`, `SettingsError`:
the command line) and, for the benches, `frames.internet_checksum`.
"""
