"""Guards: disk space, shares, output limits, sessions, sign-ins, owner ids and health."""
