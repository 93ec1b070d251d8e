"""Registry credentials: explicit ones, else the usual docker configuration file.

The docker configuration is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``
(the file ``docker login``, ``podman login --authfile`` and ``oras login`` write). Its
``"auths"`` object maps a registry (``host[:port]``, also written ``https://host[:port]`` or
``https://host/v1/``) to ``{"auth": base64("user:password")}`` or ``{"username", "password"}``;
``"identitytoken"`` (an OAuth2 refresh token) is sent as the password with the user
``<token>``, as docker does. ``"credHelpers"``/``"credsStore"`` name external
``docker-credential-<helper>`` programs: they are run with the registry on standard input and
answer ``{"Username", "Secret"}`` (docker-credential-helpers protocol).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["Credentials", "docker_config_path", "credentials_for"]


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A user name and password (or identity token) for HTTP basic auth and token requests."""

    username: str
    password: str
    source: str = "flags"

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json`` if ``DOCKER_CONFIG`` is set, else ``~/.docker/config.json``."""
    d = os.environ.get("DOCKER_CONFIG")
    return (Path(d) if d else Path.home() / ".docker") / "config.json"


def _norm(key: str) -> str:
    k = key.strip()
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix):]
    return k.split("/", 1)[0].lower()


def _helper(name: str, host: str, path: Path, required: bool = True) -> Credentials | None:
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        if not required:  # a default store (credsStore) that is absent: go anonymous
            return None
        raise ValueError(f"{path}: credential helper {name!r} for {host} is not installed "
                         f"(docker-credential-{name} is not on PATH): install it or pass "
                         "--username/--password-stdin")
    r = subprocess.run([exe, "get"], input=host, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        data = json.loads(r.stdout)
        return Credentials(data["Username"], data["Secret"], f"docker-credential-{name}")
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"docker-credential-{name} answered something that is not "
                         "{\"Username\", \"Secret\"} JSON") from None


def credentials_for(host: str, *, config: Path | None = None) -> Credentials | None:
    """The credentials for registry ``host`` (``name[:port]``) from the docker configuration
    file ``config`` (default :func:`docker_config_path`), or ``None`` when it has none.

    Raises ``ValueError`` (one line naming the file and key) for a file that is not JSON or an
    ``auth`` value that is not base64 of ``user:password``.
    """
    path = config or docker_config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the docker configuration ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the docker configuration is not a JSON object")
    want = _norm(host)
    helpers = data.get("credHelpers") or {}
    for key, helper in helpers.items():
        if _norm(key) == want:
            return _helper(helper, host, path)
    for key, entry in (data.get("auths") or {}).items():
        if _norm(key) != want or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials("<token>", entry["identitytoken"], str(path))
        if entry.get("auth"):
            try:
                user, sep, pw = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise ValueError(f"{path}: auths[{key!r}].auth is not base64 of user:password: "
                                 "log in again (docker login / oras login)")
            return Credentials(user, pw, str(path))
        if entry.get("username") and entry.get("password") is not None:
            return Credentials(entry["username"], entry["password"], str(path))
    if data.get("credsStore"):
        return _helper(data["credsStore"], host, path, required=False)
    return None
