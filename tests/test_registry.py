"""pyworkers.registry against a real registry: Debian's ``docker-registry`` (the CNCF
distribution server) started on 127.0.0.1 by a fixture, real deployments of examples/hello.

The deployment tests deploy examples/hello (and a changed copy) once per module: they resolve
against the package index and boot the real runtime (network + slow). The reference, config,
tarball, TLS and auth tests need only the registry binary.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pyworkers.registry import (ARTIFACT_TYPE, MEDIA_TYPES, Credentials, DigestMismatch,
                                RegistryAuthError, RegistryClient, RegistryError,
                                RegistryFollower, RegistryUnreachable, credentials_for,
                                fetch_manifest, is_loopback, parse_reference, pull_deployment,
                                push_deployment)
from pyworkers.registry.artifact import extract_tarball, tree_hash, write_tarball
from pyworkers.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
needs_registry = pytest.mark.skipif(
    not os.path.exists(REGISTRY_BIN),
    reason="docker-registry (Debian package docker-registry) is not installed; .ci/run installs it")


# --------------------------------------------------------------------------- registry fixture

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A docker-registry process on 127.0.0.1 with its storage and JSON log in ``root``."""

    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None,
                 htpasswd: Path | None = None, extra: list[str] | None = None):
        self.root = root
        self.storage = root / "storage"
        self.log = root / "registry.log"
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = tls
        cfg = ["version: 0.1", "log:", "  level: info", "  formatter: json",
               "storage:", "  filesystem:", f"    rootdirectory: {self.storage}",
               "  delete:", "    enabled: true",
               "http:", f"  addr: {self.host}"]
        if tls:
            cfg += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
        if htpasswd:
            cfg += ["auth:", "  htpasswd:", "    realm: pyworkers-test", f"    path: {htpasswd}"]
        cfg += extra or []
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text("\n".join(cfg) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.root / "config.yml")],
                                     stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not listen on {self.host}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ref(self, repo: str = "team/workers", tag: str | None = None) -> str:
        return f"oci://{self.host}/{repo}" + (f":{tag}" if tag else "")

    def requests(self) -> list[dict]:
        """The registry's completed requests so far: [{"method", "uri", "status"}]."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("msg") == "response completed":
                out.append({"method": e.get("http.request.method"),
                            "uri": e.get("http.request.uri"),
                            "status": e.get("http.response.status")})
        return out

    def uploads(self) -> int:
        """How many blob uploads were started (``POST /v2/<repo>/blobs/uploads/``)."""
        return sum(1 for r in self.requests()
                   if r["method"] == "POST" and r["uri"].split("?")[0].endswith("/blobs/uploads/"))

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


@pytest.fixture
def registry(tmp_path):
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed (Debian package docker-registry)")
    reg = Registry(tmp_path / "registry")
    yield reg
    reg.stop()


# --------------------------------------------------------------------------- deployments

def cli(*args: str, input: str | None = None, timeout: float = 900,
        env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyworkers", *args], capture_output=True,
                          text=True, timeout=timeout, input=input,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A store with two deployments of worker ``hello``: examples/hello (``first``) and a copy
    whose main.py was changed (``second``, current); same requirements, so same layer."""
    base = tmp_path_factory.mktemp("deployed")
    store = base / "store"
    app = base / "hello"
    shutil.copytree(EXAMPLES / "hello", app)
    r = cli("deploy", str(app), "--store", str(store), "--json", "-q")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)["id"]
    main = app / "main.py"
    main.write_text(main.read_text().replace("from pyworkers!", "from pyworkers, version 2!"))
    r = cli("deploy", str(app), "--store", str(store), "--json", "-q")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["layer"]["reused"] is True
    st = Store(store)
    return {"store": st, "first": st.get(first), "second": st.get(rec["id"])}


def files_of(root: Path, mtime: bool = False) -> dict[str, tuple]:
    """relative path -> (sha256,) or (sha256, int mtime) of every file under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256(p.read_bytes()).hexdigest()
            out[p.relative_to(root).as_posix()] = (h, int(p.stat().st_mtime)) if mtime else (h,)
    return out


# --------------------------------------------------------------------------- push / pull

@pytest.mark.slow
@pytest.mark.network
def test_push_then_pull_into_another_store(registry, deployed, tmp_path):
    dep = deployed["first"]
    r = cli("push", dep.id, registry.ref(), "--store", str(dep.root), "--json")
    assert r.returncode == 0, r.stderr
    pushed = json.loads(r.stdout)
    assert pushed["reference"] == registry.ref(tag="hello")  # the tag defaults to the worker
    roles = [b["role"] for b in pushed["blobs"]]
    assert roles == ["config", "record", "app", "lock", "site-packages", "snapshot"]
    assert all(b["uploaded"] for b in pushed["blobs"])
    assert registry.uploads() == 6

    # What is in the registry: an OCI artifact with our media types, content-addressed.
    with RegistryClient(registry.host) as c:
        manifest, digest = fetch_manifest(c, parse_reference(registry.ref(tag="hello")))
    assert digest == pushed["digest"]
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert [d["mediaType"] for d in manifest["layers"]] == [
        MEDIA_TYPES[k] for k in ("record", "app", "lock", "site-packages", "snapshot")]
    assert manifest["annotations"]["io.pyworkers.deployment.id"] == dep.id
    for d in manifest["layers"]:
        assert hashlib.sha256(registry.blob_file(d["digest"]).read_bytes()).hexdigest() \
            == d["digest"].split(":")[1]
    snap = next(d for d in manifest["layers"] if d["mediaType"] == MEDIA_TYPES["snapshot"])
    assert snap["digest"] == dep.record["snapshot"]["sha256"]

    # Pull with the CLI into an empty store: same record, same files, layer mtimes kept.
    store2 = tmp_path / "store2"
    r = cli("pull", registry.ref(tag="hello"), "--store", str(store2), "--json")
    assert r.returncode == 0, r.stderr
    pulled = json.loads(r.stdout)
    assert pulled["deployment"] == dep.id and pulled["pulled"] and pulled["current"]
    assert pulled["digest"] == pushed["digest"]
    st2 = Store(store2)
    got = st2.current("hello")
    assert got.record == dep.record
    assert files_of(got.dir) == files_of(dep.dir)
    # the layer's mtimes too: its .pyc files are validated against their sources' mtimes
    assert files_of(got.layer_dir, mtime=True) == files_of(dep.layer_dir, mtime=True)
    assert (got.app_dir / "main.py").stat().st_mode & 0o222 == 0  # published read-only

    # The pulled snapshot restores and holds the imported app.
    from pyworkers.snapshot import restore_isolate

    iso = restore_isolate(got.snapshot_path, **got.restore_kwargs())
    try:
        assert iso.eval("__import__('sys').modules['main'].app.title") == "'hello'"
    finally:
        iso.close()

    # Pushing from the pulled store reproduces the same artifact (nothing uploaded).
    before = registry.uploads()
    with RegistryClient(registry.host) as c:
        again = push_deployment(c, parse_reference(registry.ref(tag="copy")), got)
    assert again.digest == pushed["digest"] and again.uploaded_bytes == 0
    assert registry.uploads() == before

    # Pulling again changes nothing and downloads only the record.
    with RegistryClient(registry.host) as c:
        res = pull_deployment(c, parse_reference(registry.ref(tag="hello")), st2)
    assert not res.pulled and res.current and [b["role"] for b in res.blobs] == ["record"]


@pytest.mark.slow
@pytest.mark.network
def test_second_push_uploads_only_changed_layers(registry, deployed, tmp_path):
    first, second = deployed["first"], deployed["second"]
    ref = parse_reference(registry.ref(tag="hello"))
    with RegistryClient(registry.host) as c:
        r1 = push_deployment(c, ref, first)
        n1 = registry.uploads()
        r2 = push_deployment(c, ref, second)
    n2 = registry.uploads() - n1
    d1 = {b["role"]: b["digest"] for b in r1.blobs}
    d2 = {b["role"]: b["digest"] for b in r2.blobs}
    changed = {role for role in d2 if d2[role] != d1.get(role)}
    assert {"record", "app", "snapshot"} <= changed
    assert "site-packages" not in changed and "config" not in changed
    uploaded = {b["role"] for b in r2.blobs if b["uploaded"]}
    assert uploaded == changed
    assert n2 == len(changed)  # counted by the registry itself
    assert r2.uploaded_bytes < sum(b["size"] for b in r2.blobs) - 3_000_000
    print(f"\nsecond push uploaded {sorted(uploaded)}: {r2.uploaded_bytes} of "
          f"{sum(b['size'] for b in r2.blobs)} bytes in {r2.seconds:.2f} s")

    # The tag moved; a store that has the first deployment pulls the second without the layer.
    with RegistryClient(registry.host) as c:
        st = Store(tmp_path / "node")
        pull_deployment(c, dataclass_digest(ref, r1.digest), st)
        res = pull_deployment(c, ref, st)
    assert res.deployment.id == second.id and res.current
    assert {b["role"]: b["downloaded"] for b in res.blobs}["site-packages"] is False
    assert [d.id for d in st.list("hello")] == [first.id, second.id]


def dataclass_digest(ref, digest):
    import dataclasses

    return dataclasses.replace(ref, tag=None, digest=digest)


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("role", ["app", "snapshot", "site-packages", "manifest"])
def test_tampered_content_is_refused(registry, deployed, tmp_path, role):
    dep = deployed["first"]
    ref = parse_reference(registry.ref(tag="hello"))
    with RegistryClient(registry.host) as c:
        res = push_deployment(c, ref, dep)
    if role == "manifest":
        target = registry.blob_file(res.digest)
        data = target.read_bytes()
        target.write_bytes(data.replace(dep.id.encode(), dep.id[:-1].encode() + b"X", 1))
    else:
        digest = next(b["digest"] for b in res.blobs if b["role"] == role)
        target = registry.blob_file(digest)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01  # same size, one bit flipped
        target.write_bytes(bytes(data))
    store = tmp_path / "victim"
    with RegistryClient(registry.host) as c, pytest.raises(DigestMismatch, match="refused"):
        pull_deployment(c, ref, Store(store))
    assert Store(store).names() == []
    for sub in ("deployments", "layers"):
        assert not (store / sub).exists() or not any((store / sub).iterdir()), sub
    r = cli("pull", str(ref), "--store", str(store))
    assert r.returncode == 1 and "refused" in r.stderr, r.stderr
    assert Store(store).names() == []


@pytest.mark.slow
def test_deploy_push_of_an_app_without_requirements(registry, tmp_path):
    """`pyworkers deploy --push`: deploys, pushes, moves the worker's tag; an app without
    requirements has no lock and no site-packages layer in its artifact."""
    app = tmp_path / "plain"
    shutil.copytree(ROOT / "tests" / "data" / "deploy" / "plain", app)
    store = tmp_path / "store"
    r = cli("deploy", str(app), "--store", str(store), "--push", registry.ref("apps/plain"),
            "--json", "-q")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    push = rec["push"]
    assert push["deployment"] == rec["id"]
    assert push["reference"] == registry.ref("apps/plain", tag="plain")
    assert [b["role"] for b in push["blobs"]] == ["config", "record", "app", "snapshot"]
    with RegistryClient(registry.host) as c:
        assert c.head_manifest("apps/plain", "plain") == push["digest"]
        res = pull_deployment(c, parse_reference(push["reference"]), Store(tmp_path / "node"))
    assert res.deployment.record == Store(store).get(rec["id"]).record
    assert res.deployment.layer_dir is None and res.deployment.lock_path is None
    # A bad reference fails before anything is deployed.
    r = cli("deploy", str(app), "--store", str(store), "--push", "oci://h/Bad", "-q")
    assert r.returncode == 1 and "not a repository name" in r.stderr
    assert len(Store(store).list("plain")) == 1


# --------------------------------------------------------------------------- follower

@pytest.mark.slow
@pytest.mark.network
def test_follower_picks_up_a_new_tag_and_survives_an_outage(registry, deployed, tmp_path):
    first, second = deployed["first"], deployed["second"]
    ref = parse_reference(registry.ref())
    with RegistryClient(registry.host) as c:
        push_deployment(c, ref.with_tag("hello"), first)
    node = Store(tmp_path / "node")
    changes = []
    f = RegistryFollower(node, ref, ["hello"], interval=0.5,
                         on_change=lambda w, d: changes.append((w, d)))
    try:
        assert f.status()["has_deployment"] is False
        assert f.poll_once() == {"hello": first.id}
        s = f.status()
        assert s["ok"] and s["has_deployment"] and s["last_error"] is None
        assert s["workers"]["hello"]["current"] == first.id and s["pulls"] == 1
        assert changes == [("hello", first.id)]

        f.start()
        with RegistryClient(registry.host) as c:
            push_deployment(c, ref.with_tag("hello"), second)
        t0 = time.monotonic()
        while node.current_id("hello") != second.id and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert node.current_id("hello") == second.id, f.status()
        print(f"\nfollower switched to the new tag {took:.2f} s after the push (interval 0.5 s)")

        # The tag moved back: the follower rolls back to the deployment it already has.
        with RegistryClient(registry.host) as c:
            push_deployment(c, ref.with_tag("hello"), first)
        t0 = time.monotonic()
        while node.current_id("hello") != first.id and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert node.current_id("hello") == first.id
        assert f.status()["pulls"] == 2  # no third pull: it had the deployment

        # The tag is authoritative: a local rollback on the node is set back on the next poll.
        node.rollback("hello", second.id)
        t0 = time.monotonic()
        while node.current_id("hello") != first.id and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert node.current_id("hello") == first.id and f.status()["pulls"] == 2

        # Registry down: keep serving what we have; report the error.
        registry.stop()
        t0 = time.monotonic()
        while f.last_error is None and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        s = f.status()
        assert s["last_error"] and "127.0.0.1" in s["last_error"], s
        assert not s["ok"] and s["has_deployment"] and node.current_id("hello") == first.id
        # Back up: the next poll is clean again.
        registry.start()
        t0 = time.monotonic()
        while f.last_error is not None and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert f.status()["ok"]
    finally:
        f.stop()
    assert changes == [("hello", first.id), ("hello", second.id), ("hello", first.id),
                       ("hello", first.id)]

    # A tag holding another worker's deployment is refused before anything is downloaded
    # beyond its record.
    with RegistryClient(registry.host) as c:
        push_deployment(c, ref.with_tag("other"), first)
    other = RegistryFollower(Store(tmp_path / "other"), ref, ["other"], interval=1)
    try:
        assert other.poll_once() == {"other": None}
        assert "holds a deployment of worker 'hello', not 'other'" in other.last_error
        assert Store(tmp_path / "other").names() == []
    finally:
        other.stop()


@needs_registry
def test_follower_without_a_tag_is_not_ready(registry, tmp_path):
    f = RegistryFollower(Store(tmp_path / "s"), parse_reference(registry.ref()), ["nope"],
                         interval=1)
    try:
        assert f.poll_once() == {"nope": None}
        s = f.status()
        assert not s["has_deployment"] and not s["ok"]
        assert "does not exist" in s["last_error"] and "pyworkers push nope" in s["last_error"]
    finally:
        f.stop()


# --------------------------------------------------------------------------- TLS and auth

@pytest.fixture
def tls_auth_registry(tmp_path):
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed (Debian package docker-registry)")
    trustme = pytest.importorskip("trustme")
    bcrypt = pytest.importorskip("bcrypt")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    root = tmp_path / "tlsreg"
    root.mkdir()
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    cert.private_key_pem.write_to_path(str(root / "server.key"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    pw = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (root / "htpasswd").write_text(f"alice:{pw}\n")
    reg = Registry(root, tls=(root / "server.pem", root / "server.key"),
                   htpasswd=root / "htpasswd")
    reg.ca = root / "ca.pem"
    yield reg
    reg.stop()


@needs_registry
def test_tls_is_verified_and_credentials_are_required(tls_auth_registry, tmp_path, monkeypatch):
    reg = tls_auth_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    # An untrusted certificate is refused (no silent fallback to plain HTTP).
    with pytest.raises(RegistryUnreachable, match="--ca-file"):
        RegistryClient(reg.host).ping()
    # Trusted, but no login.
    with pytest.raises(RegistryAuthError, match="requires a login"):
        RegistryClient(reg.host, ca_file=reg.ca).ping()
    # Wrong password.
    with pytest.raises(RegistryAuthError, match="refused user 'alice'"):
        RegistryClient(reg.host, ca_file=reg.ca, credentials=Credentials("alice", "nope")).ping()
    # From the docker configuration: upload a blob and a manifest over verified TLS.
    cfg = tmp_path / "docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"auths": {f"https://{reg.host}": {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    with RegistryClient(reg.host, ca_file=reg.ca) as c:
        assert c.base_url == f"https://{reg.host}"
        c.ping()
        data = b"hello blob"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert not c.blob_exists("t/r", digest)
        c.upload_blob("t/r", digest, len(data), data)
        assert c.blob_exists("t/r", digest)
        out = io.BytesIO()
        assert c.get_blob("t/r", digest, out) == len(data) and out.getvalue() == data
    # The CLI flags: --username/--password-stdin and --ca-file (the tag does not exist).
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    r = cli("pull", f"oci://{reg.host}/t/r:missing", "--store", str(tmp_path / "s"),
            "--username", "alice", "--password-stdin", "--ca-file", str(reg.ca),
            input="s3cret\n", env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert r.returncode == 1 and "no manifest t/r:missing" in r.stderr, r.stderr
    r = cli("pull", f"oci://{reg.host}/t/r:missing", "--store", str(tmp_path / "s"),
            "--username", "alice", "--password-stdin", "--ca-file", str(reg.ca),
            input="wrong\n", env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert r.returncode == 1 and "refused user 'alice'" in r.stderr, r.stderr


class TokenService:
    """A docker/distribution token service (the "token" auth of the registry config) on
    127.0.0.1: checks HTTP basic credentials and issues RS256 JWTs carrying the requested
    repository access, signed by a key whose certificate the registry trusts."""

    def __init__(self, root: Path, user: str, password: str):
        import http.server
        import threading

        trustme = pytest.importorskip("trustme")
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self.ca = trustme.CA(key_type=trustme.KeyType.RSA)
        self.bundle = root / "token-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.bundle))
        self.key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        der = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes()).public_bytes(
            serialization.Encoding.DER)
        self.x5c = base64.b64encode(der).decode()
        self.service, self.issuer = "pyworkers-test-registry", "pyworkers-test-issuer"
        self.requests: list[dict] = []
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                from urllib.parse import parse_qs, urlparse

                q = parse_qs(urlparse(self.path).query)
                auth = self.headers.get("Authorization", "")
                ok = auth == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                svc.requests.append({"scope": q.get("scope"), "authorized": ok})
                if not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    typ, name, actions = scope.split(":")
                    access.append({"type": typ, "name": name, "actions": actions.split(",")})
                body = json.dumps({"token": svc.sign(access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(self, access: list) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(d: bytes) -> str:
            return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": "alice", "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(sig)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@needs_registry
def test_bearer_token_auth(tmp_path):
    """The registry token flow against the distribution server's "token" auth: a 401 with a
    Bearer challenge, a token from the realm with basic credentials, the request repeated."""
    pytest.importorskip("cryptography")
    root = tmp_path / "tokreg"
    root.mkdir()
    tokens = TokenService(root, "alice", "s3cret")
    reg = Registry(root, extra=["auth:", "  token:", f"    realm: {tokens.realm}",
                                f"    service: {tokens.service}", f"    issuer: {tokens.issuer}",
                                f"    rootcertbundle: {tokens.bundle}"])
    try:
        with pytest.raises(RegistryAuthError, match="refused anonymous access"):
            RegistryClient(reg.host, credentials=None, docker_config=tmp_path / "none.json").ping()
        with RegistryClient(reg.host, credentials=Credentials("alice", "s3cret")) as c:
            data = b"token-protected blob"
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            assert not c.blob_exists("t/r", digest)
            c.upload_blob("t/r", digest, len(data), data)
            manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                              "digest": digest, "size": len(data)},
                                   "layers": []}).encode()
            md = c.put_manifest("t/r", "v1", manifest)
            assert c.head_manifest("t/r", "v1") == md
        scopes = [r["scope"] for r in tokens.requests if r["authorized"]]
        assert ["repository:t/r:pull,push"] in scopes or ["repository:t/r:push,pull"] in scopes
        with pytest.raises(RegistryAuthError, match="refused the credentials"):
            RegistryClient(reg.host, credentials=Credentials("alice", "wrong")).ping()
    finally:
        reg.stop()
        tokens.close()


@needs_registry
def test_plain_http_registry_on_loopback(registry):
    with RegistryClient(registry.host) as c:
        assert c.base_url == f"http://{registry.host}"  # HTTPS tried first, then plain HTTP
        c.ping()


def test_plain_http_only_for_loopback():
    for host in ("localhost:5000", "127.0.0.1", "127.8.9.10:443", "[::1]:5000", "reg.localhost"):
        assert is_loopback(host), host
        assert RegistryClient(host).schemes == ("https", "http")
    for host in ("10.0.0.1:5000", "registry.example", "[2001:db8::1]:5000", "localhost.example"):
        assert not is_loopback(host), host
        assert RegistryClient(host).schemes == ("https",)


def test_unreachable_registry_fails_fast(tmp_path):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(RegistryUnreachable, match=f"127.0.0.1:{port}"):
        RegistryClient(f"127.0.0.1:{port}", timeout=2).ping()
    assert time.monotonic() - t0 < 5


# --------------------------------------------------------------------------- pure parts

def test_references():
    r = parse_reference("oci://127.0.0.1:5000/team/workers:hello")
    assert (r.host, r.repository, r.tag, r.digest) == ("127.0.0.1:5000", "team/workers", "hello", None)
    d = "sha256:" + "a" * 64
    r = parse_reference(f"oci://[::1]:5000/w@{d}")
    assert (r.host, r.repository, r.tag, r.digest, r.reference) == ("[::1]:5000", "w", None, d, d)
    assert str(parse_reference("oci://reg.example/a/b")) == "oci://reg.example/a/b"
    for bad, msg in [("docker://x/y", "starts with oci://"), ("oci://host", "repository"),
                     ("oci://host/Upper", "not a repository"), ("oci://h/r:bad/tag", "repository"),
                     ("oci://h/r@sha256:12", "not a digest"), ("oci://h/r:-x", "not a valid tag")]:
        with pytest.raises(ValueError, match=msg):
            parse_reference(bad)


def test_docker_config_credentials(tmp_path):
    cfg = tmp_path / "config.json"
    assert credentials_for("h:1", config=cfg) is None
    cfg.write_text(json.dumps({"auths": {
        "https://reg.example/v1/": {"auth": base64.b64encode(b"u:p:w").decode()},
        "127.0.0.1:5000": {"username": "bob", "password": "pw"},
        "tok.example": {"identitytoken": "T"},
        "bad.example": {"auth": "!!"}}}))
    c = credentials_for("reg.example", config=cfg)
    assert (c.username, c.password) == ("u", "p:w") and "pw" not in repr(c)
    assert credentials_for("127.0.0.1:5000", config=cfg).username == "bob"
    assert credentials_for("tok.example", config=cfg).password == "T"
    assert credentials_for("other.example", config=cfg) is None
    with pytest.raises(ValueError, match="not base64"):
        credentials_for("bad.example", config=cfg)
    cfg.write_text(json.dumps({"credHelpers": {"h.example": "pyworkers-test-missing"}}))
    with pytest.raises(ValueError, match="docker-credential-pyworkers-test-missing"):
        credentials_for("h.example", config=cfg)
    cfg.write_text(json.dumps({"credsStore": "pyworkers-test-missing"}))
    assert credentials_for("h.example", config=cfg) is None  # default store absent: anonymous


def test_tarballs_are_reproducible_and_extraction_is_confined(tmp_path):
    from pyworkers.deploy import copy_app

    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "pkg" / "m.py").write_text("x = 1\n")
    (src / "pkg" / "sub" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "pkg" / "sub" / "run.sh", 0o755)
    os.utime(src / "pkg" / "m.py", (1_700_000_000, 1_700_000_000))
    t1, t2 = tmp_path / "1.tar.zst", tmp_path / "2.tar.zst"
    write_tarball(src, t1, keep_mtime=True)
    time.sleep(0.01)
    (src / "a.txt").write_text("a")  # same content, new mtime
    write_tarball(src, t2, keep_mtime=False)
    write_tarball(src, t1.with_suffix(".again"), keep_mtime=False)
    assert t2.read_bytes() == t1.with_suffix(".again").read_bytes()
    out = tmp_path / "out"
    extract_tarball(t1, out)
    assert (out / "pkg" / "m.py").read_text() == "x = 1\n"
    assert int((out / "pkg" / "m.py").stat().st_mtime) == 1_700_000_000
    assert os.access(out / "pkg" / "sub" / "run.sh", os.X_OK)
    info = copy_app(src, tmp_path / "copy")
    assert tree_hash(out) == info["hash"] == tree_hash(tmp_path / "copy")

    # An archive that tries to write outside its directory is refused.
    import zstandard

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("../escape.txt")
        ti.size = 1
        tar.addfile(ti, io.BytesIO(b"x"))
    evil = tmp_path / "evil.tar.zst"
    evil.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    with pytest.raises(RegistryError, match="not a valid tar"):
        extract_tarball(evil, tmp_path / "evil")
    assert not (tmp_path / "escape.txt").exists()


def test_blob_download_checks_the_digest(registry):
    with RegistryClient(registry.host) as c:
        data = b"x" * 1000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        c.upload_blob("t/r", digest, len(data), data)
        registry.blob_file(digest).write_bytes(b"y" * 1000)
        with pytest.raises(DigestMismatch, match="refused"):
            c.get_blob("t/r", digest, io.BytesIO())
        with pytest.raises(RegistryError):
            c.upload_blob("t/r", digest, 3, b"abc")  # the registry checks the digest too
