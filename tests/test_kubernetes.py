"""deploy/kubernetes/: the manifests parse and hang together (kinds, apiVersions, required
fields, names and ports that refer to each other, probes on the admin port). No cluster runs
here: these are static checks with PyYAML, plus field names checked against the Kubernetes
API's own lists for the objects we write (core/v1 Container, Probe, PodSpec)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyworkers.registry import parse_reference

yaml = pytest.importorskip("yaml")

K8S = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"

# Field names of the Kubernetes API objects (k8s.io/api core/v1, apps/v1): a typo in a
# manifest is silently dropped by older kubectl versions, so catch it here.
CONTAINER_FIELDS = {"name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
                    "resources", "resizePolicy", "restartPolicy", "volumeMounts",
                    "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe",
                    "lifecycle", "terminationMessagePath", "terminationMessagePolicy",
                    "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty"}
PROBE_FIELDS = {"exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "timeoutSeconds",
                "periodSeconds", "successThreshold", "failureThreshold",
                "terminationGracePeriodSeconds"}
POD_FIELDS = {"volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
              "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy",
              "nodeSelector", "serviceAccountName", "serviceAccount", "automountServiceAccountToken",
              "nodeName", "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace",
              "securityContext", "imagePullSecrets", "hostname", "subdomain", "affinity",
              "schedulerName", "tolerations", "hostAliases", "priorityClassName", "priority",
              "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks",
              "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN",
              "os", "hostUsers", "schedulingGates", "resourceClaims"}
DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def docs() -> list[dict]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            if d is not None:
                d["__file__"] = path.name
                out.append(d)
    return out


def one(kind: str) -> dict:
    found = [d for d in docs() if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_every_manifest_parses_with_known_kinds():
    kinds = {(d["apiVersion"], d["kind"]) for d in docs()}
    assert kinds == {("apps/v1", "Deployment"), ("v1", "Service"),
                     ("autoscaling/v2", "HorizontalPodAutoscaler"),
                     ("keda.sh/v1alpha1", "ScaledObject"),
                     ("kustomize.config.k8s.io/v1beta1", "Kustomization")}
    for d in docs():
        if d["kind"] != "Kustomization":
            assert DNS_1123.fullmatch(d["metadata"]["name"]), d["__file__"]
    kust = one("Kustomization")
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    # HPA and ScaledObject must not both be applied (two autoscalers on one target).
    assert not ({"hpa.yaml", "keda-scaledobject.yaml"} <= set(kust["resources"]))


def test_deployment_probes_ports_and_volumes():
    dep = one("Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert set(pod) <= POD_FIELDS, set(pod) - POD_FIELDS
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert set(c) <= CONTAINER_FIELDS, set(c) - CONTAINER_FIELDS
    assert c["image"] and all(isinstance(a, str) for a in c["args"])
    assert all(isinstance(e["value"], str) for e in c["env"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    args = c["args"]
    assert args[0] == "serve"
    assert args[args.index("--admin-port") + 1] == "9090"
    assert args[args.index("--port") + 1] == "8080"
    ref = parse_reference(args[args.index("--registry") + 1])
    assert ref.tag is None and ref.digest is None  # a repository: each worker follows its tag
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        p = c[probe]
        assert set(p) <= PROBE_FIELDS, set(p) - PROBE_FIELDS
        assert p["httpGet"]["path"] == path
        assert ports[p["httpGet"]["port"]] == 9090  # the admin port, off the app's port
    drain = float(args[args.index("--drain-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] > drain + 5  # drain + preStop sleep fit
    vols = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in c["volumeMounts"]} <= vols
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert env["DOCKER_CONFIG"] in mounts
    assert any(env["PYWORKERS_STORE"].startswith(m) for m in mounts)
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9090"


def test_service_selects_the_pods_and_targets_a_named_port():
    dep, svc = one("Deployment"), one("Service")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in names and isinstance(p["port"], int)


def test_autoscalers_target_the_deployment():
    name = one("Deployment")["metadata"]["name"]
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (m,) = hpa["metrics"]
    assert m["type"] == "Resource" and m["resource"]["name"] == "cpu"
    assert m["resource"]["target"]["type"] == "Utilization"
    so = one("ScaledObject")["spec"]
    assert so["scaleTargetRef"]["name"] == name
    assert so["minReplicaCount"] <= so["maxReplicaCount"]
    prom = next(t for t in so["triggers"] if t["type"] == "prometheus")
    md = prom["metadata"]
    assert all(isinstance(v, str) for v in md.values())  # KEDA trigger metadata is strings
    assert "pyworkers_requests_total" in md["query"] and md["query"].startswith("sum(rate(")
    assert float(md["threshold"]) > 0 and md["serverAddress"].startswith("http")
    # CPU triggers need CPU requests on the containers.
    c = one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["cpu"]


def test_containerfile_bakes_the_runtime_and_runs_serve():
    text = (K8S / "Containerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert sum(ln.startswith("FROM ") for ln in lines) == 2  # build stage + slim final stage
    assert "pyworkers runtimes install" in text
    assert re.search(r"^COPY --from=build .*/opt/pyworkers /opt/pyworkers$", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r"^EXPOSE 8080 9090$", text, re.M)
    assert 'ENTRYPOINT ["pyworkers"]' in text
    assert '"--admin-port", "9090"' in text
    assert "PYWORKERS_CACHE_DIR=/opt/pyworkers/cache" in text
    # Every folder the package is built from is copied into the build stage.
    import tomllib

    pyproject = tomllib.loads((K8S.parents[1] / "pyproject.toml").read_text())
    for folder in set(pyproject["tool"]["setuptools"]["package-dir"].values()):
        assert re.search(rf"^COPY {folder} /src/{folder}$", text, re.M), folder
    assert re.search(r"^COPY pyproject.toml README.md /src/$", text, re.M)
    # The Deployment runs the image's user.
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
