"""The guest-side Python that pyworkers puts into every isolate (``runtime/guest/``, mounted at
``/lib/pyworkers``) and a digest of it: a snapshot taken with one version of these modules has
them imported (their code objects are in its memory), so caches of snapshots must be keyed by
it, or a pyworkers upgrade would keep serving the old guest code."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

#: the folder of the guest modules (``_pyworkers_guest``, ``_pyworkers_serve``, ...)
GUEST_DIR = Path(__file__).with_name("guest")


@functools.cache
def guest_code_digest() -> str:
    """sha256 (hex) over the names and contents of the ``*.py`` files in :data:`GUEST_DIR`
    (sorted by name); computed once per process."""
    h = hashlib.sha256()
    for p in sorted(GUEST_DIR.glob("*.py")):
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


__all__ = ["GUEST_DIR", "guest_code_digest"]
