"""pyworkers.benchmarks."""
