"""Minimal reader/writer for the WebAssembly binary format (sections, imports, globals, exports).

Used at install time to make a Pyodide build instantiable from one store-independent
``wasmtime.Linker``: a Linker can hold host *functions* for every store, but memories, tables,
globals and tags belong to one store. So every non-function import of the main module is turned
into a definition with the value the Emscripten glue would have supplied (the glue's
``wasmImports``: ``__memory_base``, ``__table_base``, ``__stack_pointer``, ``GOT.mem``/``GOT.func``
globals, the imported memory, table and exception tags), and exported under a stable name.

Index spaces are preserved: imported entities come first in each index space, so the new
definitions are *prepended* to their section in import order, and only when every import of that
kind is converted.

Layout reference: the WebAssembly core specification, "Binary Format" (sections 1-13, LEB128).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

MAGIC = b"\0asm\x01\0\0\0"
# Section order in a module (custom sections, id 0, may appear anywhere).
SECTION_ORDER = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11]
KIND_FUNC, KIND_TABLE, KIND_MEMORY, KIND_GLOBAL, KIND_TAG = 0, 1, 2, 3, 4


class WasmFormatError(ValueError):
    """The bytes are not a module this reader understands."""


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if (value == 0 and not b & 0x40) or (value == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def read_uleb(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


def read_name(data, pos: int) -> tuple[str, int]:
    n, pos = read_uleb(data, pos)
    return bytes(data[pos:pos + n]).decode("utf-8"), pos + n


def name_bytes(s: str) -> bytes:
    b = s.encode("utf-8")
    return uleb(len(b)) + b


@dataclasses.dataclass
class Import:
    """One import: ``kind`` is 0 func, 1 table, 2 memory, 3 global, 4 tag; ``desc`` the raw
    descriptor bytes after the kind byte."""

    module: str
    name: str
    kind: int
    desc: bytes


def read_sections(data: bytes) -> list[tuple[int, bytes]]:
    """Split a module into ``[(section_id, payload), ...]`` in file order."""
    if data[:8] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (bad magic/version)")
    pos, out = 8, []
    while pos < len(data):
        sid = data[pos]
        size, pos = read_uleb(data, pos + 1)
        out.append((sid, bytes(data[pos:pos + size])))
        pos += size
    return out


def write_sections(sections: Iterable[tuple[int, bytes]]) -> bytes:
    out = bytearray(MAGIC)
    for sid, payload in sections:
        out.append(sid)
        out += uleb(len(payload))
        out += payload
    return bytes(out)


def _limits_len(data, pos: int) -> int:
    flags = data[pos]
    p = pos + 1
    _, p = read_uleb(data, p)
    if flags & 1:
        _, p = read_uleb(data, p)
    return p - pos


def parse_imports(payload: bytes) -> list[Import]:
    n, pos = read_uleb(payload, 0)
    out = []
    for _ in range(n):
        mod, pos = read_name(payload, pos)
        name, pos = read_name(payload, pos)
        kind = payload[pos]
        pos += 1
        start = pos
        if kind == KIND_FUNC:
            _, pos = read_uleb(payload, pos)
        elif kind == KIND_TABLE:
            pos += 1  # reftype (funcref 0x70 / externref 0x6f)
            pos += _limits_len(payload, pos)
        elif kind == KIND_MEMORY:
            pos += _limits_len(payload, pos)
        elif kind == KIND_GLOBAL:
            pos += 2  # valtype, mutability
        elif kind == KIND_TAG:
            pos += 1
            _, pos = read_uleb(payload, pos)
        else:
            raise WasmFormatError(f"unknown import kind {kind}")
        out.append(Import(mod, name, kind, bytes(payload[start:pos])))
    return out


def encode_imports(imports: list[Import]) -> bytes:
    out = bytearray(uleb(len(imports)))
    for imp in imports:
        out += name_bytes(imp.module) + name_bytes(imp.name) + bytes([imp.kind]) + imp.desc
    return bytes(out)


def _vec_items(payload: bytes) -> tuple[int, bytes]:
    """(count, bytes after the count) of a vector section."""
    n, pos = read_uleb(payload, 0)
    return n, payload[pos:]


def _prepend_vec(payload: bytes | None, items: list[bytes]) -> bytes:
    n, rest = _vec_items(payload) if payload else (0, b"")
    return uleb(n + len(items)) + b"".join(items) + rest


def _append_vec(payload: bytes | None, items: list[bytes]) -> bytes:
    n, rest = _vec_items(payload) if payload else (0, b"")
    return uleb(n + len(items)) + rest + b"".join(items)


def _set_section(sections: list[tuple[int, bytes]], sid: int, payload: bytes) -> None:
    for i, (s, _) in enumerate(sections):
        if s == sid:
            sections[i] = (sid, payload)
            return
    # insert in canonical order, after the last known section that precedes it
    rank = SECTION_ORDER.index(sid)
    insert_at = 0
    for i, (s, _) in enumerate(sections):
        if s != 0 and SECTION_ORDER.index(s) < rank:
            insert_at = i + 1
    sections.insert(insert_at, (sid, payload))


def _get_section(sections, sid: int) -> bytes | None:
    for s, p in sections:
        if s == sid:
            return p
    return None


def export_names(data: bytes) -> dict[str, tuple[int, int]]:
    """``{name: (kind, index)}`` of a module's exports."""
    payload = _get_section(read_sections(data), 7)
    out = {}
    if payload:
        n, pos = read_uleb(payload, 0)
        for _ in range(n):
            name, pos = read_name(payload, pos)
            kind = payload[pos]
            idx, pos = read_uleb(payload, pos + 1)
            out[name] = (kind, idx)
    return out


GlobalValue = Callable[[Import], int]


def internalize_imports(data: bytes, global_value: GlobalValue, *,
                        memory_export: str = "memory",
                        table_export: str = "__indirect_function_table",
                        tag_exports: bool = True, table_min: int | None = None) -> bytes:
    """Turn every table, memory, global and tag import into a definition.

    ``global_value(import) -> int`` gives each imported global's initial value (the global
    keeps its valtype and mutability; only i32 globals are supported, which is what Emscripten
    imports). The imported memory/table keep their limits; tags keep their type. Converted
    memories, tables and tags are exported as ``memory_export``/``table_export``/
    ``"<name>"`` unless already exported, and so are converted ``env`` globals (side modules
    import ``env.__stack_pointer``); ``table_min`` raises the converted table's minimum
    (the glue creates it larger than the import asks). Function imports are untouched.
    Raises :class:`WasmFormatError` for an unsupported global type.
    """
    sections = read_sections(data)
    imports = parse_imports(_get_section(sections, 2) or uleb(0))
    keep = [i for i in imports if i.kind == KIND_FUNC]
    moved = {k: [i for i in imports if i.kind == k] for k in (KIND_TABLE, KIND_MEMORY, KIND_GLOBAL, KIND_TAG)}
    if not any(moved.values()):
        return data
    _set_section(sections, 2, encode_imports(keep))
    existing_exports = export_names(data)
    new_exports: list[bytes] = []
    if moved[KIND_TABLE]:
        items = [imp.desc for imp in moved[KIND_TABLE]]
        if table_min is not None:
            reftype, flags = items[0][0], items[0][1]
            cur, p = read_uleb(items[0], 2)
            rest = items[0][p:]
            items[0] = bytes([reftype, flags]) + uleb(max(cur, table_min)) + rest
        _set_section(sections, 4, _prepend_vec(_get_section(sections, 4), items))
        if table_export not in existing_exports:
            new_exports.append(name_bytes(table_export) + bytes([KIND_TABLE]) + uleb(0))
    if moved[KIND_MEMORY]:
        items = [imp.desc for imp in moved[KIND_MEMORY]]
        _set_section(sections, 5, _prepend_vec(_get_section(sections, 5), items))
        if memory_export not in existing_exports:
            new_exports.append(name_bytes(memory_export) + bytes([KIND_MEMORY]) + uleb(0))
    if moved[KIND_TAG]:
        items = [imp.desc for imp in moved[KIND_TAG]]
        _set_section(sections, 13, _prepend_vec(_get_section(sections, 13), items))
        if tag_exports:
            for idx, imp in enumerate(moved[KIND_TAG]):
                if imp.name not in existing_exports:
                    new_exports.append(name_bytes(imp.name) + bytes([KIND_TAG]) + uleb(idx))
    if moved[KIND_GLOBAL]:
        items = []
        for imp in moved[KIND_GLOBAL]:
            valtype, mut = imp.desc[0], imp.desc[1]
            if valtype != 0x7F:
                raise WasmFormatError(f"global import {imp.module}.{imp.name}: only i32 supported")
            value = global_value(imp)
            value = value - (1 << 32) if value >= 1 << 31 else value
            items.append(bytes([valtype, mut]) + b"\x41" + sleb(value) + b"\x0b")
        _set_section(sections, 6, _prepend_vec(_get_section(sections, 6), items))
        for idx, imp in enumerate(moved[KIND_GLOBAL]):
            if imp.module == "env" and imp.name not in existing_exports:
                new_exports.append(name_bytes(imp.name) + bytes([KIND_GLOBAL]) + uleb(idx))
    if new_exports:
        _set_section(sections, 7, _append_vec(_get_section(sections, 7), new_exports))
    return write_sections(sections)


def imports_of(data: bytes) -> list[Import]:
    """All imports of a module, in order."""
    return parse_imports(_get_section(read_sections(data), 2) or uleb(0))
