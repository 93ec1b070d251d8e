"""pyworkers.runtime.guest."""
