"""The evidence: the hash-chained trail, its verification and display, recordings, history, replay, forwarding."""
