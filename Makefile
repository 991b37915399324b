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
VERSION ?=
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv export list test lint serve stop status bench k8s-validate canary promote rollback pin rollout mobile seeds clean

help:
	@echo "make export        train + gate + publish a version (ARCH=cnn|softmax, MODEL_REPO=models)"
	@echo "make serve         serve MODEL_REPO on gRPC :8500 and REST :8501 (SERVER=auto|docker|embedded)"
	@echo "make stop|status   stop or inspect the background server"
	@echo "make pin [VERSION=N]  begin rollouts: serve one version under the 'stable' label"
	@echo "make canary VERSION=N | promote | rollback | rollout   model-level rollout (labels)"
	@echo "make test          the whole test suite (what CI runs)"
	@echo "make bench         server and codec benchmarks"
	@echo "make k8s-validate  render and validate the Kubernetes manifests offline"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	@touch $@

venv: $(STAMP)

export: $(STAMP)
	$(PY) -m export train --arch $(ARCH) --repo $(MODEL_REPO) --model-name $(MODEL_NAME) --seed $(SEED) $(if $(EPOCHS),--epochs $(EPOCHS))

list: $(STAMP)
	$(PY) -m export list --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

seeds: $(STAMP)
	$(PY) bench/seeds.py --arch $(ARCH)

mobile: $(STAMP)
	$(PY) -m export mobile --repo $(MODEL_REPO) --model-name $(MODEL_NAME) $(if $(VERSION),--version $(VERSION))

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

serve: $(STAMP)
	$(PY) -m serving up --repo $(MODEL_REPO) --model-name $(MODEL_NAME) --server $(SERVER)

stop: $(STAMP)
	$(PY) -m serving down

status: $(STAMP)
	$(PY) -m serving status

canary: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make canary VERSION=N"; exit 2; }
	$(PY) -m serving rollout canary $(VERSION) --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

promote: $(STAMP)
	$(PY) -m serving rollout promote --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

rollback: $(STAMP)
	$(PY) -m serving rollout rollback --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

pin: $(STAMP)
	$(PY) -m serving rollout pin $(VERSION) --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

rollout: $(STAMP)
	$(PY) -m serving rollout status --repo $(MODEL_REPO) --model-name $(MODEL_NAME)

bench: $(STAMP)
	$(PY) bench/run_all.py

k8s-validate: $(STAMP)
	$(PY) tools/k8s_validate.py

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
