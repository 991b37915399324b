"""Render every kustomize overlay under k8s/ and validate it offline.

    python tools/k8s_validate.py                    # what `make k8s-validate` runs
    python tools/k8s_validate.py --overlay k8s/overlays/dev
    python tools/k8s_validate.py config --stable 3 --canary 4   # re-render the k8s config copies

Three layers, each of which fails the run with a message naming the object and the field:

1. Rendering: ``kubectl kustomize`` (kubectl ships kustomize; no cluster is contacted).
2. Schema: every object against the JSON schemas of one pinned Kubernetes version, in strict
   mode (unknown fields are errors), with the schemas the ``kubernetes-validate`` package bundles.
   Custom resources are checked against the schema vendored beside them (k8s/kserve/schema/).
3. References, which no schema can see: a Deployment's selector matches its own pods; every
   Service, PodDisruptionBudget and NetworkPolicy selects some pod and names ports those pods
   have; no pod sits under two budgets; an autoscaled Deployment sets no replicas; probes,
   ConfigMaps, claims, ServiceAccounts and downward-API containers named by a pod exist.

Then the config copies under k8s/ are compared with what serving.config renders (image tag,
server flags, models/batching/monitoring files), so the cluster serves what the other backends
serve.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "k8s"
OVERLAYS_DIR = K8S_DIR / "overlays"
KSERVE_DIR = K8S_DIR / "kserve"
KSERVE_SCHEMA = KSERVE_DIR / "schema" / "inferenceservice-serving.kserve.io-v1beta1.json"

# The Kubernetes version whose API the manifests must satisfy. Pinned: the same minor as the
# kubectl that renders them, and what the namespaces' Pod Security labels name.
KUBERNETES_VERSION = "1.32.0"

BASE_CONFIG_DIR = K8S_DIR / "base" / "server" / "config"
CANARY_MODEL_CONFIG = OVERLAYS_DIR / "canary" / "track" / "models.config"
BASE_SERVER_KUSTOMIZATION = K8S_DIR / "base" / "server" / "kustomization.yaml"
SERVER_CONTAINER = "tfserving"
CONFIG_MOUNT = "/config"

Obj = dict[str, Any]


class RenderError(RuntimeError):
    """kustomize could not build an overlay (the message is its stderr)."""


# --------------------------------------------------------------------------- rendering


def find_kubectl() -> str | None:
    """The kubectl to render with: $KUBECTL, else the one on PATH."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return shutil.which("kubectl")


def kubectl_version(kubectl: str) -> str:
    proc = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60, check=False
    )
    return " ".join(line.strip() for line in proc.stdout.splitlines() if line.strip())


def render(path: Path, kubectl: str) -> list[Obj]:
    """``kubectl kustomize path`` parsed into objects."""
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or f"kubectl kustomize exited {proc.returncode}")
    try:
        docs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    except yaml.YAMLError as exc:
        raise RenderError(f"kustomize output is not YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"rendered document without kind/apiVersion: {str(doc)[:120]}")
    return docs


def overlay_dirs() -> list[Path]:
    """Every overlay, plus the optional KServe variant."""
    dirs = sorted(p for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
    if (KSERVE_DIR / "kustomization.yaml").is_file():
        dirs.append(KSERVE_DIR)
    return dirs


def ident(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')}/{name}" + (f" (ns {namespace})" if namespace else "")


# --------------------------------------------------------------------------- schema


def schema_errors(objs: Iterable[Obj], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict JSON-schema errors for every object (custom resources: vendored schema)."""
    import kubernetes_validate  # imported here: ~1 s, and only needed for this layer
    from kubernetes_validate.utils import SchemaNotFoundError

    errors: list[str] = []
    for obj in objs:
        if obj.get("apiVersion", "").startswith("serving.kserve.io/"):
            errors += _custom_resource_errors(obj, KSERVE_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top level)"
            errors.append(f"{ident(obj)}: {where}: {exc.message}")
        except SchemaNotFoundError as exc:
            errors.append(f"{ident(obj)}: {exc.message}")
    return errors


def _custom_resource_errors(obj: Obj, schema_path: Path) -> list[str]:
    import jsonschema

    if not schema_path.is_file():
        return [f"{ident(obj)}: no vendored schema at {schema_path.relative_to(ROOT)}"]
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path) or "(top level)"
        out.append(f"{ident(obj)}: {where}: {err.message}")
    return out


# --------------------------------------------------------------------------- references


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Workload:
    """A pod template and who owns it."""

    owner: Obj
    namespace: str | None
    labels: dict[str, str]
    spec: Obj

    @property
    def name(self) -> str:
        return ident(self.owner)

    def containers(self) -> list[Obj]:
        return list(self.spec.get("containers") or []) + list(
            self.spec.get("initContainers") or []
        )

    def port_names(self) -> set[str]:
        return {p["name"] for c in self.containers() for p in c.get("ports") or [] if "name" in p}

    def port_numbers(self) -> set[int]:
        return {p["containerPort"] for c in self.containers() for p in c.get("ports") or []}


def workloads(objs: Iterable[Obj]) -> Iterator[Workload]:
    for obj in objs:
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            template = spec.get("template") or {}
        elif kind == "CronJob":
            template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        elif kind == "Pod":
            template = {"metadata": obj.get("metadata") or {}, "spec": spec}
        else:
            continue
        meta = template.get("metadata") or {}
        yield Workload(
            owner=obj,
            namespace=(obj.get("metadata") or {}).get("namespace"),
            labels=dict(meta.get("labels") or {}),
            spec=template.get("spec") or {},
        )


def _port_known(port: Any, workload: Workload) -> bool:
    if isinstance(port, int):
        return port in workload.port_numbers()
    return port in workload.port_names()


def _probe_port(probe: Obj) -> Any:
    for action in ("httpGet", "tcpSocket", "grpc"):
        if action in probe:
            return probe[action].get("port")
    return None


@dataclass
class Index:
    """Objects by (kind, namespace, name)."""

    objs: list[Obj]
    keys: set[tuple[str, str | None, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for obj in self.objs:
            meta = obj.get("metadata") or {}
            self.keys.add((obj.get("kind", ""), meta.get("namespace"), meta.get("name", "")))

    def has(self, kind: str, namespace: str | None, name: str) -> bool:
        return (kind, namespace, name) in self.keys


def reference_errors(objs: list[Obj]) -> list[str]:
    """Cross-object mistakes that schema validation cannot see."""
    errors: list[str] = []
    index = Index(objs)
    pods = list(workloads(objs))

    seen: set[tuple[str, str | None, str]] = set()
    for obj in objs:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind", ""), meta.get("namespace"), meta.get("name", ""))
        if key in seen:
            errors.append(f"{ident(obj)}: defined twice")
        seen.add(key)

    for pod in pods:
        errors += _pod_errors(pod, index)
        if pod.owner.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            selector = (pod.owner.get("spec") or {}).get("selector")
            if not selector or not selector_matches(selector, pod.labels):
                errors.append(
                    f"{pod.name}: spec.selector {selector} does not match its own pod labels "
                    f"{pod.labels}"
                )

    def selected(namespace: str | None, selector: Mapping[str, Any] | None) -> list[Workload]:
        return [p for p in pods if p.namespace == namespace and selector_matches(selector, p.labels)]

    budgets: dict[str, list[str]] = {}
    for obj in objs:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        namespace = (obj.get("metadata") or {}).get("namespace")
        if kind == "Service" and spec.get("selector"):
            matched = selected(namespace, {"matchLabels": spec["selector"]})
            if not matched:
                errors.append(f"{ident(obj)}: selector {spec['selector']} matches no pod template")
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                for pod in matched:
                    if not _port_known(target, pod):
                        errors.append(
                            f"{ident(obj)}: port {port.get('name', port.get('port'))} targets "
                            f"{target!r}, which {pod.name} does not expose"
                        )
        elif kind == "PodDisruptionBudget":
            matched = selected(namespace, spec.get("selector"))
            if not matched:
                errors.append(f"{ident(obj)}: selector matches no pod template")
            for pod in matched:
                budgets.setdefault(pod.name, []).append(ident(obj))
        elif kind == "NetworkPolicy":
            matched = selected(namespace, spec.get("podSelector"))
            if not matched:
                errors.append(f"{ident(obj)}: podSelector matches no pod template")
            for rule in spec.get("ingress") or []:
                for port in rule.get("ports") or []:
                    for pod in matched:
                        if "port" in port and not _port_known(port["port"], pod):
                            errors.append(
                                f"{ident(obj)}: ingress port {port['port']!r} is not a port of "
                                f"{pod.name}"
                            )
        elif kind == "InferenceService":
            account = (spec.get("predictor") or {}).get("serviceAccountName")
            if account and not index.has("ServiceAccount", namespace, account):
                errors.append(f"{ident(obj)}: serviceAccountName {account!r} is not defined")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            target = next(
                (
                    o
                    for o in objs
                    if o.get("kind") == ref.get("kind")
                    and (o.get("metadata") or {}).get("name") == ref.get("name")
                    and (o.get("metadata") or {}).get("namespace") == namespace
                ),
                None,
            )
            if target is None:
                errors.append(f"{ident(obj)}: scaleTargetRef {ref} names no object here")
            elif "replicas" in (target.get("spec") or {}):
                errors.append(
                    f"{ident(obj)}: {ident(target)} sets spec.replicas; every apply would reset "
                    "the count the autoscaler chose"
                )
    for pod_name, owners in budgets.items():
        if len(owners) > 1:
            errors.append(f"{pod_name}: pods under {len(owners)} disruption budgets {owners}")
    return errors


def _pod_errors(pod: Workload, index: Index) -> list[str]:
    errors: list[str] = []
    ns = pod.namespace
    account = pod.spec.get("serviceAccountName")
    if account and not index.has("ServiceAccount", ns, account):
        errors.append(f"{pod.name}: serviceAccountName {account!r} is not defined")
    volume_names = set()
    for volume in pod.spec.get("volumes") or []:
        volume_names.add(volume.get("name"))
        if "configMap" in volume and not volume["configMap"].get("optional"):
            name = volume["configMap"].get("name")
            if not index.has("ConfigMap", ns, name):
                errors.append(f"{pod.name}: volume {volume['name']} names missing ConfigMap {name!r}")
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName")
            if not index.has("PersistentVolumeClaim", ns, claim):
                errors.append(f"{pod.name}: volume {volume['name']} names missing claim {claim!r}")
    container_names = {c.get("name") for c in pod.containers()}
    for container in pod.containers():
        cname = f"{pod.name} container {container.get('name')}"
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volume_names:
                errors.append(f"{cname}: mounts undefined volume {mount.get('name')!r}")
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef")
            if ref and not ref.get("optional") and not index.has("ConfigMap", ns, ref.get("name")):
                errors.append(f"{cname}: envFrom names missing ConfigMap {ref.get('name')!r}")
        for env in container.get("env") or []:
            field_ref = (env.get("valueFrom") or {}).get("resourceFieldRef")
            if field_ref and field_ref.get("containerName", container.get("name")) not in (
                container_names
            ):
                errors.append(
                    f"{cname}: env {env.get('name')} reads resources of unknown container "
                    f"{field_ref.get('containerName')!r}"
                )
        own_ports = Workload(pod.owner, ns, pod.labels, {"containers": [container]})
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if probe is None:
                continue
            port = _probe_port(probe)
            if port is not None and not _port_known(port, own_ports):
                errors.append(f"{cname}: {probe_name} port {port!r} is not a container port")
    return errors


# --------------------------------------------------------------------------- serving.config


@dataclass(frozen=True)
class RolloutStep:
    """A rollout state as serving.config reads it (stable, previous stable, canary)."""

    stable: int | None
    previous_stable: int | None = None
    canary: int | None = None


_LABEL = re.compile(r'version_labels \{ key: "(\w+)" value: (\d+) \}')


def labels_in(model_config: str) -> dict[str, int]:
    return {key: int(value) for key, value in _LABEL.findall(model_config)}


def step_of(model_config: str) -> RolloutStep:
    """The rollout state a committed models.config claims to be the rendering of."""
    labels = labels_in(model_config)
    if "stable" not in labels:
        return RolloutStep(stable=None)
    canary = labels.get("canary")
    return RolloutStep(stable=labels["stable"], canary=None if canary == labels["stable"] else canary)


def expected_server_args() -> list[str]:
    """Container args: ports, the shared flags for /config, then the Kubernetes thread sizing
    and the health service the gRPC probes call."""
    from serving import config as sc

    return [
        f"--port={sc.GRPC_PORT}",
        f"--rest_api_port={sc.REST_PORT}",
        *sc.server_flags(CONFIG_MOUNT),
        "--tensorflow_intra_op_parallelism=$(CPU_LIMIT)",
        "--tensorflow_inter_op_parallelism=$(CPU_LIMIT)",
        "--rest_api_num_threads=$(REST_API_NUM_THREADS)",
        "--enable_grpc_healthcheck_service=true",
    ]


def config_errors(rendered: Mapping[str, list[Obj]]) -> list[str]:
    """Where the k8s copies disagree with serving.config (empty when they agree)."""
    from serving import config as sc

    errors: list[str] = []
    models_root = sc.CONTAINER_MODELS_ROOT
    for name in (sc.BATCHING_FILE, sc.MONITORING_FILE):
        ours = BASE_CONFIG_DIR / name
        if ours.read_text(encoding="utf-8") != (sc.STATIC_DIR / name).read_text(encoding="utf-8"):
            errors.append(
                f"{ours.relative_to(ROOT)} differs from serving/config/{name} "
                "(run: python tools/k8s_validate.py config --stable N)"
            )
    base_text = (BASE_CONFIG_DIR / sc.MODEL_CONFIG_FILE).read_text(encoding="utf-8")
    base_step = step_of(base_text)
    if base_text != sc.render_model_config(models_root, base_step, sc.MODEL_NAME):
        errors.append("k8s/base/server/config/models.config is not a serving.config rendering")
    if base_step.stable is None:
        errors.append(
            "k8s/base/server/config/models.config uses the latest policy: in a cluster every "
            "synced version would go live on every pod at once; render it with --stable N"
        )
    if base_step.canary is not None:
        errors.append("k8s/base/server/config/models.config names a canary; canaries belong in "
                      "the canary overlay's track")
    canary_text = CANARY_MODEL_CONFIG.read_text(encoding="utf-8")
    canary_step = step_of(canary_text)
    if canary_text != sc.render_model_config(models_root, canary_step, sc.MODEL_NAME):
        errors.append(f"{CANARY_MODEL_CONFIG.relative_to(ROOT)} is not a serving.config rendering")
    if canary_step.stable != base_step.stable:
        errors.append(
            f"canary track serves stable {canary_step.stable} but the base serves stable "
            f"{base_step.stable} (run: python tools/k8s_validate.py config --stable N --canary M)"
        )

    want_args = expected_server_args()
    for overlay, objs in rendered.items():
        for pod in workloads(objs):
            for container in pod.spec.get("containers") or []:
                if container.get("name") != SERVER_CONTAINER:
                    continue
                where = f"{overlay}: {pod.name}"
                if container.get("image") != sc.TF_SERVING_IMAGE:
                    errors.append(
                        f"{where}: image {container.get('image')!r} != serving.config "
                        f"TF_SERVING_IMAGE {sc.TF_SERVING_IMAGE!r}"
                    )
                if container.get("args") != want_args:
                    errors.append(
                        f"{where}: args {container.get('args')} != expected {want_args}"
                    )
    return errors


def write_configs(stable: int, canary: int | None) -> list[Path]:
    """Re-render the k8s copies for a rollout step: base = stable only, track = stable + canary."""
    from serving import config as sc
    from serving.config.files import atomic_write_text

    root, name = sc.CONTAINER_MODELS_ROOT, sc.MODEL_NAME
    written = []
    for fname in (sc.BATCHING_FILE, sc.MONITORING_FILE):
        target = BASE_CONFIG_DIR / fname
        atomic_write_text(target, (sc.STATIC_DIR / fname).read_text(encoding="utf-8"))
        written.append(target)
    base = BASE_CONFIG_DIR / sc.MODEL_CONFIG_FILE
    atomic_write_text(base, sc.render_model_config(root, RolloutStep(stable=stable), name))
    track = sc.render_model_config(root, RolloutStep(stable=stable, canary=canary), name)
    atomic_write_text(CANARY_MODEL_CONFIG, track)
    return [*written, base, CANARY_MODEL_CONFIG]


# --------------------------------------------------------------------------- driver


@dataclass
class OverlayReport:
    path: Path
    objects: list[Obj] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT)) if self.path.is_relative_to(ROOT) else str(self.path)


def validate_overlay(path: Path, kubectl: str, version: str = KUBERNETES_VERSION) -> OverlayReport:
    report = OverlayReport(path=path)
    try:
        report.objects = render(path, kubectl)
    except RenderError as exc:
        report.errors.append(f"render failed: {exc}")
        return report
    report.errors += [f"schema: {e}" for e in schema_errors(report.objects, version)]
    report.errors += [f"reference: {e}" for e in reference_errors(report.objects)]
    return report


def run_validation(paths: list[Path], kubectl: str, check_config: bool = True) -> int:
    print(f"kubectl: {kubectl_version(kubectl)}")
    print(f"schemas: Kubernetes {KUBERNETES_VERSION}, strict (kubernetes-validate)")
    failed = 0
    rendered: dict[str, list[Obj]] = {}
    for path in paths:
        report = validate_overlay(path, kubectl)
        kinds: dict[str, int] = {}
        for obj in report.objects:
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        if report.errors:
            failed += 1
            print(f"FAIL {report.name}: {len(report.errors)} error(s) [{summary}]")
            for err in report.errors:
                print(f"  - {err}")
        else:
            print(f"ok   {report.name}: {len(report.objects)} objects [{summary}]")
            rendered[report.name] = report.objects
    if check_config:
        errs = config_errors(rendered)
        if errs:
            failed += 1
            print(f"FAIL serving.config agreement: {len(errs)} error(s)")
            for err in errs:
                print(f"  - {err}")
        else:
            print("ok   serving.config agreement: image, server flags, models/batching/monitoring")
    print("k8s-validate: " + ("FAILED" if failed else "all overlays valid"))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlay", action="append", type=Path, help="validate only these dirs")
    parser.add_argument(
        "--no-config-check", action="store_true", help="skip the serving.config agreement check"
    )
    sub = parser.add_subparsers(dest="command")
    cfg = sub.add_parser("config", help="re-render k8s config copies from serving.config")
    cfg.add_argument("--stable", type=int, required=True, help="version the stable pods serve")
    cfg.add_argument("--canary", type=int, help="version the canary track adds")
    args = parser.parse_args(argv)

    if args.command == "config":
        if args.stable < 0 or (args.canary is not None and args.canary < 0):
            parser.error("versions are non-negative integers")
        for path in write_configs(args.stable, args.canary):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0

    kubectl = find_kubectl()
    if kubectl is None:
        print(
            "k8s-validate: kubectl not found (set KUBECTL or install the Debian package "
            "'kubectl', which bundles kustomize)",
            file=sys.stderr,
        )
        return 2
    paths = [p.resolve() for p in args.overlay] if args.overlay else overlay_dirs()
    missing = [p for p in paths if not (p / "kustomization.yaml").is_file()]
    if missing:
        print(f"k8s-validate: no kustomization.yaml in {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    check = not args.no_config_check and not args.overlay
    return run_validation(paths, kubectl, check_config=check)


if __name__ == "__main__":
    sys.exit(main())
