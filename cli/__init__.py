"""The ``opsgate`` command line: one module per command group (catalog, run, auth, audit, tui).

A front end: it turns flags into calls on the core (``opsgate.console``) and typed errors into one line
and an exit code. Only ``tui`` imports the Textual app (``opsgate.screens``), and only when launched.
"""
