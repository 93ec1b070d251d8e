import pyworkers_missing_dependency  # noqa: F401
