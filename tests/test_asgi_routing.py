"""Routing rules of the serve front (``ServerApp.route``): no isolate is booted."""
from __future__ import annotations

import pytest

from pyworkers.runtime.asgi import ServerApp


@pytest.mark.parametrize("host,path,expected", [
    ("a.localhost:8000", "/x", ("a", "")),          # Host header wins
    ("a.localhost", "/b/x", ("a", "")),             # ... even over a path prefix
    ("127.0.0.1:8000", "/b/x", ("b", "/b")),        # path prefix -> root_path
    ("127.0.0.1:8000", "/b", ("b", "/b")),
    ("127.0.0.1:8000", "/bx/y", None),              # prefix must be a whole segment
    ("c.localhost", "/x", None),                    # unknown name: no rule matches
    ("127.0.0.1", "/", None),
])
def test_routing_rules(host, path, expected):
    never = lambda **kw: pytest.fail("factory called")  # noqa: E731 - routing boots nothing
    app = ServerApp({"a": never, "b": never})
    scope = {"type": "http", "path": path, "root_path": "", "headers": [(b"host", host.encode())]}
    assert app.route(scope) == expected


def test_routing_single_deployment_takes_everything_else():
    never = lambda **kw: pytest.fail("factory called")  # noqa: E731
    app = ServerApp({"only": never})
    assert app.route({"path": "/x", "root_path": "", "headers": []}) == ("only", "")
    assert app.route({"path": "/only/x", "root_path": "", "headers": []}) == ("only", "/only")
