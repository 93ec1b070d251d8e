"""CLI commands for the engine: `pyworkers python`, `pyworkers runtimes install`."""
