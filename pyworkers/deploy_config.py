"""Deploy's platform helpers: the deploy-time checks of a worker's secrets and bindings
(:func:`check_platform`) and the egress policy a deployment is served with
(:func:`egress_policy`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyworkers.deploy_errors import DeployError
from pyworkers.store import Store


def check_platform(cfg, st: Store) -> None:
    """Deploy-time checks of secrets and bindings: no ``[vars]`` key may share a name with a
    secret of the worker or a binding; every backend ``url`` must answer. Raises
    :class:`DeployError` (stage ``config``) naming the file and key."""
    from pyworkers.bindings import BindingsError
    from pyworkers.bindings.host import check_reachable
    from pyworkers.bindings.secrets import SecretStore

    where = str(cfg.source or cfg.app_dir / "pyworkers.toml")
    try:
        secrets = set(SecretStore(st.root).names(cfg.name)) if st.root.is_dir() else set()
        both = sorted(secrets & set(cfg.vars))
        if both:
            raise BindingsError(
                f"{where}: vars.{both[0]}: worker {cfg.name!r} also has a secret named "
                f"{both[0]}: rename the var, or `pyworkers secret delete {both[0]} --name "
                f"{cfg.name}`")
        clash = sorted(secrets & {b["binding"] for v in cfg.bindings.values() for b in v})
        if clash:
            raise BindingsError(f"{where}: binding {clash[0]}: worker {cfg.name!r} also has a "
                                f"secret named {clash[0]}: rename one of them")
        check_reachable(cfg.bindings, where,
                        secrets=SecretStore(st.root).values(cfg.name) if secrets else {})
    except BindingsError as e:
        raise DeployError("config", str(e)) from None

def egress_policy(dep: Any, *, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> Any:
    """The egress :class:`pyworkers.runtime.egress.Policy` of deployment ``dep`` (its
    ``[outbound]`` table, CA file read from the deployment's app copy), extended with a
    server's overrides (``--outbound-allow``/``--outbound-deny`` patterns). Give it to the
    isolates that serve ``dep`` (``Isolate(egress=...)``, ``Restorer.new_isolate(egress=...)``
    or ``isolate.host.egress``). Raises :class:`pyworkers.config.ConfigError` for a bad
    CA file and :class:`pyworkers.runtime.egress.EgressError` for a bad override pattern."""
    from pyworkers.config import outbound_policy

    outbound = dep.record.get("config", {}).get("outbound") or {}
    where = f"deployment {dep.id} [outbound]"
    return outbound_policy(outbound, dep.app_dir, where).extended(allow, deny)
