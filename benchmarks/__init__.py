"""Benchmarks (runnable from the CLI: `pyworkers bench ...`); never part of the test suite."""
