"""CLI commands for pyworkers.packages (see that sub-package)."""
