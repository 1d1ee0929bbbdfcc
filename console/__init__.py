"""opsgate's core, with no user interface: the catalog, step-up, the audit trail and the run pipeline.

Never imports Textual, Rich, the front ends or the demo (import-linter contracts in pyproject.toml).
"""
