"""CLI command modules; each attaches its commands to the groups in :mod:`pyworkers.cli`."""
