"""Transports that execute an already-rendered command on targets (SSH, fan-out).

They know nothing of policy or audit; they report what happened.
"""
