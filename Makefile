# Entry points for people and CI. `make demo` and `make test` are the two
# commands the README gives a newcomer; .ci/run runs `make test`.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PACKAGES := destination discovery
CONTAINER_ENGINE ?= docker
IMAGE ?= multicluster-destination:0.1.0

.PHONY: setup binaries lint test unit integration demo clusters protos manifests lock image

# Runtime dependencies at the versions of constraints.txt, the ones the image installs.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $@

## setup: create .venv with the package and its dev tools
setup: $(VENV)/.installed

## binaries: build the pinned etcd, Kubernetes and kwok binaries into the cache (once)
binaries:
	deploy/local/build-binaries.sh

## protos: regenerate destination/_proto from protos/*.proto
protos: setup
	$(PY) protos/generate.py

## lint: ruff, mypy --strict, import layering, generated stubs, manifest copies and pins up to date
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) protos/generate.py --check
	$(PY) deploy/kustomize/sync.py --check
	$(PY) deploy/lock.py --check

## manifests: copy deploy/*.yaml into the Kustomize base (after editing them)
manifests: setup
	$(PY) deploy/kustomize/sync.py

## lock: pin the venv's runtime dependencies in constraints.txt (after upgrading one)
lock: setup
	$(PY) deploy/lock.py

## image: build the container image (needs docker or podman: CONTAINER_ENGINE=podman)
image:
	$(CONTAINER_ENGINE) build -f Containerfile -t $(IMAGE) .

## test: everything CI runs: lint, unit tests, integration tests on real clusters
test: setup binaries lint
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

integration: setup binaries
	$(PY) -m pytest tests/integration

## clusters: start local clusters east and west until Ctrl-C
clusters: setup binaries
	$(PY) -m tests.kube up east west

## demo: the multicluster walkthrough: two clusters, link-gen, the mirror and the server, live endpoint views
demo: setup binaries
	deploy/local/demo.sh
