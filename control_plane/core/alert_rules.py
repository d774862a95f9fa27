"""The rules in effect for a model: the defaults overlaid by the operator's stored rules (no I/O).

A stored rule is keyed by (model, name). Its name decides what it does:

- the name of a default rule: it **replaces** that default (``enabled: false`` disables it);
- any other name: it **adds** a rule.

:func:`build_rule` turns an operator's fields into a complete :class:`AlertRule`: the
fields left out are taken from the default of the same name, so
``error_rate --threshold 0.02`` keeps the default's window, ``for_s``, severity and
flags; a new rule needs at least ``metric`` and ``threshold``. The stored rule is
complete: a later change to the code's defaults does not move it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from control_plane.core.alerts import AlertRule
from control_plane.errors import InvalidInput

# What AlertService reads (services/alerts.py builds a Reading of each; docs/monitoring.md).
Metric = Literal[
    "drift_features",
    "drift_share",
    "error_rate",
    "silent_device_share",
    "accuracy",
    "accuracy_drop",
    "estimated_accuracy",
    "estimated_accuracy_drop",
    "attribution_top_k_overlap",
]
METRICS: tuple[str, ...] = get_args(Metric)
COMPARISONS: tuple[str, ...] = (">", ">=", "<", "<=")
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
MAX_WINDOW_S = 30 * 86400.0  # a month: longer windows are a report, not an alert
MAX_FOR_S = 30 * 86400.0
RULE_NAME = r"^[a-z][a-z0-9_]{0,63}$"
FIELDS = ("metric", "threshold", "comparison", "window_s", "for_s", "severity", "retrain",
          "gates_rollout")  # fmt: skip
Source = Literal["default", "stored"]


@dataclass(frozen=True)
class RuleSetting:
    """One rule of a model as the operator sees it."""

    rule: AlertRule
    enabled: bool
    source: Source  # "stored": an operator's rule (overriding the default or added)
    default: AlertRule | None  # the code's rule of this name, if there is one

    @property
    def overrides_default(self) -> bool:
        return self.source == "stored" and self.default is not None


def effective_rules(
    defaults: Sequence[AlertRule], stored: Iterable[tuple[AlertRule, bool]]
) -> list[RuleSetting]:
    """Defaults in their order, each replaced by the stored rule of its name; then the
    stored rules that name no default, by name. Disabled rules are listed too."""
    by_name = {rule.name: (rule, enabled) for rule, enabled in stored}
    out: list[RuleSetting] = []
    for default in defaults:
        found = by_name.pop(default.name, None)
        if found is None:
            out.append(RuleSetting(default, True, "default", None))
        else:
            out.append(RuleSetting(found[0], found[1], "stored", default))
    for name in sorted(by_name):
        rule, enabled = by_name[name]
        out.append(RuleSetting(rule, enabled, "stored", None))
    return out


def active_rules(settings: Iterable[RuleSetting]) -> tuple[AlertRule, ...]:
    """The enabled rules, what an evaluation uses."""
    return tuple(s.rule for s in settings if s.enabled)


def build_rule(
    model: str, name: str, given: Mapping[str, Any], default: AlertRule | None
) -> AlertRule:
    """A complete rule for ``model`` from the operator's ``given`` fields (None: left out),
    the rest from ``default``; InvalidInput naming the field that is missing or wrong."""
    check_name(name)
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"alert rule {name!r}: unknown field(s) {', '.join(unknown)}")
    chosen = {k: v for k, v in given.items() if v is not None}
    if default is None:
        for required in ("metric", "threshold"):
            if required not in chosen:
                raise InvalidInput(
                    f"alert rule {name!r}: {required} is required (no default rule of this name)"
                )
        base = AlertRule(name, "", 0.0)  # both replaced below
    else:
        base = default
    rule = replace(base, name=name, match=(("model", model),), **_typed(chosen))
    check_rule(rule)
    return rule


def _typed(chosen: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in chosen.items():
        if key in ("threshold", "window_s", "for_s"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"alert rule {key}: expected a number, got {value!r}")
            out[key] = float(value)
        elif key in ("retrain", "gates_rollout"):
            if not isinstance(value, bool):
                raise InvalidInput(f"alert rule {key}: expected true or false, got {value!r}")
            out[key] = value
        else:
            out[key] = value
    return out


def check_name(name: str) -> str:
    if not re.fullmatch(RULE_NAME, name):
        raise InvalidInput(
            f"alert rule name {name!r}: expected lower-case letters, digits and _ "
            "(starting with a letter, at most 64)"
        )
    return name


def check_rule(rule: AlertRule) -> None:
    """InvalidInput naming the first field out of range."""
    if rule.metric not in METRICS:
        raise InvalidInput(
            f"alert rule {rule.name!r}: metric {rule.metric!r} is not read by the alert "
            f"evaluation (one of {', '.join(METRICS)})"
        )
    if rule.comparison not in COMPARISONS:
        raise InvalidInput(
            f"alert rule {rule.name!r}: comparison {rule.comparison!r}: expected one of "
            + " ".join(COMPARISONS)
        )
    if rule.severity not in SEVERITIES:
        raise InvalidInput(
            f"alert rule {rule.name!r}: severity {rule.severity!r}: expected one of "
            + ", ".join(SEVERITIES)
        )
    if not math.isfinite(rule.threshold):
        raise InvalidInput(f"alert rule {rule.name!r}: threshold must be a finite number")
    if not (0 < rule.window_s <= MAX_WINDOW_S):
        raise InvalidInput(
            f"alert rule {rule.name!r}: window_s {rule.window_s}: expected > 0 and "
            f"<= {MAX_WINDOW_S:.0f}"
        )
    if not (0 <= rule.for_s <= MAX_FOR_S):
        raise InvalidInput(
            f"alert rule {rule.name!r}: for_s {rule.for_s}: expected 0..{MAX_FOR_S:.0f}"
        )
