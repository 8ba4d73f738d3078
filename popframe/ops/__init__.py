"""Running popframe as a service: what the server does for the system
around it (systemd's readiness protocol, reloads, graceful stops), kept
out of the protocol code."""
