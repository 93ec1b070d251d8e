"""Deploy errors and their messages: :class:`DeployError`, the translation of any stage's
exception into one (:func:`as_deploy_error`), and the capped guest output that error reports
carry (:class:`GuestOutput`, :func:`with_output`)."""
from __future__ import annotations

import dataclasses

from pyworkers.store import StoreError

#: Bytes of guest output kept for an error report.
_OUTPUT_CAP = 64 << 10


class DeployError(Exception):
    """The deploy failed in ``stage`` (one of :data:`pyworkers.deploy.STAGES`); nothing was written.

    ``message`` is one line naming what failed and the fix; ``detail`` holds the app's
    traceback from the sandbox, the resolver's explanation or the guest's output ('' if none).
    """

    def __init__(self, stage: str, message: str, detail: str = ""):
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.detail = detail


def as_deploy_error(stage: str, e: BaseException) -> BaseException:
    """The :class:`DeployError` of stage ``stage`` for exception ``e`` (the package, runtime,
    sandbox, config and store errors get their messages here; any other ``Exception`` is
    reported as a pyworkers bug with its traceback); a ``BaseException`` such as
    ``KeyboardInterrupt`` is returned as it is."""
    from pyworkers.compat import CompatError
    from pyworkers.config import ConfigError
    from pyworkers.packages import PackagesError

    if isinstance(e, DeployError):
        return e
    if isinstance(e, (ConfigError, CompatError, StoreError)):
        return DeployError(stage, str(e))
    if isinstance(e, PackagesError):
        return DeployError(stage, e.message, e.detail)
    from pyworkers.runtime import GuestError, IsolateError
    from pyworkers.runtime.install import RuntimeInstallError

    if isinstance(e, RuntimeInstallError):
        return DeployError(stage, f"cannot install the runtime: {e}")
    if isinstance(e, GuestError):
        return DeployError(stage, f"the sandbox raised {e.type_name} during the {stage} stage: "
                                  f"{e.message}", e.traceback)
    if isinstance(e, IsolateError):
        return DeployError(stage, f"the sandbox failed during the {stage} stage: {e}")
    if isinstance(e, OSError):
        return DeployError(stage, f"{e} (during the {stage} stage)")
    if isinstance(e, Exception):  # a bug: keep the host traceback for the report
        import traceback

        return DeployError(stage, f"unexpected {type(e).__name__} during the {stage} stage: "
                                  f"{e} (a pyworkers bug: please report it with the traceback "
                                  "above)", "".join(traceback.format_exception(e)))
    return e

@dataclasses.dataclass
class GuestOutput:
    """Guest output sink with a cap (for error reports)."""

    data: bytearray = dataclasses.field(default_factory=bytearray)

    def __call__(self, b: bytes) -> None:
        if len(self.data) < _OUTPUT_CAP:
            self.data += b[: _OUTPUT_CAP - len(self.data)]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def with_output(detail: str, out: GuestOutput) -> str:
    """``detail`` followed by the guest's output ``out`` under "output of the app:" (``detail``
    alone when there was none)."""
    text = out.text().strip()
    if not text:
        return detail
    return (detail.rstrip() + "\n\n" if detail else "") + "output of the app:\n" + text
