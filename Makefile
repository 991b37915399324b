# One entry point for people and CI. The first target that needs Python builds .venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

MODEL_REPO ?= models
MODEL_NAME ?= mnist
ARCH ?= cnn
EPOCHS ?=
SEED ?= 0
SERVER ?= auto
# docker only: a tensorflow/serving-compatible image (empty: the pinned tensorflow/serving)
IMAGE ?=
# seconds a rollout step waits for versions to become AVAILABLE (empty: 180)
ROLLOUT_TIMEOUT ?=
# Ports for `make serve` (empty: 8500 gRPC, 8501 REST)
GRPC_PORT ?=
REST_PORT ?=
VERSION ?=
PYTEST_ARGS ?=
# more `python -m export train` options for make export (e.g. --min-accuracy 0.5)
EXPORT_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv export list test lint serve stop status docker-engine docker-engine-stop image bench k8s-validate canary promote rollback pin rollout mobile seeds clean

help:
	@echo "make export        train + gate + publish a version (ARCH=cnn|softmax, MODEL_REPO=models)"
	@echo "make serve         serve MODEL_REPO on gRPC :8500 and REST :8501 (SERVER=auto|docker|embedded)"
	@echo "make stop|status   stop or inspect the background server"
	@echo "make serve SERVER=docker IMAGE=mnist-serving/model-server:<version>   the local image"
	@echo "make docker-engine | docker-engine-stop   start/stop a Docker engine (root)"
	@echo "make image         build mnist-serving/model-server:<version> (root, an engine)"
	@echo "make pin [VERSION=N]  begin rollouts: serve one version under the 'stable' label"
	@echo "make canary VERSION=N | promote | rollback | rollout   model-level rollout (labels)"
	@echo "make test          the whole test suite (what CI runs)"
	@echo "make bench         server and codec benchmarks (QUICK=1: a small subset; BENCH_ARGS=...)"
	@echo "make mobile [VERSION=N]  TF Lite (float32, int8) + Core ML of a version, checked against it"
	@echo "make k8s-validate  render and validate the Kubernetes manifests offline"
	@echo "make k8s-render|k8s-apply K8S_OVERLAY=dev|prod   k8s-config STABLE=N [CANARY=M]"
	@echo "make k8s-canary | k8s-promote VERSION=N | k8s-rollback | k8s-undo | k8s-status | k8s-model-status"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	@touch $@

venv: $(STAMP)

export: $(STAMP)
	$(PY) -m export train --arch $(ARCH) --repo $(MODEL_REPO) --model-name $(MODEL_NAME) --seed $(SEED) $(if $(EPOCHS),--epochs $(EPOCHS)) $(EXPORT_ARGS)

list: $(STAMP)
	$(PY) -m export list --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

seeds: $(STAMP)
	$(PY) bench/seeds.py --arch $(ARCH)

mobile: $(STAMP)
	$(PY) -m export mobile --repo $(MODEL_REPO) --model-name $(MODEL_NAME) $(if $(VERSION),--version $(VERSION))

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, then pylint's duplicate-code check (8+ similar lines; settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pylint export serving clients

serve: $(STAMP)
	$(PY) -m serving up --repo $(MODEL_REPO) --model-name $(MODEL_NAME) --server $(SERVER) $(if $(IMAGE),--image $(IMAGE)) $(if $(GRPC_PORT),--grpc-port $(GRPC_PORT)) $(if $(REST_PORT),--rest-port $(REST_PORT))

# A Docker engine for the docker backend (root: installs docker.io, starts dockerd without a
# bridge; otherwise says why not in one line). Only the daemon started here is stopped.
docker-engine:
	@tools/docker_engine.sh start

docker-engine-stop:
	@tools/docker_engine.sh stop

# mnist-serving/model-server:<version>: the embedded server behind tensorflow/serving's
# interface, root filesystem from debootstrap (tools/image/). Skips when it exists (FORCE=1).
image:
	@bash tools/image/build.sh

stop: $(STAMP)
	$(PY) -m serving down

status: $(STAMP)
	$(PY) -m serving status

canary: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make canary VERSION=N"; exit 2; }
	$(PY) -m serving rollout canary $(VERSION) --repo $(MODEL_REPO) --model-name $(MODEL_NAME) $(if $(ROLLOUT_TIMEOUT),--timeout $(ROLLOUT_TIMEOUT))

promote: $(STAMP)
	$(PY) -m serving rollout promote --repo $(MODEL_REPO) --model-name $(MODEL_NAME) $(if $(ROLLOUT_TIMEOUT),--timeout $(ROLLOUT_TIMEOUT))

rollback: $(STAMP)
	$(PY) -m serving rollout rollback --repo $(MODEL_REPO) --model-name $(MODEL_NAME) $(if $(ROLLOUT_TIMEOUT),--timeout $(ROLLOUT_TIMEOUT))

pin: $(STAMP)
	$(PY) -m serving rollout pin $(VERSION) --repo $(MODEL_REPO) --model-name $(MODEL_NAME) $(if $(ROLLOUT_TIMEOUT),--timeout $(ROLLOUT_TIMEOUT))

rollout: $(STAMP)
	$(PY) -m serving rollout status --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

# Benchmarks print figures (never asserted in tests). Load: wrk (REST), h2load (gRPC; Debian nghttp2-client).
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || echo "wrk unavailable: REST rows will be skipped"
	@command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; } || echo "h2load unavailable: gRPC load from the Python client"
	@ls -d $(MODEL_REPO)/$(MODEL_NAME)/[0-9]* >/dev/null 2>&1 || $(MAKE) export
	$(PY) bench/codec_bench.py
	$(PY) bench/server_bench.py --model-base $(MODEL_REPO)/$(MODEL_NAME) --model-name $(MODEL_NAME) $(if $(QUICK),--quick) $(BENCH_ARGS)
	$(PY) bench/session_runtime_bench.py --model-base $(MODEL_REPO)/$(MODEL_NAME)
	$(PY) bench/request_cost.py --model-base $(MODEL_REPO)/$(MODEL_NAME) --model-name $(MODEL_NAME) $(if $(QUICK),--seconds 4)

# --- Kubernetes (k8s/, docs/k8s-runbook.md). Everything up to k8s-config works offline. ---
K8S_OVERLAY ?= dev
K8S_NS ?= $(if $(filter dev,$(K8S_OVERLAY)),mnist-dev,mnist)
KUBECTL ?= kubectl
K8S_TIMEOUT ?= 20m
K8S_PROBE_IMAGE ?= busybox:1.36.1
K8S_CLUSTER_DOMAIN ?= cluster.local
K8S_RUN = $(KUBECTL) -n $(K8S_NS)
# A throwaway pod that passes the restricted Pod Security profile of the namespace.
K8S_PROBE_OVERRIDES := {"spec":{"automountServiceAccountToken":false,"securityContext":{"runAsNonRoot":true,"runAsUser":65532,"runAsGroup":65532,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"mnist-model-status","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}

.PHONY: k8s-render k8s-config k8s-apply k8s-canary k8s-promote k8s-rollback k8s-undo k8s-status k8s-model-status

k8s-validate: $(STAMP)
	$(PY) tools/k8s_validate.py
	$(PY) -m pytest tests/k8s -q -p no:cacheprovider

k8s-render:
	$(KUBECTL) kustomize k8s/overlays/$(K8S_OVERLAY)

k8s-config: $(STAMP)
	@test -n "$(STABLE)" || { echo "usage: make k8s-config STABLE=N [CANARY=M]"; exit 2; }
	$(PY) tools/k8s_validate.py config --stable $(STABLE) $(if $(CANARY),--canary $(CANARY))

k8s-apply: k8s-validate
	$(KUBECTL) apply -k k8s/overlays/$(K8S_OVERLAY)
	$(K8S_RUN) rollout status deployment/mnist --timeout=$(K8S_TIMEOUT)

k8s-canary: K8S_NS = mnist
k8s-canary: k8s-validate
	$(KUBECTL) apply -k k8s/overlays/canary
	$(K8S_RUN) rollout status deployment/mnist-canary --timeout=$(K8S_TIMEOUT)

k8s-promote: K8S_NS = mnist
k8s-promote: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make k8s-promote VERSION=N (the canary version)"; exit 2; }
	$(PY) tools/k8s_validate.py config --stable $(VERSION)
	$(MAKE) --no-print-directory k8s-validate
	$(KUBECTL) apply -k k8s/overlays/prod
	$(K8S_RUN) rollout status deployment/mnist --timeout=$(K8S_TIMEOUT)
	$(K8S_RUN) delete deployment,service,configmap -l track=canary --ignore-not-found

k8s-rollback: K8S_NS = mnist
k8s-rollback:
	$(K8S_RUN) delete deployment,service,configmap -l track=canary --ignore-not-found

k8s-undo:
	$(K8S_RUN) rollout undo deployment/mnist
	$(K8S_RUN) rollout status deployment/mnist --timeout=$(K8S_TIMEOUT)

k8s-status:
	$(K8S_RUN) get deployments,hpa,pdb -l app.kubernetes.io/name=mnist
	$(K8S_RUN) rollout status deployment/mnist --watch=false
	-$(K8S_RUN) rollout status deployment/mnist-canary --watch=false 2>/dev/null
	$(K8S_RUN) get pods -l app.kubernetes.io/component=model-server -L track -o wide

k8s-model-status:
	$(K8S_RUN) run mnist-model-status --rm -i --quiet --restart=Never \
	  --image=$(K8S_PROBE_IMAGE) --override-type=strategic --overrides='$(K8S_PROBE_OVERRIDES)' \
	  --command -- sh -c 'for ip in $$(nslookup -type=a mnist-headless.$(K8S_NS).svc.$(K8S_CLUSTER_DOMAIN) | awk "/^Address/ && !/:53\$$/ {print \$$2}"); do echo "== pod $$ip"; wget -qO- -T 5 http://$$ip:8501/v1/models/$(MODEL_NAME) || echo "(no answer)"; done'

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
