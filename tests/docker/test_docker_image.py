"""The local image (`make image`): tensorflow/serving's interface, lean, and runnable the way
the Kubernetes Deployment runs it (uid 65532, read-only root filesystem, tmpfs /tmp)."""

from __future__ import annotations

import contextlib
import json
import stat

import docker
from docker_helpers import copy_repo, grpc_predict, predict_request, wait_rest

from serving.modelserver.process import free_port

# Run inside the image with its own Python: everything a lean server image must not hold.
AUDIT = r"""
import importlib.util, json, os, sys
found = {"pip_config": [], "pip_cache": [], "compilers": [], "tests": [], "pip_module": None}
for top in ("/etc", "/root", "/opt", "/usr", "/var", "/home", "/tmp", "/models", "/config"):
    for root, dirs, files in os.walk(top):
        for name in files:
            if name in ("pip.conf", "pip.ini"):
                found["pip_config"].append(os.path.join(root, name))
        for name in list(dirs):
            path = os.path.join(root, name)
            if name == "pip" and root.endswith(("/etc/xdg", "/.config")):
                found["pip_config"].append(path)
            if name == "pip" and root.endswith("/.cache"):
                found["pip_cache"].append(path)
            if name in ("tests", "test") and any(
                f.startswith("test_") and f.endswith(".py") for f in os.listdir(path)
            ):
                found["tests"].append(path)
compilers = ("gcc", "cc", "c++", "g++", "clang", "clang++", "tcc", "cc1", "as", "ld")
for directory in os.environ.get("PATH", "").split(":") + ["/usr/lib/gcc"]:
    for name in compilers:
        if os.path.exists(os.path.join(directory, name)):
            found["compilers"].append(os.path.join(directory, name))
found["compilers"] += [p for p in ("/usr/lib/gcc", "/usr/libexec/gcc") if os.path.isdir(p)]
found["pip_module"] = importlib.util.find_spec("pip") is not None
found["pip_env"] = sorted(k for k in os.environ if k.startswith("PIP_"))
found["project_tests"] = os.path.exists("/opt/mnist-serving/tests")
print(json.dumps(found))
"""


def test_the_image_has_the_tensorflow_serving_interface(docker_client, server_image):
    config = docker_client.images.get(server_image).attrs["Config"]
    assert config["Entrypoint"] == ["/usr/bin/tf_serving_entrypoint.sh"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MODEL_NAME"] == "model" and env["MODEL_BASE_PATH"] == "/models"
    assert set(config["ExposedPorts"]) == {"8500/tcp", "8501/tcp"}
    assert config["Labels"]["mnist-serving.bind-address"] == "true"
    script = docker_client.containers.run(
        server_image, entrypoint=["cat", "/usr/bin/tf_serving_entrypoint.sh"], remove=True
    ).decode()
    assert (
        "exec /usr/bin/tensorflow_model_server --port=8500 --rest_api_port=8501 \\\n"
        '  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"'
    ) in script
    version = docker_client.containers.run(
        server_image, entrypoint=["/usr/bin/tensorflow_model_server", "--version"],
        remove=True, user="65532:65532",
    ).decode()  # fmt: skip
    assert "TensorFlow ModelServer: 2.21.0-embedded" in version
    assert "TensorFlow Library: 2.21.0" in version


def test_the_image_holds_no_pip_config_no_cache_no_compilers_no_tests(docker_client, server_image):
    out = docker_client.containers.run(
        server_image, entrypoint=["/opt/mnist-serving/bin/python", "-c", AUDIT], remove=True
    )
    found = json.loads(out.decode().strip().splitlines()[-1])
    assert found == {
        "pip_config": [], "pip_cache": [], "compilers": [], "tests": [], "pip_module": False,
        "pip_env": [], "project_tests": False,
    }  # fmt: skip
    env = docker_client.images.get(server_image).attrs["Config"]["Env"]
    assert not [e for e in env if e.startswith("PIP_")]


def test_the_image_runs_as_the_deployment_runs_it(
    docker_client, server_image, tiny_mnist_repo, tmp_path
):
    """`docker run` as the tensorflow/serving docs write it (MODEL_NAME, the model under
    /models/<name>), with the Deployment's hardening; SIGTERM reaches the server (exec)."""
    repo = copy_repo(tiny_mnist_repo, tmp_path / "models")
    for path in [repo, *repo.rglob("*")]:  # readable by uid 65532, as a volume would be
        path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    grpc_port, rest_port = free_port(), free_port()
    container = docker_client.containers.run(
        server_image,
        command=[f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1"],
        environment={"MODEL_NAME": "mnist"},
        volumes={str(repo / "mnist"): {"bind": "/models/mnist", "mode": "ro"}},
        user="65532:65532",
        read_only=True,
        tmpfs={"/tmp": "size=256m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="host",
        detach=True,
    )
    try:
        status = wait_rest(f"http://127.0.0.1:{rest_port}/v1/models/mnist", timeout_s=180)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        response = grpc_predict(
            f"127.0.0.1:{grpc_port}", predict_request(tiny_mnist_repo.test_images[:3])
        )
        classes = list(response.outputs["classes"].int64_val)
        assert classes == tiny_mnist_repo.predictions[:3].tolist()
        container.reload()
        # The entrypoint exec'd the server: it is PID 1 and gets the engine's SIGTERM itself.
        top = container.top(ps_args="-o pid,args")["Processes"]
        assert [row for row in top if "serving.modelserver" in row[-1]]
        assert not [row for row in top if "tf_serving_entrypoint" in row[-1]]
        container.stop(timeout=30)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0  # drained and exited, not SIGKILLed
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
