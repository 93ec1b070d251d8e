"""Reliability: resolve stays linear in its input (issue 17, item 6): duplicate requirement
lines are merged before resolving. Offline: recorded index pages (see test_packages.py)."""
from __future__ import annotations

import time

from test_packages import FakeNet, _hermetic, net, run  # noqa: F401 - fixtures

from pyworkers.packages import ConflictError, parse_requirements

import pytest


def test_2000_duplicate_requirement_lines_resolve_in_under_5_s(net, tmp_path):
    lines = ["fastapi", "pydantic>=2", "annotated-types"] * 667  # 2,001 lines
    t0 = time.perf_counter()
    res = run(lines, net=net, tmp_path=tmp_path)
    dt = time.perf_counter() - t0
    assert dt < 5, f"2,001 requirement lines took {dt:.1f} s"
    assert res.get("fastapi") and res.get("pydantic") and res.get("annotated-types")
    single = run(["fastapi", "pydantic>=2", "annotated-types"], net=net, tmp_path=tmp_path / "b")
    assert [w.filename for w in res.wheels] == [w.filename for w in single.wheels]


def test_merged_duplicates_keep_their_meaning(net, tmp_path):
    # different specifiers for one project are intersected, not dropped
    res = run(["annotated-types>=0.7", "annotated-types<0.8", "annotated-types>=0.7"] * 300,
              net=net, tmp_path=tmp_path)
    assert str(res.get("annotated-types").version) == "0.7.0"
    with pytest.raises(ConflictError):
        run(["annotated-types<0.7", "annotated-types>=0.8"] * 500, net=net, tmp_path=tmp_path / "c")


def test_parsing_2000_lines_is_fast(tmp_path):
    f = tmp_path / "requirements.txt"
    f.write_text("fastapi>=0.100 ; python_version >= '3.10'\n" * 2000)
    t0 = time.perf_counter()
    reqs = parse_requirements(f)
    assert time.perf_counter() - t0 < 2
    assert len(reqs.requirements) == 2000


def test_2000_pinned_duplicate_lines_resolve_in_under_5_s(net, tmp_path):
    # before merging, 800 pinned lines took 1.0 s and 2,000 several (quadratic in resolvelib)
    t0 = time.perf_counter()
    res = run(["fastapi==0.162.0"] * 2000, net=net, tmp_path=tmp_path)
    dt = time.perf_counter() - t0
    assert dt < 5, f"2,000 pinned requirement lines took {dt:.1f} s"
    assert str(res.get("fastapi").version) == "0.162.0"
