"""Read ``requirements.txt`` files (pip's format) into :class:`InputRequirement` records.

Parsing uses ``requirements-parser`` to classify each line (VCS, editable, URI, local file,
specifier) and ``packaging`` for the PEP 508 content (name, extras, specifier, environment marker,
``name @ url``). This module adds what that library leaves out: continuation lines, ``--hash``
options, ``-r`` includes relative to the including file (cycles refused), environment markers kept
for later evaluation against the *target* environment, and local wheel paths.

Accepted: ``name[extras] <specifier> ; <marker>``, ``--hash=sha256:<hex>`` (one or more per line),
``# comments``, ``-r other.txt``, ``--pre``, ``-i/--index-url URL``, ``--extra-index-url URL``,
``--no-index``, a wheel by path (``./dist/x-1.0-py3-none-any.whl``, ``file://...whl``) or by URL
(``name @ https://.../x.whl``). Ignored with a note: ``-f/--find-links``, ``--trusted-host``,
``--prefer-binary``, ``--only-binary``, ``--require-hashes`` (every pin is hashed anyway).

Refused with :class:`~pyworkers.packages.errors.RequirementsError` (the sandbox cannot build from
source): VCS URLs, ``-e``/``--editable``, source trees, sdists (``.tar.gz``/``.zip``),
``--no-binary``; also ``-c`` constraints files and unknown options.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path

import requirements as _rp  # requirements-parser
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (InvalidWheelFilename, canonicalize_name, parse_wheel_filename)

from .errors import RequirementsError

_HASH_RE = re.compile(r"\s--hash[=\s]\s*([A-Za-z0-9_]+):([0-9A-Fa-f]+)")
_PER_REQ_OPT_RE = re.compile(r"\s(--config-settings|--global-option|--install-option)[=\s]\S+")
_SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
_IGNORED = ("-f", "--find-links", "--trusted-host", "--prefer-binary", "--only-binary",
            "--require-hashes", "--use-feature", "--progress-bar")
_MAX_DEPTH = 20


@dataclasses.dataclass(frozen=True)
class InputRequirement:
    """One requirement of the input.

    Attributes:
        requirement: the PEP 508 requirement (name, extras, specifier, marker, url).
        hashes: allowed ``"sha256:<hex>"`` digests from ``--hash`` (empty: any).
        origin: where it was written, ``"requirements.txt:3"``.
        wheel_path: a local wheel file (absolute), for path and ``file://`` requirements.
    """

    requirement: Requirement
    hashes: frozenset[str] = frozenset()
    origin: str = ""
    wheel_path: Path | None = None

    @property
    def name(self) -> str:
        """Canonical project name (PEP 503 normalised)."""
        return canonicalize_name(self.requirement.name)

    @property
    def url(self) -> str | None:
        """The direct URL (``name @ url``), a ``file://`` URL for local wheels, else ``None``."""
        if self.wheel_path is not None:
            return self.wheel_path.as_uri()
        return self.requirement.url

    def key(self) -> str:
        """A stable text form (requirement, hashes, local wheel digest) for lock reuse checks."""
        parts = [str(self.requirement)]
        if self.wheel_path is not None:
            try:
                parts.append("sha256:" + hashlib.sha256(self.wheel_path.read_bytes()).hexdigest())
            except OSError:
                parts.append("missing")
        parts += sorted(self.hashes)
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class RequirementsInput:
    """The parsed input: requirements plus the pip options that matter here.

    ``index_url``/``extra_index_urls``/``no_index`` come from ``-i``, ``--extra-index-url`` and
    ``--no-index`` lines; ``notes`` lists ignored options; ``files`` the files read.
    """

    requirements: tuple[InputRequirement, ...]
    pre: bool = False
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    no_index: bool = False
    notes: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()

    def key(self) -> list[str]:
        """Stable text form for the lock's input digest."""
        out = [r.key() for r in self.requirements]
        out.append(f"pre={self.pre} index={self.index_url} extra={list(self.extra_index_urls)} "
                   f"no_index={self.no_index}")
        return out


def parse_requirements(source: str | os.PathLike | Iterable[str], *,
                       base_dir: str | os.PathLike | None = None,
                       label: str = "<requirements>") -> RequirementsInput:
    """Parse a requirements file (``str``/``PathLike`` path) or an iterable of lines.

    Relative paths in lines (``-r``, wheel paths) resolve against the file's directory, or
    ``base_dir`` (default: the current directory) for lines; ``label`` names lines in origins
    (``"<label>:3"``). Raises
    :class:`~pyworkers.packages.errors.RequirementsError` with ``file:line`` for refused or
    malformed lines and for missing files.
    """
    st = _State()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser().resolve()
        st.read_file(path, origin=None, depth=0)
    else:
        if isinstance(source, bytes):
            raise TypeError("pass a path or an iterable of lines")
        base = Path(base_dir or os.getcwd()).resolve()
        st.parse_text("\n".join(source), base, label, depth=0)
    return RequirementsInput(tuple(st.reqs), st.pre, st.index_url, tuple(st.extra),
                             st.no_index, tuple(dict.fromkeys(st.notes)), tuple(st.files))


class _State:
    def __init__(self) -> None:
        self.reqs: list[InputRequirement] = []
        self.pre = False
        self.index_url: str | None = None
        self.extra: list[str] = []
        self.no_index = False
        self.notes: list[str] = []
        self.files: list[Path] = []
        self._stack: list[Path] = []

    def read_file(self, path: Path, origin: str | None, depth: int) -> None:
        where = f"{origin}: " if origin else ""
        if path in self._stack:
            raise RequirementsError(f"{where}requirements file {path} includes itself (-r cycle)")
        if depth > _MAX_DEPTH:
            raise RequirementsError(f"{where}-r includes nested deeper than {_MAX_DEPTH}")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RequirementsError(f"{where}requirements file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise RequirementsError(f"{where}cannot read {path}: {e}") from None
        self.files.append(path)
        self._stack.append(path)
        try:
            self.parse_text(text, path.parent, path.name, depth)
        finally:
            self._stack.pop()

    def parse_text(self, text: str, base: Path, fname: str, depth: int) -> None:
        for lineno, line in _logical_lines(text):
            where = f"{fname}:{lineno}"
            self.parse_line(line, base, where, depth)

    def parse_line(self, line: str, base: Path, where: str, depth: int) -> None:
        if line.startswith("-"):
            opt, arg = _split_opt(line)
            if opt in ("-r", "--requirement"):
                if not arg:
                    raise RequirementsError(f"{where}: {opt} needs a file name")
                self.read_file((base / arg).resolve(), where, depth + 1)
            elif opt in ("-c", "--constraint"):
                raise RequirementsError(f"{where}: constraints files ({opt}) are not supported: "
                                        "put the pins in requirements.txt")
            elif opt in ("-e", "--editable"):
                raise RequirementsError(f"{where}: editable requirement {arg!r} refused: the "
                                        "sandbox cannot build from source; list a wheel instead")
            elif opt == "--no-binary":
                raise RequirementsError(f"{where}: --no-binary refused: the sandbox cannot "
                                        "build from source")
            elif opt in ("-i", "--index-url"):
                self.index_url = arg or None
            elif opt == "--extra-index-url":
                if arg:
                    self.extra.append(arg)
            elif opt == "--no-index":
                self.no_index = True
            elif opt == "--pre":
                self.pre = True
            elif opt in _IGNORED:
                self.notes.append(f"{where}: {opt} ignored")
            else:
                raise RequirementsError(f"{where}: unknown or unsupported option {opt!r}")
            return
        self.reqs.append(_parse_requirement(line, base, where))


def _split_opt(line: str) -> tuple[str, str]:
    m = re.match(r"(--?[A-Za-z][\w-]*)(?:[=\s]\s*(.*))?$", line)
    if not m:
        return line, ""
    return m.group(1), (m.group(2) or "").strip()


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Join ``\\`` continuations, drop comments (``#`` at line start or after whitespace)."""
    buf: list[str] = []
    start = 0
    for i, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = i
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(raw)
        line = " ".join(buf)
        buf = []
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            yield start, line
    if buf:
        line = re.sub(r"(^|\s)#.*$", "", " ".join(buf)).strip()
        if line:
            yield start, line


def _parse_requirement(line: str, base: Path, where: str) -> InputRequirement:
    hashes = set()
    for algo, hexd in _HASH_RE.findall(" " + line):
        if algo.lower() != "sha256":
            raise RequirementsError(f"{where}: --hash={algo}:... unsupported: use sha256")
        hashes.add(f"sha256:{hexd.lower()}")
    line = _HASH_RE.sub("", " " + line).strip()
    line = _PER_REQ_OPT_RE.sub("", " " + line).strip()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rp = _rp.requirement.Requirement.parse(line)
        except Exception:  # noqa: BLE001 - the library raises assorted errors; classify below
            rp = None
    if rp is not None and (rp.vcs or rp.editable):
        raise RequirementsError(f"{where}: {line!r} is a VCS URL: the sandbox cannot build from "
                                "source; list a released wheel instead")

    # A bare path or URL (optionally with "; marker").
    named = re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*@", line)
    if not named and (rp is None or rp.uri or rp.local_file or _looks_like_path(line)):
        target, marker = _split_marker(line)
        return _direct(target, None, marker, base, where, frozenset(hashes))
    try:
        req = Requirement(line)
    except InvalidRequirement as e:
        raise RequirementsError(f"{where}: invalid requirement {line!r}: {e}") from None
    if req.url:
        marker = f"{req.marker}" if req.marker else None
        name = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
        return _direct(req.url, name, marker, base, where, frozenset(hashes))
    return InputRequirement(req, frozenset(hashes), where)


def _looks_like_path(line: str) -> bool:
    first = line.split(";")[0].strip()
    return ("/" in first or "\\" in first or first.startswith(".")
            or first.endswith((".whl",) + _SDIST_SUFFIXES))


def _split_marker(line: str) -> tuple[str, str | None]:
    m = re.search(r"\s*;\s", line) or (re.search(r";", line) if "://" not in line else None)
    if not m:
        return line.strip(), None
    return line[:m.start()].strip(), line[m.end():].strip() or None


def _direct(target: str, name: str | None, marker: str | None, base: Path, where: str,
            hashes: frozenset[str]) -> InputRequirement:
    parsed = urllib.parse.urlsplit(target)
    is_url = parsed.scheme in ("http", "https", "file")
    if parsed.scheme and not is_url and len(parsed.scheme) > 1:
        raise RequirementsError(f"{where}: {target!r}: unsupported URL scheme {parsed.scheme!r} "
                                "(VCS and other sources cannot be built in the sandbox)")
    filename = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1]) if is_url else Path(target).name
    if not filename.endswith(".whl"):
        what = ("a source distribution" if filename.endswith(_SDIST_SUFFIXES)
                else "not a wheel (a source tree or other file)")
        raise RequirementsError(f"{where}: {target!r} is {what}: the sandbox cannot build from "
                                "source; build a wheel and list its path")
    try:
        wname, wver, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as e:
        raise RequirementsError(f"{where}: {filename!r} is not a valid wheel name: {e}") from None
    extras = ""
    if name is not None:
        m = re.match(r"^([^\[\s]+)\s*(\[[^\]]*\])?", name)
        base_name, extras = m.group(1), (m.group(2) or "")
        if canonicalize_name(base_name) != wname:
            raise RequirementsError(f"{where}: {name} @ {filename}: the wheel is for {wname}")
    path: Path | None = None
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif not is_url:
        path = (base / target).resolve()
    if path is not None and not path.is_file():
        raise RequirementsError(f"{where}: wheel file not found: {path}")
    url = path.as_uri() if path is not None else target
    text = f"{wname}{extras} @ {url}" + (f" ; {marker}" if marker else "")
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        raise RequirementsError(f"{where}: invalid requirement {target!r}: {e}") from None
    del wver
    return InputRequirement(req, hashes, where, path)
