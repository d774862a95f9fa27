"""The OpenFaaS python3-http signature: handle(event, context) -> {statusCode, body, headers}."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from functions.openfaas import handle


@dataclass
class Event:  # what the python3-http template's index.py passes
    body: bytes
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    path: str = "/"


class Context:
    hostname = "digits-fn-5f7c9"


def test_openfaas_scores_and_refuses_bad_input(
    function_env: dict[str, str], edge_packages: Any
) -> None:
    rows = [[float(v) for v in edge_packages.x[0]]]
    reply = handle(Event(json.dumps({"instances": rows}).encode()), Context())
    assert reply["statusCode"] == 200 and reply["headers"]["Content-Type"] == "application/json"
    assert len(next(iter(json.loads(reply["body"])["outputs"].values()))[0]) == 10
    bad = handle(Event(b'{"inputs": {"input": [[0.5]]}}'), Context())
    assert bad["statusCode"] == 422 and "dimension 1 is 1" in json.loads(bad["body"])["detail"]
    assert handle(Event(b"", method="PUT"), Context())["statusCode"] == 405
    assert handle(Event(b"", method="GET"), Context())["statusCode"] == 200
