# Fleetcast: two commands on a fresh machine -- `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.fleetcast-installed
PROTOS := $(wildcard protos/fleetcast/v1/*.proto)
# pytest's own timeout per test; generous, it only catches hangs
PYTEST_FLAGS ?= --timeout=600

.PHONY: setup os-packages postgres-package protos lint typecheck test test-fast bench demo wheel wheelhouse clean

setup: $(STAMP) os-packages postgres-package

# The virtualenv with every extra. torch comes first and pinned, so that the
# resolver takes the CPU wheel on this disk and never a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[control-plane,dev,functions,batch]'
	$(PIP) install --quiet --no-deps onnx2torch==1.5.15
	touch $(STAMP)

# mosquitto is the real MQTT broker; installed from the OS packages when missing.
os-packages:
	@if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else echo "mosquitto missing: run 'sudo apt-get install -y mosquitto'"; exit 1; fi; \
	fi

# PostgreSQL 15 (Debian's postgresql) for the store tests, which start their own server
# in a temporary directory (tests/pg_support.py); installed when missing.
postgres-package:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql missing: run 'sudo apt-get install -y postgresql'"; exit 1; fi; \
	fi

# The generated code is committed (docs/install.md says why); after editing a .proto,
# regenerate it. protoc's virtual path maps protos/ to edge_agent/proto/, so the
# stubs live in the project's namespace and import as edge_agent.proto.fleetcast.v1.
protos: $(STAMP)
ifneq ($(PROTOS),)
	$(PY) -m grpc_tools.protoc -Iedge_agent/proto=protos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
endif

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy

test: setup
	PATH="$$PATH:/usr/sbin" $(PY) -m pytest $(PYTEST_FLAGS) tests

test-fast: setup
	$(PY) -m pytest $(PYTEST_FLAGS) -m "not integration and not slow" tests

# Evidently, the drift benchmark's comparison, needs pandas<3: its own venv, used
# only by benchmarks/bench_drift.py (docs/monitoring.md).
EVIDENTLY_VENV := .venv-evidently
$(EVIDENTLY_VENV)/.installed:
	test -x $(EVIDENTLY_VENV)/bin/python || $(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/pip install --quiet 'evidently>=0.7' 'pandas<3'
	touch $@

bench: setup $(EVIDENTLY_VENV)/.installed
	FLEETCAST_EVIDENTLY_PYTHON=$(EVIDENTLY_VENV)/bin/python $(PY) -m benchmarks

demo: setup
	PATH="$$PATH:/usr/sbin" $(PY) -m control_plane demo

# The wheel, built from a clean copy of the work tree: dist/fleetcast-<version>-py3-none-any.whl
# (needs only Python with pip and git, not the development virtualenv)
wheel:
	$(PYTHON) -m tools.wheels build --out dist

# Every wheel a device needs, for an offline install (docs/install.md):
#   make wheelhouse ARCH=aarch64 PYTHON_VERSION=3.11 EXTRA=agent-litert
# then on the device: pip install --no-index --find-links <dir> 'fleetcast[agent-litert]'
ARCH ?= aarch64
PYTHON_VERSION ?= 3.11
EXTRA ?= agent
wheelhouse:
	$(PYTHON) -m tools.wheels wheelhouse --arch $(ARCH) --python $(PYTHON_VERSION) --extra $(EXTRA) --dest dist/wheelhouse

clean:
	rm -rf $(VENV) $(EVIDENTLY_VENV) .fleetcast build dist *.egg-info
