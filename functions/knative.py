"""Knative (or any CloudEvents 1.0 sink): an event in, a prediction event back.

``receive`` is an HTTP function (served by ``functions-framework --source
functions/knative.py --target receive``). It reads the CloudEvent in binary
or structured mode with the ``cloudevents`` SDK, scores the event's data, and
replies with a ``dev.fleetcast.prediction`` CloudEvent in the same mode,
``subject`` naming the request's id. Bad events get a JSON 4xx naming the problem.
"""

from __future__ import annotations

import json
from typing import Any

import flask
from cloudevents.conversion import to_binary, to_structured
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from functions.core import BadRequest, FunctionError, MethodNotAllowed, get_core
from functions.http import JSON

PREDICTION_TYPE = "dev.fleetcast.prediction"
STRUCTURED = "application/cloudevents+json"


def _payload(data: Any) -> dict[str, Any]:
    if isinstance(data, (bytes, str)):
        return get_core().parse_body(data)
    if not isinstance(data, dict):
        raise BadRequest(f"event data must be a JSON object, got {type(data).__name__}")
    return data


def reply_event(request_event: CloudEvent, result: dict[str, Any]) -> CloudEvent:
    model = result["model"]
    return CloudEvent(
        {
            "type": PREDICTION_TYPE,
            "source": f"/fleetcast/{model['name']}/{model['version']}",
            "subject": str(request_event["id"]),
            "datacontenttype": JSON,
        },
        result,
    )


def receive(request: flask.Request) -> tuple[bytes | str, int, dict[str, str]]:
    core = get_core()
    try:
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.method}: POST a CloudEvent")
        try:
            event = from_http(dict(request.headers), request.get_data())
        except GenericException as exc:
            raise BadRequest(f"not a CloudEvent 1.0: {exc}") from exc
        result = core.predict(_payload(event.get_data()), str(event["id"]))
    except FunctionError as exc:
        return json.dumps(exc.body()), exc.status, {"content-type": JSON}
    structured = request.mimetype == STRUCTURED
    headers, body = (to_structured if structured else to_binary)(reply_event(event, result))
    return body, 200, headers
