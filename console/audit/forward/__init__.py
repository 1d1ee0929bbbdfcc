"""Shipping the trail to a syslog collector: wire format, cursor, forwarder, comparison with the collector."""
