"""pyworkers.compat."""
