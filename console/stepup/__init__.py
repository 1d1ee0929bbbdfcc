"""Step-up authentication: the verifier, TOTP, security keys, stored credentials and grants."""
