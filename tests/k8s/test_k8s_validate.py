"""The validator passes the committed manifests and fails broken ones with clear messages."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "k8s_validate.py"

OVERLAYS = ["dev", "prod", "canary"]


def _find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _edit_yaml(path: Path, edit) -> None:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    for doc in docs:
        edit(doc)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")


def test_every_overlay_and_kserve_is_found(kv):
    names = [p.name for p in kv.overlay_dirs()]
    assert names == ["canary", "dev", "prod", "kserve"]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "kserve"])
def test_overlay_is_schema_valid_and_consistent(kv, rendered, overlay):
    objs = rendered[overlay]
    assert objs, overlay
    assert kv.schema_errors(objs) == []
    assert kv.reference_errors(objs) == []


def test_copies_agree_with_serving_config(kv, rendered):
    assert kv.config_errors({name: objs for name, objs in rendered.items()}) == []


def test_make_target_command_passes_and_summarises(kubectl):
    proc = subprocess.run(
        [sys.executable, str(TOOL)], capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for overlay in ("k8s/overlays/dev", "k8s/overlays/prod", "k8s/overlays/canary", "k8s/kserve"):
        assert f"ok   {overlay}:" in proc.stdout
    assert "Kubernetes 1.32.0, strict" in proc.stdout
    assert proc.stdout.rstrip().endswith("k8s-validate: all overlays valid")


# ----------------------------------------------------------------- typical mistakes, on disk


def test_wrong_field_type_fails_validation(kubectl, k8s_copy):
    """containerPort as a string: kustomize renders it, the schema refuses it."""

    def quote_port(doc):
        for port in doc["spec"]["template"]["spec"]["containers"][0]["ports"]:
            if port["name"] == "grpc":
                port["containerPort"] = "8500"

    _edit_yaml(k8s_copy / "base" / "server" / "deployment.yaml", quote_port)
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--overlay", str(k8s_copy / "overlays" / "dev")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout
    assert "FAIL" in proc.stdout
    assert "containerPort: '8500' is not of type 'integer'" in proc.stdout
    assert proc.stdout.rstrip().endswith("k8s-validate: FAILED")


def test_selector_matching_nothing_fails_validation(kv, kubectl, k8s_copy):
    """A Service whose selector has a typo: valid YAML, valid schema, selects no pod."""

    def typo(doc):
        if doc["metadata"]["name"] == "mnist-headless":
            doc["spec"]["selector"]["app.kubernetes.io/name"] = "mnsit"

    _edit_yaml(k8s_copy / "base" / "service.yaml", typo)
    code = kv.main(["--overlay", str(k8s_copy / "overlays" / "prod")])
    assert code == 1
    report = kv.validate_overlay(k8s_copy / "overlays" / "prod", kubectl)
    assert any(
        "Service/mnist-headless" in e and "matches no pod template" in e for e in report.errors
    ), report.errors


def test_unknown_field_fails_in_strict_mode(kv, kubectl, k8s_copy):
    def misspell(doc):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        container["readinesProbe"] = container.pop("readinessProbe")

    _edit_yaml(k8s_copy / "base" / "server" / "deployment.yaml", misspell)
    report = kv.validate_overlay(k8s_copy / "overlays" / "dev", kubectl)
    assert any("readinesProbe" in e for e in report.errors), report.errors


def test_broken_kustomization_fails_with_kustomize_message(kv, kubectl, k8s_copy):
    (k8s_copy / "overlays" / "dev" / "deployment-small.yaml").unlink()
    report = kv.validate_overlay(k8s_copy / "overlays" / "dev", kubectl)
    assert len(report.errors) == 1
    assert report.errors[0].startswith("render failed:")
    assert "deployment-small.yaml" in report.errors[0]


def test_missing_kubectl_is_reported(kv, monkeypatch, capsys):
    monkeypatch.setenv("KUBECTL", "/nonexistent/kubectl")
    assert kv.main([]) == 2
    assert "kubectl not found" in capsys.readouterr().err


# ----------------------------------------------------------------- mistakes no schema sees


@pytest.fixture
def prod(rendered) -> list[dict[str, Any]]:
    return copy.deepcopy(rendered["prod"])


def test_deployment_selector_not_matching_its_pods(kv, prod):
    _find(prod, "Deployment", "mnist")["spec"]["selector"]["matchLabels"]["track"] = "canary"
    errors = kv.reference_errors(prod)
    assert any("does not match its own pod labels" in e for e in errors), errors


def test_pdb_and_networkpolicy_selecting_nothing(kv, prod):
    _find(prod, "PodDisruptionBudget", "mnist")["spec"]["selector"]["matchLabels"]["track"] = "x"
    policy = _find(prod, "NetworkPolicy", "mnist-model-server")
    policy["spec"]["podSelector"]["matchExpressions"] = [
        {"key": "track", "operator": "In", "values": ["blue"]}
    ]
    errors = kv.reference_errors(prod)
    assert any("PodDisruptionBudget/mnist" in e and "matches no pod" in e for e in errors)
    assert any("NetworkPolicy/mnist-model-server" in e for e in errors), errors


def test_service_target_port_that_no_pod_exposes(kv, prod):
    _find(prod, "Service", "mnist")["spec"]["ports"][1]["targetPort"] = "rest"
    errors = kv.reference_errors(prod)
    assert any("targets 'rest'" in e for e in errors), errors


def test_probe_on_a_port_the_container_lacks(kv, prod):
    container = _find(prod, "Deployment", "mnist")["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["grpc"]["port"] = 9000
    errors = kv.reference_errors(prod)
    assert any("livenessProbe port 9000" in e for e in errors), errors


def test_replicas_on_an_autoscaled_deployment(kv, prod):
    _find(prod, "Deployment", "mnist")["spec"]["replicas"] = 3
    errors = kv.reference_errors(prod)
    assert any("sets spec.replicas" in e for e in errors), errors


def test_pod_under_two_budgets(kv, prod):
    second = copy.deepcopy(_find(prod, "PodDisruptionBudget", "mnist"))
    second["metadata"]["name"] = "mnist-all"
    prod.append(second)
    errors = kv.reference_errors(prod)
    assert any("under 2 disruption budgets" in e for e in errors), errors


def test_missing_configmap_claim_and_account(kv, prod):
    prod[:] = [
        o
        for o in prod
        if not (o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("mnist-tfserving"))
        and o["kind"] not in ("PersistentVolumeClaim", "ServiceAccount")
    ]
    errors = "\n".join(kv.reference_errors(prod))
    assert "missing ConfigMap 'mnist-tfserving-config-" in errors
    assert "missing claim 'mnist-models'" in errors
    assert "serviceAccountName 'mnist' is not defined" in errors
    assert "serviceAccountName 'mnist-model-sync' is not defined" in errors


def test_selector_semantics(kv):
    labels = {"a": "1", "b": "2"}
    assert kv.selector_matches({}, labels)
    assert kv.selector_matches({"matchLabels": {"a": "1"}}, labels)
    assert not kv.selector_matches({"matchLabels": {"a": "2"}}, labels)
    expr = {"key": "b", "operator": "NotIn", "values": ["2"]}
    assert not kv.selector_matches({"matchExpressions": [expr]}, labels)
    assert kv.selector_matches({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}, labels)
    assert not kv.selector_matches({"matchExpressions": [{"key": "c", "operator": "Exists"}]}, labels)
