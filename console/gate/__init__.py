"""The gate (``opsgated``): step-up that the targets enforce, with short-lived command-bound certificates.

``ca.py`` signs the certificates, ``protocol.py`` is the JSON-lines wire format between a console and the
gate, ``service.py`` is the gate itself (its catalog, step-up state, approvals, trail and CA), ``server.py``
accepts connections (a Unix socket with SO_PEERCRED, or one SSH session on stdin/stdout), and
``client.py`` is the console's side.
"""
