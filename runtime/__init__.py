"""pyworkers.runtime: the wasmtime host for Pyodide's CPython (isolates, VFS, dynamic linker)."""
