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

.PHONY: setup os-packages postgres-package protos lint typecheck test test-fast bench demo clean

setup: $(STAMP) os-packages postgres-package protos

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

protos: $(STAMP)
ifneq ($(PROTOS),)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
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

bench: setup
	$(PY) -m benchmarks

demo: setup
	PATH="$$PATH:/usr/sbin" $(PY) -m control_plane demo

clean:
	rm -rf $(VENV) .fleetcast build *.egg-info
