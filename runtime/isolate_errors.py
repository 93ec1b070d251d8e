"""The errors an isolate raises on the host (root: :class:`IsolateError`) and the one-line
explanation of a wasm trap that an :class:`IsolateCrashed` carries as its ``reason``."""
from __future__ import annotations


class IsolateError(RuntimeError):
    """Base of the errors an isolate raises on the host."""


class GuestError(IsolateError):
    """An uncaught exception in guest code. ``type_name``, ``message`` and ``traceback`` (the
    guest's traceback text) describe it; the isolate stays usable."""

    def __init__(self, type_name: str, message: str, traceback: str, stdout: bytes = b"",
                 stderr: bytes = b""):
        super().__init__(traceback.rstrip() or f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.stdout = stdout
        self.stderr = stderr


class IsolateCrashed(IsolateError):
    """The isolate trapped (abort, stack exhaustion, out of memory, interrupted...) and is dead;
    ``reason`` says why. Other isolates are unaffected."""

    def __init__(self, reason: str):
        super().__init__(f"isolate crashed: {reason}")
        self.reason = reason


class GuestExited(IsolateError):
    """The guest called ``exit``/``proc_exit`` at the C level; ``code`` is its status."""

    def __init__(self, code: int):
        super().__init__(f"guest exited with status {code}")
        self.code = code


def explain_trap(ev: BaseException) -> str:
    """One line for a wasm trap (a ``wasmtime.Trap``/``WasmtimeError``): its trap code in
    words plus wasmtime's message, e.g. ``"wasm trap: call stack exhausted (unbounded
    recursion?)"``."""
    code = getattr(ev, "trap_code", None)
    text = str(getattr(ev, "message", "") or ev)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if not ln.startswith(("error while executing", "0:", "wasm backtrace"))
                   and not ln[:1].isdigit()), lines[0] if lines else "trap")
    words = {
        "STACK_OVERFLOW": "call stack exhausted (unbounded recursion?)",
        "MEMORY_OUT_OF_BOUNDS": "out of bounds memory access",
        "INTERRUPT": "interrupted (time limit exceeded)",
        "UNREACHABLE_CODE_REACHED": "unreachable code reached (abort or fatal error in the guest)",
        "OUT_OF_FUEL": "out of fuel",
        "INDIRECT_CALL_TO_NULL": "call to a null function pointer",
        "BAD_SIGNATURE": "indirect call signature mismatch",
    }
    name = getattr(code, "name", None)
    if name in words:
        return f"wasm trap: {words[name]}"
    return f"wasm trap: {detail}"
