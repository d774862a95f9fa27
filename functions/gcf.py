"""Google Cloud Functions / Cloud Run functions through the real ``functions-framework``.

Two targets in this file (``functions-framework --source functions/gcf.py``):

- ``predict_http`` (``--signature-type http``): GET describes the model, POST
  scores a JSON request; errors are JSON with their HTTP status.
- ``predict_cloudevent`` (``--signature-type cloudevent``): the event's data is
  the JSON request; the prediction is logged with its id (a CloudEvent function
  returns no body) as a JSON log line. Bad data is refused with a JSON 4xx, so the platform does
  not retry it for ever.
"""

from __future__ import annotations

import json
from typing import Any

import flask
from cloudevents.http import CloudEvent

from functions.core import BadRequest, FunctionError, get_core
from functions.http import JSON, respond


def predict_http(request: flask.Request) -> tuple[str, int, dict[str, str]]:
    request_id = request.headers.get("X-Request-Id") or request.headers.get("Function-Execution-Id")
    status, text = respond(get_core(), request.method, request.get_data(), request_id)
    return text, status, {"content-type": JSON}


def _event_payload(data: Any) -> dict[str, Any]:
    if isinstance(data, (bytes, str)):
        return get_core().parse_body(data)
    if not isinstance(data, dict):
        raise BadRequest(f"event data must be a JSON object, got {type(data).__name__}")
    return data


def predict_cloudevent(cloud_event: CloudEvent) -> None:
    core = get_core()
    try:
        result = core.predict(_event_payload(cloud_event.get_data()), str(cloud_event["id"]))
    except FunctionError as exc:
        flask.abort(flask.Response(json.dumps(exc.body()), exc.status, mimetype=JSON))
    # one JSON line on stdout: Cloud Logging parses it into a structured entry
    print(
        json.dumps(
            {
                "severity": "INFO",
                "message": f"event {cloud_event['id']} scored: "
                f"prediction {result['prediction_id']}",
                "prediction_id": result["prediction_id"],
                "package_id": core.info["package_id"],
            }
        ),
        flush=True,
    )
