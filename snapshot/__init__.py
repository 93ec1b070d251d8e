"""pyworkers.snapshot."""
