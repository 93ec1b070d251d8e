"""A loaded release (:class:`Runtime`): the compiled Pyodide module, its store-independent
Linker with every host import defined (:func:`pyworkers.runtime.host.build_linker`), the layout
recorded at install time and the stdlib archive isolates mount. One per release per process,
shared by all its isolates (:class:`pyworkers.runtime.isolate.Isolate`)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from pyworkers.compat.releases import Release, default_release, get_release
from pyworkers.runtime import dns as _dns  # noqa: F401 - registers the DNS imports
from pyworkers.runtime import host as H
from pyworkers.runtime import net as _net  # noqa: F401 - registers the socket imports
from pyworkers.runtime.engine import load_module
from pyworkers.runtime.install import InstalledRelease, ensure_release
from pyworkers.runtime.trampolines import count_args_module, trampoline_call_module


class Runtime:
    """A loaded release: the compiled module and its store-independent Linker (one per release
    per process; thread-safe to share). Get it with :meth:`Runtime.get`."""

    _cache: dict[tuple[str, str], "Runtime"] = {}
    _lock = threading.Lock()

    def __init__(self, installed: InstalledRelease):
        self.installed = installed
        self.release: Release = installed.release
        self.module = load_module(installed.cwasm)
        self.linker, self.stubs = H.build_linker(self.module)
        self.layout = installed.layout
        self.memory_base = self.layout.get("memory_base", 0)
        self.python_tag = "python" + self.release.python_minor.replace(".", "")
        self.stdlib_guest_path = f"/lib/{self.python_tag}.zip"
        self.site_packages_guest_path = f"/lib/python{self.release.python_minor}/site-packages"
        self.trampoline = (trampoline_call_module() if "table_base" not in self.layout
                           else count_args_module())
        try:
            self.pre = self.linker.instantiate_pre(self.module)
        except Exception:  # pragma: no cover - older wasmtime-py
            self.pre = None
        self._mutable_globals: list[int] | None = None
        self._export_names: dict[str, int] | None = None
        #: ``{export: (nparams, nresults)}`` of i32-only C functions called through
        #: :class:`~pyworkers.runtime.capi.I32Call`
        self.i32_signatures: dict[str, tuple[int, int]] = {}
        #: the stdlib archive isolates mount (the bytecode one once built, see ``get``)
        self.stdlib_zip: Path = installed.stdlib_zip
        self._stdlib_sha256: str | None = None

    @property
    def stdlib_sha256(self) -> str:
        """sha256 of :attr:`stdlib_zip` (snapshots record it: the guest's zipimporter caches the
        archive's directory in linear memory, so a restore needs the identical file)."""
        if self._stdlib_sha256 is None:
            import hashlib

            h = hashlib.sha256()
            with open(self.stdlib_zip, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            self._stdlib_sha256 = h.hexdigest()
        return self._stdlib_sha256

    def _parse_module(self) -> None:
        """Read the prepared module once for both :attr:`export_names` and
        :attr:`mutable_globals` (a 9-10 MB file; only snapshots and side modules need them)."""
        from pyworkers.runtime.wasmbin import export_names, parse_globals

        data = self.installed.wasm.read_bytes()
        self._export_names = {n: k for n, (k, _i) in export_names(data).items()}
        self._mutable_globals = [g.index for g in parse_globals(data) if g.mutable]

    @property
    def export_names(self) -> dict[str, int]:
        """``{export name: kind}`` of the main module (kinds as in :mod:`wasmbin`)."""
        if self._export_names is None:
            self._parse_module()
        return self._export_names  # type: ignore[return-value]

    @property
    def mutable_globals(self) -> list[int]:
        """Indices of the prepared module's mutable globals (exported as ``__pyw_g<index>``)."""
        if self._mutable_globals is None:
            self._parse_module()
        return self._mutable_globals  # type: ignore[return-value]

    @classmethod
    def get(cls, release: Release | str | None = None, *, cache_dir: str | os.PathLike | None = None,
            progress: Callable[[str], None] | None = None) -> "Runtime":
        """The runtime for ``release`` (default: the newest non-experimental release), installing
        it on first use (see :func:`pyworkers.runtime.install.ensure_release`)."""
        if release is None:
            release = default_release()
        if isinstance(release, str):
            release = get_release(release)
        key = (release.pyodide_version, str(cache_dir))
        with cls._lock:
            rt = cls._cache.get(key)
            if rt is None:
                rt = cls(ensure_release(release, cache_dir=cache_dir, progress=progress))
                from pyworkers.runtime.bytecode import ensure_stdlib_bytecode

                rt.stdlib_zip = ensure_stdlib_bytecode(rt, progress=progress)
                cls._cache[key] = rt
            return rt
