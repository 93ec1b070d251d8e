"""Stands in for ``urllib3.contrib.emscripten`` in the pyworkers sandbox.

urllib3 2.x calls ``inject_into_urllib3()`` when ``sys.platform == "emscripten"`` to swap its
connections for the browser's ``fetch`` (which needs the ``js`` module). pyworkers gives the
guest real sockets (through the host), so urllib3 keeps its normal socket connections.
"""


def inject_into_urllib3() -> None:
    """Nothing to do: urllib3's socket-based connections work in pyworkers."""
