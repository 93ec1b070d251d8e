"""CLI commands for `pyworkers snapshot`."""
