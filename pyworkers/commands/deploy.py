"""CLI commands for `pyworkers deploy`."""
