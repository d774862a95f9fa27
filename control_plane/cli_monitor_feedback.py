"""Feedback labels for ``fleetcast monitor feedback``: a CSV or JSON-lines file, or
``--label PID=LABEL`` pairs, read into (prediction id, label) with every problem
named by its line before anything is sent.

- CSV: ``prediction_id,label`` per line, with or without that header line;
- JSON lines (the first non-blank character is ``{``): ``{"prediction_id": ..., "label": ...}``;
- one JSON document: an array of those objects, or the API's body ``{"labels": [...]}``.

Blank lines are skipped; anything else that is not a label is an error (a row
with a third cell, an unknown JSON field, a label that is not a finite number, an
id longer than the API takes), never silently left out.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from typing import Any

import click

from control_plane.errors import InvalidInput

MAX_CHUNK = 10_000  # labels per POST /api/v1/feedback (FeedbackIn's max_length)
MAX_ID = 128  # characters of a prediction id (the route's limit)
Labels = list[tuple[str, float]]


def parse_feedback(text: str, source: str) -> Labels:
    """Every label of a feedback file; InvalidInput naming ``source``, the line and why."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        items = _json_document(stripped, source)
        labels = _json_items(items, source) if items is not None else _json_lines(text, source)
    else:
        labels = _csv(text, source)
    if not labels:
        raise InvalidInput(f"{source}: no labels (expected prediction_id,label lines)")
    return labels


def parse_pairs(pairs: Iterable[str]) -> Labels:
    """``--label PID=LABEL`` values (the label after the last ``=``)."""
    labels: Labels = []
    for pair in pairs:
        pid, eq, raw = pair.rpartition("=")
        try:
            if not eq:
                raise InvalidInput("expected PREDICTION_ID=LABEL")
            labels.append((_pid(pid), _label(raw)))
        except InvalidInput as exc:
            raise click.BadParameter(f"{pair!r}: {exc}", param_hint="--label") from None
    return labels


def _csv(text: str, source: str) -> Labels:
    labels: Labels = []
    reader = csv.reader(io.StringIO(text))
    first = True
    for row in reader:
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if first and [c.lower() for c in cells] == ["prediction_id", "label"]:
            first = False
            continue
        first = False
        try:
            if len(cells) != 2:
                n = len(cells)
                raise InvalidInput(f"expected prediction_id,label, got {n} cell{'s' * (n != 1)}")
            labels.append((_pid(cells[0]), _label(cells[1])))
        except InvalidInput as exc:
            raise InvalidInput(f"{source} line {reader.line_num}: {exc}") from None
    return labels


def _json_document(text: str, source: str) -> list[Any] | None:
    """The items of a whole-file JSON array or API body ``{"labels": [...]}``; None when
    the file is not one JSON document of those shapes (then it is read as JSON lines)."""
    try:
        whole: Any = json.loads(text)
    except ValueError as exc:
        if text.startswith("["):
            raise InvalidInput(f"{source}: not a JSON array of labels ({exc})") from None
        return None
    if isinstance(whole, dict) and set(whole) == {"labels"} and isinstance(whole["labels"], list):
        return list(whole["labels"])
    return list(whole) if isinstance(whole, list) else None


def _json_items(items: list[Any], source: str) -> Labels:
    labels: Labels = []
    for number, item in enumerate(items, start=1):
        try:
            labels.append(_json_label(item))
        except InvalidInput as exc:
            raise InvalidInput(f"{source} item {number}: {exc}") from None
    return labels


def _json_lines(text: str, source: str) -> Labels:
    labels: Labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item: Any = json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"{source} line {number}: not JSON ({exc})") from None
        try:
            labels.append(_json_label(item))
        except InvalidInput as exc:
            raise InvalidInput(f"{source} line {number}: {exc}") from None
    return labels


def _json_label(item: Any) -> tuple[str, float]:
    if not isinstance(item, dict):
        raise InvalidInput('expected {"prediction_id": ..., "label": ...}')
    missing = [k for k in ("prediction_id", "label") if k not in item]
    extra = sorted(set(item) - {"prediction_id", "label"})
    problems = [f"missing {', '.join(missing)}"] if missing else []
    problems += [f"unexpected field {', '.join(extra)}"] if extra else []
    if problems:
        raise InvalidInput("; ".join(problems))
    pid, label = item["prediction_id"], item["label"]
    if not isinstance(pid, str):
        raise InvalidInput(f"prediction_id {pid!r} is not a string")
    if isinstance(label, bool) or not isinstance(label, int | float):
        raise InvalidInput(f"label {label!r} is not a number")
    return _pid(pid), _label(str(label))


def _pid(text: str) -> str:
    pid = text.strip()
    if not pid:
        raise InvalidInput("empty prediction id")
    if len(pid) > MAX_ID:
        raise InvalidInput(f"prediction id {pid[:20]!r}… is longer than {MAX_ID} characters")
    return pid


def _label(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"label {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidInput(f"label {text.strip()!r} is not a finite number")
    return value
