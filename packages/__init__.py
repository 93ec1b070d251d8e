"""pyworkers.packages."""
