"""Routing rules of the serve front (``pyworkers.serve.routing.route``): no isolate is booted."""
from __future__ import annotations

import pytest

from pyworkers.serve import ServeConfig, ServerApp
from pyworkers.serve.routing import route as _route


def route(app: ServerApp, scope: dict):
    return _route(scope, app.pools)


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
    app = ServerApp({"a": never, "b": never}, ServeConfig())
    scope = {"type": "http", "path": path, "root_path": "", "headers": [(b"host", host.encode())]}
    assert route(app, scope) == expected


def test_routing_single_deployment_takes_everything_else():
    never = lambda **kw: pytest.fail("factory called")  # noqa: E731
    app = ServerApp({"only": never}, ServeConfig())
    assert route(app, {"path": "/x", "root_path": "", "headers": []}) == ("only", "")
    assert route(app, {"path": "/only/x", "root_path": "", "headers": []}) == ("only", "/only")


def test_host_routing_keeps_the_worker_names_case():
    """Host names are case-insensitive; worker names are not lowercased by routing."""
    never = lambda **kw: pytest.fail("factory called")  # noqa: E731
    app = ServerApp({"MyApp": never, "b": never}, ServeConfig())
    scope = {"path": "/", "root_path": "", "headers": [(b"host", b"myapp.localhost:8000")]}
    assert route(app, scope) == ("MyApp", "")
