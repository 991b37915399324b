"""Policy for the rendered manifests: what a reviewer would check by hand, for every overlay."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from serving import config as sc

OVERLAYS = ["dev", "prod", "canary"]
Obj = dict[str, Any]


# ----------------------------------------------------------------- helpers


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def servers(objs: list[Obj]) -> list[Obj]:
    """The model-server Deployments (stable and, in the canary overlay, canary)."""
    found = [
        d
        for d in of_kind(objs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "model-server"
    ]
    assert found
    return found


def pod(deployment: Obj) -> Obj:
    return deployment["spec"]["template"]["spec"]


def server_container(deployment: Obj) -> Obj:
    (container,) = [c for c in pod(deployment)["containers"] if c["name"] == "tfserving"]
    return container


def port_of(container: Obj, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def resolve_port(container: Obj, port: int | str) -> int:
    return port if isinstance(port, int) else port_of(container, port)


def cpu_cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def flag(container: Obj, name: str) -> str:
    values = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}: {values}"
    return values[0]


def config_map_of(objs: list[Obj], deployment: Obj) -> Obj:
    (volume,) = [v for v in pod(deployment)["volumes"] if v["name"] == "config"]
    return named(objs, "ConfigMap", volume["configMap"]["name"])


def pods_matching(objs: list[Obj], selector: dict[str, str]) -> list[Obj]:
    return [
        d
        for d in of_kind(objs, "Deployment")
        if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]


@pytest.fixture(params=OVERLAYS)
def overlay(request, rendered) -> tuple[str, list[Obj]]:
    return request.param, rendered[request.param]


# ----------------------------------------------------------------- image and args


def test_images_are_pinned_everywhere(rendered):
    for name, objs in rendered.items():
        for obj in objs:
            spec = obj.get("spec") or {}
            template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get(
                "template"
            )
            if not template:
                continue
            for container in template["spec"]["containers"]:
                image = container["image"]
                repo, _, tag = image.rpartition(":")
                assert repo and tag and tag != "latest" and "/" not in tag, (name, image)


def test_server_image_is_the_shared_constant(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        assert server_container(deployment)["image"] == sc.TF_SERVING_IMAGE


def test_kserve_runtime_is_the_same_tag(rendered):
    isvc = named(rendered["kserve"], "InferenceService", "mnist")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtimeVersion"] == sc.TF_SERVING_IMAGE.rpartition(":")[2]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert 0 <= isvc["spec"]["predictor"]["canaryTrafficPercent"] <= 100


def test_args_are_the_shared_flags_plus_ports_and_threads(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        container = server_container(deployment)
        assert container["command"] == ["/usr/bin/tensorflow_model_server"]
        args = container["args"]
        shared = sc.server_flags(sc.CONTAINER_CONFIG_DIR)
        # the shared flags, verbatim and in order, right after the ports
        assert args[2 : 2 + len(shared)] == shared
        assert args[:2] == [f"--port={sc.GRPC_PORT}", f"--rest_api_port={sc.REST_PORT}"]
        assert int(flag(container, "port")) == port_of(container, "grpc")
        assert int(flag(container, "rest_api_port")) == port_of(container, "http")
        extra = args[2 + len(shared) :]
        assert {a.split("=")[0] for a in extra} == {
            "--tensorflow_intra_op_parallelism",
            "--tensorflow_inter_op_parallelism",
            "--rest_api_num_threads",
            "--enable_grpc_healthcheck_service",
        }
        # Labels in a config read cold need this (spec 6.2); the config here has labels.
        assert flag(container, "allow_version_labels_for_unavailable_models") == "true"
        channel_args = flag(container, "grpc_channel_arguments")
        assert f"grpc.max_connection_age_ms={sc.GRPC_MAX_CONNECTION_AGE_MS}" in channel_args
        assert f"grpc.max_connection_age_grace_ms={sc.GRPC_MAX_CONNECTION_AGE_GRACE_MS}" in channel_args
        # Every connection is aged out (age + 10% jitter + grace) within the preStop pause, so
        # none is still open when TF Serving exits abruptly at SIGTERM.
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        worst_ms = sc.GRPC_MAX_CONNECTION_AGE_MS * 1.1 + sc.GRPC_MAX_CONNECTION_AGE_GRACE_MS
        assert worst_ms < pause * 1000


def test_config_files_are_mounted_where_the_flags_point(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        container = server_container(deployment)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
        # a directory mount: subPath mounts never see ConfigMap updates
        assert mount["mountPath"] == sc.CONTAINER_CONFIG_DIR and "subPath" not in mount
        assert mount["readOnly"] is True
        cm = config_map_of(objs, deployment)
        assert cm.get("immutable") is True
        for arg_flag, key in (
            ("model_config_file", sc.MODEL_CONFIG_FILE),
            ("batching_parameters_file", sc.BATCHING_FILE),
            ("monitoring_config_file", sc.MONITORING_FILE),
        ):
            path = flag(container, arg_flag)
            assert Path(path).parent == Path(sc.CONTAINER_CONFIG_DIR) and Path(path).name == key
            assert key in cm["data"], (cm["metadata"]["name"], key)


def test_config_contents_are_serving_config_renderings(overlay, kv):
    name, objs = overlay
    for deployment in servers(objs):
        data = config_map_of(objs, deployment)["data"]
        for static in (sc.BATCHING_FILE, sc.MONITORING_FILE):
            assert data[static] == (sc.STATIC_DIR / static).read_text(encoding="utf-8")
        step = kv.step_of(data[sc.MODEL_CONFIG_FILE])
        assert step.stable is not None, "k8s serves specific versions, never 'latest'"
        rendering = sc.render_model_config(sc.CONTAINER_MODELS_ROOT, step, sc.MODEL_NAME)
        assert data[sc.MODEL_CONFIG_FILE] == rendering
        assert f'base_path: "{sc.CONTAINER_MODELS_ROOT}/{sc.MODEL_NAME}"' in rendering


# ----------------------------------------------------------------- probes


def test_probes_exist_and_point_at_real_ports(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        container = server_container(deployment)
        startup = container["startupProbe"]
        readiness = container["readinessProbe"]
        liveness = container["livenessProbe"]
        # no listener until the models are loaded; the gRPC health service then says SERVING
        assert "--enable_grpc_healthcheck_service=true" in container["args"]
        assert startup["grpc"]["port"] == sc.GRPC_PORT
        assert startup["grpc"]["service"] in ("", "ModelService", "PredictionService")
        # budget covers TF Serving's 5 load retries 60 s apart plus the load itself
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        # readiness: metadata needs an AVAILABLE version; status would say 200 regardless
        get = readiness["httpGet"]
        assert resolve_port(container, get["port"]) == sc.REST_PORT
        assert get["path"] == f"/v1/models/{sc.MODEL_NAME}/metadata"
        assert "exec" not in readiness and "exec" not in liveness  # the image has no curl
        assert liveness["grpc"]["port"] == sc.GRPC_PORT
        assert liveness["grpc"]["service"] in ("", "ModelService", "PredictionService")
        # generous: a minute or more of silence before a restart
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
        assert liveness["timeoutSeconds"] >= 3


def test_readiness_probe_names_the_served_model(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        model_config = config_map_of(objs, deployment)["data"][sc.MODEL_CONFIG_FILE]
        path = server_container(deployment)["readinessProbe"]["httpGet"]["path"]
        model = re.match(r"/v1/models/([^/]+)/metadata$", path).group(1)
        assert f'name: "{model}"' in model_config


# ----------------------------------------------------------------- resources and threads


def test_guaranteed_resources_and_thread_pools_follow_the_cpu_limit(overlay):
    _, objs = overlay
    batching = (sc.STATIC_DIR / sc.BATCHING_FILE).read_text(encoding="utf-8")
    batch_threads = int(re.search(r"num_batch_threads \{ value: (\d+) \}", batching).group(1))
    for deployment in servers(objs):
        container = server_container(deployment)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert cpu_cores(requests["cpu"]) == cpu_cores(limits["cpu"])
        assert memory_bytes(requests["memory"]) == memory_bytes(limits["memory"])
        cpus = cpu_cores(limits["cpu"])
        assert cpus == int(cpus), "whole CPUs: the thread pools cannot use a fraction"
        env = {e["name"]: e for e in container["env"]}
        field = env["CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]
        assert field == {"containerName": "tfserving", "resource": "limits.cpu", "divisor": "1"}
        assert flag(container, "tensorflow_intra_op_parallelism") == "$(CPU_LIMIT)"
        assert flag(container, "tensorflow_inter_op_parallelism") == "$(CPU_LIMIT)"
        assert "--tensorflow_session_parallelism" not in " ".join(container["args"])
        assert flag(container, "rest_api_num_threads") == "$(REST_API_NUM_THREADS)"
        assert int(env["REST_API_NUM_THREADS"]["value"]) == 4 * int(cpus)
        assert batch_threads <= cpus
        assert memory_bytes(limits["memory"]) >= 512 * 2**20


def test_every_container_has_requests_equal_limits(rendered):
    for name in OVERLAYS:
        for obj in rendered[name]:
            spec = obj.get("spec") or {}
            template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get(
                "template"
            )
            for container in (template or {}).get("spec", {}).get("containers", []):
                res = container["resources"]
                assert res["requests"] == res["limits"], (name, obj["metadata"]["name"])


# ----------------------------------------------------------------- rollout and shutdown


def test_rolling_update_never_drops_capacity(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert strategy["rollingUpdate"]["maxSurge"] >= 1
        startup = server_container(deployment)["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert deployment["spec"]["progressDeadlineSeconds"] > budget


def test_prestop_pause_fits_in_the_grace_period(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        pause = server_container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 15, "endpoint removal must reach kube-proxy, ingress and DNS first"
        assert pod(deployment)["terminationGracePeriodSeconds"] >= pause + 10


# ----------------------------------------------------------------- security


def test_restricted_pod_security(rendered):
    for name in OVERLAYS:
        objs = rendered[name]
        for obj in objs:
            spec = obj.get("spec") or {}
            template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get(
                "template"
            )
            if not template:
                continue
            pod_spec = template["spec"]
            where = (name, obj["kind"], obj["metadata"]["name"])
            ctx = pod_spec["securityContext"]
            assert ctx["runAsNonRoot"] is True, where
            assert isinstance(ctx["runAsUser"], int) and ctx["runAsUser"] > 0, where
            assert isinstance(ctx["runAsGroup"], int) and ctx["runAsGroup"] > 0, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert pod_spec["automountServiceAccountToken"] is False, where
            assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID"), where
            volumes = {v["name"]: v for v in pod_spec["volumes"]}
            assert all("hostPath" not in v for v in volumes.values()), where
            for container in pod_spec["containers"]:
                cctx = container["securityContext"]
                assert cctx["allowPrivilegeEscalation"] is False, where
                assert cctx["capabilities"]["drop"] == ["ALL"], where
                assert not cctx["capabilities"].get("add"), where
                assert cctx.get("privileged", False) is False, where
                assert cctx["readOnlyRootFilesystem"] is True, where
                tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and "emptyDir" in volumes[tmp[0]["name"]], where
            account = named(objs, "ServiceAccount", pod_spec["serviceAccountName"])
            assert account["automountServiceAccountToken"] is False, where


def test_namespaces_enforce_the_restricted_profile(overlay, kv):
    _, objs = overlay
    (namespace,) = of_kind(objs, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    minor = ".".join(kv.KUBERNETES_VERSION.split(".")[:2])
    assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{minor}"
    assert all(o["metadata"].get("namespace") == namespace["metadata"]["name"]
               for o in objs if o["kind"] != "Namespace")


def test_model_repository_is_read_only_for_the_server(overlay):
    _, objs = overlay
    for deployment in servers(objs):
        volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
        (mount,) = [m for m in server_container(deployment)["volumeMounts"] if m["name"] == "models"]
        assert mount["mountPath"] == sc.CONTAINER_MODELS_ROOT and mount["readOnly"] is True
        claim = volumes["models"]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        pvc = named(objs, "PersistentVolumeClaim", claim["claimName"])
        # many server pods on many nodes plus one writer
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_network_policy_admits_only_the_serving_ports_and_no_egress(overlay):
    _, objs = overlay
    policy = named(objs, "NetworkPolicy", "mnist-model-server")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["egress"] == []
    for deployment in servers(objs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
        container = server_container(deployment)
        ports = {
            resolve_port(container, p["port"])
            for rule in policy["spec"]["ingress"]
            for p in rule["ports"]
        }
        assert ports == {sc.GRPC_PORT, sc.REST_PORT}


# ----------------------------------------------------------------- services, monitoring


def test_services_reach_every_track_on_both_ports(overlay):
    _, objs = overlay
    tracks = {d["spec"]["template"]["metadata"]["labels"]["track"] for d in servers(objs)}
    for name in ("mnist", "mnist-headless"):
        service = named(objs, "Service", name)
        selected = pods_matching(objs, service["spec"]["selector"])
        assert {d["spec"]["template"]["metadata"]["labels"]["track"] for d in selected} == tracks
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["grpc"]["port"] == sc.GRPC_PORT and ports["http"]["port"] == sc.REST_PORT
        for deployment in selected:
            container = server_container(deployment)
            assert port_of(container, ports["grpc"]["targetPort"]) == sc.GRPC_PORT
            assert port_of(container, ports["http"]["targetPort"]) == sc.REST_PORT
    headless = named(objs, "Service", "mnist-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is False


def test_prometheus_annotations_match_the_monitoring_config(overlay):
    _, objs = overlay
    monitoring = (sc.STATIC_DIR / sc.MONITORING_FILE).read_text(encoding="utf-8")
    path = re.search(r'path: "([^"]+)"', monitoring).group(1)
    assert re.search(r"enable: true", monitoring)
    for deployment in servers(objs):
        notes = deployment["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == port_of(server_container(deployment), "http")
        assert notes["prometheus.io/path"] == path


# ----------------------------------------------------------------- per-overlay shape


def test_dev_is_one_small_replica_without_hpa_or_pdb(rendered):
    objs = rendered["dev"]
    (deployment,) = servers(objs)
    assert deployment["spec"]["replicas"] == 1
    assert not of_kind(objs, "HorizontalPodAutoscaler")
    assert not of_kind(objs, "PodDisruptionBudget")
    prod_limits = server_container(servers(rendered["prod"])[0])["resources"]["limits"]
    dev_limits = server_container(deployment)["resources"]["limits"]
    assert memory_bytes(dev_limits["memory"]) < memory_bytes(prod_limits["memory"])


@pytest.mark.parametrize("name", ["prod", "canary"])
def test_prod_replicas_belong_to_the_autoscaler(rendered, name):
    objs = rendered[name]
    stable = named(objs, "Deployment", "mnist")
    assert "replicas" not in stable["spec"]
    (hpa,) = of_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mnist",
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (pdb,) = of_kind(objs, "PodDisruptionBudget")
    covered = pods_matching(objs, pdb["spec"]["selector"]["matchLabels"])
    assert [d["metadata"]["name"] for d in covered] == ["mnist"]
    # the budget must leave room to drain a node at the autoscaler's minimum
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or (
        pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )


def test_selectors_are_disjoint_between_tracks(rendered):
    objs = rendered["canary"]
    stable, canary = named(objs, "Deployment", "mnist"), named(objs, "Deployment", "mnist-canary")
    for deployment in (stable, canary):
        owned = pods_matching(objs, deployment["spec"]["selector"]["matchLabels"])
        assert owned == [deployment]


def test_canary_overlay_leaves_prod_untouched(rendered):
    """Applying the canary overlay must not restart a single stable pod."""
    prod = {(o["kind"], o["metadata"]["name"]): o for o in rendered["prod"]}
    canary = {(o["kind"], o["metadata"]["name"]): o for o in rendered["canary"]}
    extra = sorted(set(canary) - set(prod))
    assert set(prod) <= set(canary)
    for key, obj in prod.items():
        assert canary[key] == obj, key
    assert [k for k in extra if k[0] == "Deployment"] == [("Deployment", "mnist-canary")]
    assert ("Service", "mnist-canary") in extra


def test_canary_differs_from_stable_only_in_identity_and_model_config(rendered, kv):
    objs = rendered["canary"]
    stable, canary = named(objs, "Deployment", "mnist"), named(objs, "Deployment", "mnist-canary")
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["template"]["metadata"]["labels"]["track"] == "canary"

    def normalised(deployment: Obj) -> Obj:
        spec = {k: v for k, v in deployment["spec"].items() if k not in ("replicas", "selector")}
        template = dict(spec["template"])
        template["metadata"] = {**template["metadata"], "labels": None}
        pod_spec = dict(template["spec"])
        pod_spec["volumes"] = [v for v in pod_spec["volumes"] if v["name"] != "config"]
        template["spec"] = pod_spec
        spec["template"] = template
        return spec

    assert normalised(canary) == normalised(stable)
    stable_step = kv.step_of(config_map_of(objs, stable)["data"][sc.MODEL_CONFIG_FILE])
    canary_step = kv.step_of(config_map_of(objs, canary)["data"][sc.MODEL_CONFIG_FILE])
    assert stable_step.canary is None
    assert canary_step.stable == stable_step.stable
    # after a promote the track names no canary until the next one is rendered
    assert canary_step.canary is None or canary_step.canary != canary_step.stable
    assert named(objs, "Service", "mnist-canary")["spec"]["selector"]["track"] == "canary"
