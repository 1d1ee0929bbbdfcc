"""opsgate core: config, catalog, policy, step-up, audit, recordings, run pipeline, CLI.

Never imports Textual (tests/test_import_hygiene.py enforces it).
"""
