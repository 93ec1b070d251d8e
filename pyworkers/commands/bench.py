"""CLI commands for `pyworkers bench`."""
