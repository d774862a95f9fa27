"""Container build contexts for functions-framework (GCF), Knative and OpenFaaS.

Each context is ``docker build``-able as is: the handler's library modules,
``model.fcpkg`` and ``fleetcast.pub``, a pinned ``requirements.txt`` and a
Dockerfile. The image verifies the package at start (signature, hashes,
profile, self-test) and refuses to serve a package that fails.
"""

from __future__ import annotations

from pathlib import Path

BASE = "python:3.11-slim"

_ENV = """ENV FLEETCAST_PACKAGE=/app/model.fcpkg \\
    FLEETCAST_PUBLIC_KEY=/app/fleetcast.pub \\
    FLEETCAST_PACKAGE_SHA256={sha256} \\
    PYTHONUNBUFFERED=1
"""

_FRAMEWORK = """FROM {base}
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
{env}ENV PORT=8080
EXPOSE 8080
CMD exec functions-framework --source {source} --target {target} \\
    --signature-type {signature} --host 0.0.0.0 --port $PORT
"""

# GCF source deploys look for main.py at the root of the source directory
_GCF_MAIN = '''"""Entry points for `gcloud functions deploy --entry-point predict_http`."""

from functions.gcf import predict_cloudevent, predict_http

__all__ = ["predict_cloudevent", "predict_http"]
'''

# OpenFaaS python3-http: of-watchdog in http mode in front of the handler
_OPENFAAS = """FROM ghcr.io/openfaas/of-watchdog:0.10.7 AS watchdog
FROM {base}
COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog
WORKDIR /home/app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV FLEETCAST_PACKAGE=/home/app/model.fcpkg \\
    FLEETCAST_PUBLIC_KEY=/home/app/fleetcast.pub \\
    FLEETCAST_PACKAGE_SHA256={sha256} \\
    fprocess="gunicorn --bind 127.0.0.1:5000 --workers 1 --threads 4 index:app" \\
    mode="http" upstream_url="http://127.0.0.1:5000" ready_path="/_/ready"
USER 1000
CMD ["fwatchdog"]
"""

# what the python3-http template's index.py does: build (event, context), call handle
_OPENFAAS_INDEX = '''"""The python3-http entry point: Flask -> function.handler.handle."""

from __future__ import annotations

from flask import Flask, Response, request

from function.handler import handle

app = Flask(__name__)


class Event:
    def __init__(self) -> None:
        self.body = request.get_data()
        self.headers = request.headers
        self.method = request.method
        self.query = request.args
        self.path = request.path


class Context:
    hostname = "fleetcast"


@app.route("/_/ready")
def ready() -> str:
    return "ok"


@app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
@app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
def call(path: str) -> Response:
    reply = handle(Event(), Context())
    return Response(reply["body"], reply["statusCode"], reply.get("headers"))
'''

_OPENFAAS_HANDLER = '''"""OpenFaaS python3-http handler: Fleetcast's handle(event, context)."""

from functions.openfaas import handle

__all__ = ["handle"]
'''

_STACK = """version: 1.0
provider:
  name: openfaas
functions:
  {name}:
    lang: dockerfile
    handler: .
    image: {name}:latest
"""


def write_context(target: str, directory: Path, requirements: str, sha256: str) -> None:
    (directory / "requirements.txt").write_text(requirements)
    env = _ENV.format(sha256=sha256)
    if target == "gcf":
        (directory / "main.py").write_text(_GCF_MAIN)
        dockerfile = _FRAMEWORK.format(
            base=BASE, env=env, source="main.py", target="predict_http", signature="http"
        )
    elif target == "knative":
        dockerfile = _FRAMEWORK.format(
            base=BASE, env=env, source="functions/knative.py", target="receive", signature="http"
        )
    elif target == "openfaas":
        (directory / "function").mkdir(exist_ok=True)
        (directory / "function" / "__init__.py").write_text("")
        (directory / "function" / "handler.py").write_text(_OPENFAAS_HANDLER)
        (directory / "index.py").write_text(_OPENFAAS_INDEX)
        (directory / "stack.yml").write_text(_STACK.format(name="fleetcast-function"))
        (directory / "requirements.txt").write_text(requirements + "gunicorn\n")
        dockerfile = _OPENFAAS.format(base=BASE, sha256=sha256)
    else:
        raise ValueError(f"no container context for {target!r}")
    (directory / "Dockerfile").write_text(dockerfile)
    (directory / ".dockerignore").write_text("**/__pycache__\n")
