"""The demo, quarantined: its wiring, loopback SSH server, software security key, catalog and host scripts.

Only the CLI's ``opsgate demo`` and the tests import this package; the core never does (import-linter).
The software key keeps its private keys in a plain file: it proves nothing about who is at the keyboard.
"""
