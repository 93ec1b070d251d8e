"""CLI commands for pyworkers.compat (see that sub-package)."""
