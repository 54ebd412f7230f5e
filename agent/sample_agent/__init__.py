"""The sample agent service (see agent/README.md)."""
