"""Deploy warns about (or, under a flag, refuses) entropy used by an app's top level."""
from pathlib import Path

import pytest

from pyworkers.deploy import DeployError, deploy
from pyworkers.store import Store

pytestmark = pytest.mark.slow
APP = Path(__file__).parent / "data" / "deploy" / "entropy_app"


def test_entropy_at_import_is_a_warning_naming_the_module(tmp_path):
    warnings = []
    dep = deploy(APP, store=tmp_path / "store", progress=lambda m: warnings.append(m))
    assert dep.record["entropy_at_import"] == [["main", 1]] or dep.record["entropy_at_import"] == [("main", 1)]
    text = "\n".join(w for w in warnings if w.startswith("warning:"))
    assert "main (1 call)" in text and "entropy" in text


def test_entropy_at_import_fails_the_deploy_under_the_flag(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(DeployError) as ei:
        deploy(APP, store=store, flags=["python_entropy_at_import_error"], progress=lambda m: None)
    assert ei.value.stage == "import"
    assert "main (1 call)" in ei.value.message
    assert Store(store).list() == []
