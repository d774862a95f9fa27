"""Alert rules per model: the defaults overlaid by the operators' stored rules; set, delete.

``AlertService`` evaluates :meth:`AlertRuleService.active` of each model; the API
(``/api/v1/alert-rules``) and the CLI (``fleetcast alert-rules``) read
:meth:`effective` and change rules with :meth:`set` and :meth:`delete`, each audited
(``alert_rule.set`` / ``alert_rule.delete``, subject ``alert-rule:MODEL/RULE``, the rule
before and after). A rule is set for a registered model only (404 naming it otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from control_plane.core.alert_rules import (
    RuleSetting,
    active_rules,
    build_rule,
    check_name,
    effective_rules,
)
from control_plane.core.alerts import AlertRule, default_rules, rule_to_dict
from control_plane.services import Clock
from control_plane.services.audit import AuditService
from control_plane.services.tokens import Principal
from control_plane.store.records import StoredAlertRule
from control_plane.store.repos import Repositories

RulesFor = Callable[[str], tuple[AlertRule, ...]]


def subject(model: str, name: str) -> str:
    return f"alert-rule:{model}/{name}"


def setting_view(model: str, s: RuleSetting, stored: StoredAlertRule | None) -> dict[str, Any]:
    """A rule as the API answers it: its fields, whether it is on, and where it comes from."""
    view = rule_to_dict(s.rule)
    del view["match"]
    return {
        "model": model,
        **view,
        "enabled": s.enabled,
        "source": s.source,
        "overrides_default": s.overrides_default,
        "default": None if s.default is None else _fields(s.default),
        "updated_by": None if stored is None else stored.updated_by,
        "updated_at": None if stored is None else stored.updated_at,
    }


def _fields(rule: AlertRule) -> dict[str, Any]:
    out = rule_to_dict(rule)
    del out["match"]
    return out


def _audited(stored: StoredAlertRule | None) -> dict[str, Any] | None:
    if stored is None:
        return None
    return {**_fields(stored.rule), "enabled": stored.enabled}


class AlertRuleService:
    def __init__(
        self,
        repos: Repositories,
        audit: AuditService,
        defaults: RulesFor = default_rules,
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.audit = audit
        self.defaults = defaults
        self.clock = clock

    def stored_by_model(self) -> dict[str, list[StoredAlertRule]]:
        """Every stored rule, per model (one read per evaluation)."""
        out: dict[str, list[StoredAlertRule]] = {}
        for stored in self.repos.alert_rules.list():
            out.setdefault(stored.model, []).append(stored)
        return out

    def settings(
        self, model: str, stored: list[StoredAlertRule] | None = None
    ) -> list[RuleSetting]:
        """The model's rules in effect (disabled ones included), from ``stored`` if given."""
        rows = self.repos.alert_rules.list(model) if stored is None else stored
        return effective_rules(self.defaults(model), [(s.rule, s.enabled) for s in rows])

    def active(
        self, model: str, stored: list[StoredAlertRule] | None = None
    ) -> tuple[AlertRule, ...]:
        return active_rules(self.settings(model, stored))

    def effective(self, model: str) -> list[dict[str, Any]]:
        """The views of :meth:`settings` (404 for a model not in the catalog)."""
        self.repos.models.get(model)
        stored = self.repos.alert_rules.list(model)
        by_name = {s.rule.name: s for s in stored}
        return [
            setting_view(model, s, by_name.get(s.rule.name) if s.source == "stored" else None)
            for s in self.settings(model, stored)
        ]

    def set(
        self, model: str, name: str, given: Mapping[str, Any], enabled: bool, actor: Principal
    ) -> dict[str, Any]:
        """Store the rule (left-out fields from the default of its name); audited."""
        self.repos.models.get(model)  # NotFound naming the model
        default = {r.name: r for r in self.defaults(model)}.get(check_name(name))
        rule = build_rule(model, name, given, default)
        before = self.repos.alert_rules.find(model, name)
        after = self.repos.alert_rules.put(model, rule, enabled, actor.name, self.clock())
        self.audit.record(
            actor.name,
            "alert_rule.set",
            subject(model, name),
            before=_audited(before),
            after=_audited(after),
            detail={"overrides_default": default is not None},
        )
        return self._view(model, name)

    def delete(self, model: str, name: str, actor: Principal) -> dict[str, Any]:
        """Remove the stored rule (404 if none): the default of its name, if any, applies
        again. Answers the removed rule and what is in effect now (None: no rule)."""
        check_name(name)
        removed = self.repos.alert_rules.delete(model, name)
        default = {r.name: r for r in self.defaults(model)}.get(name)
        self.audit.record(
            actor.name,
            "alert_rule.delete",
            subject(model, name),
            before=_audited(removed),
            after=None,
            detail={"back_to_default": default is not None},
        )
        return {
            "model": model,
            "name": name,
            "removed": {**_fields(removed.rule), "enabled": removed.enabled},
            "effective": self._view(model, name) if default is not None else None,
        }

    def _view(self, model: str, name: str) -> dict[str, Any]:
        (view,) = [v for v in self.effective(model) if v["name"] == name]
        return view
