"""CLI commands for `pyworkers serve`."""
