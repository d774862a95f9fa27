"""Explanations of captured predictions, their per-window aggregate and attribution drift.

- :meth:`ExplainService.explanation` answers ``GET /predictions/{id}/explanation``:
  the captured input row is explained with Kernel SHAP
  (``control_plane/monitoring/explain.py``) over **the package's own runtime**
  (the model file that scored it, quantization included), with the manifest's
  test-vector rows (real rows of the compile's validation data) as the
  background; the result is stored (``explanations``) and read back after.
- :meth:`ExplainService.aggregate` is the background job (a thread in
  ``fleetcast serve``, :class:`ExplainWorker`): per package and fixed time window
  (``window_s``, one hour by default) of capture time, at most
  ``budget.max_rows`` captures (picked by :func:`~control_plane.core.attribution.budget_pick`)
  are explained, their mean |SHAP| per feature stored (``attribution_windows``)
  with the attribution-drift verdict against the package's reference
  attributions (its test-vector rows explained the same way,
  ``attribution_references``). A tick handles at most ``max_windows`` windows, so
  its cost is bounded by ``max_windows * max_rows * nsamples * background`` model
  rows; a window is recomputed only when more captures arrived for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.core.attribution import (
    AttributionThresholds,
    additivity_error,
    budget_pick,
    judge,
    window_start,
)
from control_plane.errors import ControlPlaneError, InvalidInput, NotFound
from control_plane.monitoring.explain import ExplainBudget, ShapExplainer
from control_plane.services import Clock
from control_plane.services.monitoring import finite_dict
from control_plane.store.records import AttributionWindow, StoredCapture
from control_plane.store.repos import Repositories
from edge_agent.core.bins import MAX_ELEMENT_FEATURES
from edge_agent.core.manifest import Manifest

logger = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]
Loader = Callable[[str, Manifest], PredictFn]  # (package path, manifest) -> (rows, features)
ADDITIVITY_TOLERANCE = 1e-4  # relative to max(1, |prediction|): float32 runtimes


@dataclass(frozen=True)
class ExplainOptions:
    budget: ExplainBudget = field(default_factory=ExplainBudget)
    window_s: float = 3600.0  # aggregation window (capture time)
    lookback_s: float = 86400.0  # windows older than this are not (re)computed
    max_windows: int = 8  # windows aggregated per background tick
    thresholds: AttributionThresholds = field(default_factory=AttributionThresholds)


def package_loader(public_key: Path | None) -> Loader:
    """A loader opening the catalog's package file (signature checked again) with its runtime."""

    def load(path: str, manifest: Manifest) -> PredictFn:
        from edge_agent.errors import EdgeError
        from edge_agent.package import load_public_key, open_package
        from edge_agent.runtime import load_model_bytes

        if public_key is None or not public_key.exists():
            raise InvalidInput(
                "cannot explain: the control plane has no package signing public key"
                " (<data dir>/keys/fleetcast.pub or FLEETCAST_PUBLIC_KEY)"
            )
        try:
            package = open_package(Path(path), load_public_key(public_key))
            loaded = load_model_bytes(
                manifest.runtime, package.model_bytes, manifest.signature, threads=1
            )
        except (EdgeError, OSError) as exc:
            raise InvalidInput(
                f"cannot load package {manifest.package_id} to explain: {exc}"
            ) from exc
        return _runtime_predict(loaded, manifest)

    return load


def _runtime_predict(loaded: Any, manifest: Manifest) -> PredictFn:
    spec, out = manifest.signature.inputs[0], manifest.signature.outputs[0]
    row_shape = tuple(spec.shape[1:])
    dtype = np.float16 if spec.dtype == "float16" else np.float32

    def predict(rows: np.ndarray) -> np.ndarray:
        batch = np.asarray(rows).reshape(len(rows), *row_shape).astype(dtype)
        scores = loaded.predict({spec.name: batch})[out.name]
        return np.asarray(scores, dtype=np.float64).reshape(len(rows), -1)

    return predict


def explainable(manifest: Manifest) -> tuple[list[str], int]:
    """(feature names, features) of the manifest's input, or InvalidInput saying why not."""
    inputs = manifest.signature.inputs
    if len(inputs) != 1:
        raise InvalidInput(
            f"{manifest.package_id}: explanations need a model with one input tensor"
            f" (it has {len(inputs)})"
        )
    spec = inputs[0]
    if spec.dtype not in ("float32", "float16"):
        raise InvalidInput(
            f"{manifest.package_id}: input {spec.name!r} is {spec.dtype}: explanations need"
            " float inputs (integer ids are watched through their derived drift features)"
        )
    if any(d < 1 for d in spec.shape[1:]):
        raise InvalidInput(f"{manifest.package_id}: input {spec.name!r} has a variable shape")
    size = int(np.prod(spec.shape[1:])) if len(spec.shape) > 1 else 1
    if size > MAX_ELEMENT_FEATURES:
        raise InvalidInput(
            f"{manifest.package_id}: input {spec.name!r} has {size} elements; per-feature"
            f" explanations are made for at most {MAX_ELEMENT_FEATURES}"
        )
    names = list(spec.feature_names or ())
    if len(names) != size:
        stats = next((t for t in manifest.reference.inputs if t.tensor == spec.name), None)
        if stats is not None and stats.feature_axis == "element" and len(stats.features) == size:
            names = [f.name for f in stats.features]
        else:
            names = [f"{spec.name}[{i}]" for i in range(size)]
    return names, size


def _first_row(values: Any, size: int) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.size < size or array.size % size:
        return None
    row: np.ndarray = array.reshape(-1, size)[0]
    return row


def _output_value(values: Any, index: int) -> float | None:
    """The captured output's value at ``index`` (first row), None when not captured."""
    if not values:
        return None
    flat = np.asarray(values[0] if isinstance(values, list) else values, dtype=np.float64).ravel()
    return float(flat[index]) if index < flat.size else None


@dataclass
class _PackageExplainer:
    manifest: Manifest
    names: list[str]
    explainer: ShapExplainer
    background_rows: int
    classification: bool

    def explain(self, rows: np.ndarray) -> Any:
        output: Any = "predicted" if self.classification else 0
        return self.explainer.explain(rows, output=output)


@dataclass(frozen=True)
class AggregateResult:
    windows: int  # aggregated in this tick
    rows_explained: int
    skipped: tuple[str, ...]  # packages that cannot be explained, and why
    pending: int  # windows left for the next tick


class ExplainService:
    def __init__(
        self,
        repos: Repositories,
        manifest: Callable[[str], Manifest | None],
        loader: Loader,
        options: ExplainOptions | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.repos = repos
        self.manifest = manifest
        self.loader = loader
        self.options = options or ExplainOptions()
        self.clock = clock
        self._explainers: OrderedDict[str, _PackageExplainer] = OrderedDict()
        self._lock = threading.Lock()  # KernelExplainer and the RNG state are not shared safely

    # -- building

    def _explainer(self, sha256: str) -> _PackageExplainer:
        cached = self._explainers.get(sha256)
        if cached is not None:
            self._explainers.move_to_end(sha256)
            return cached
        manifest = self.manifest(sha256)
        if manifest is None:
            raise NotFound(f"package {sha256} (or its manifest) is not in the catalog")
        names, size = explainable(manifest)
        spec = manifest.signature.inputs[0]
        background = np.asarray(manifest.test_vectors.inputs.get(spec.name, []), np.float64)
        if background.size == 0 or background.size % size:
            raise InvalidInput(
                f"{manifest.package_id}: its manifest has no test-vector rows to serve as"
                " the explanation background"
            )
        background = background.reshape(-1, size)
        predict = self.loader(self.repos.packages.get(sha256).path, manifest)
        built = _PackageExplainer(
            manifest=manifest,
            names=names,
            explainer=ShapExplainer(predict, background, names, self.options.budget),
            background_rows=len(background),
            classification=manifest.task == "classification",
        )
        self._explainers[sha256] = built
        while len(self._explainers) > 8:
            self._explainers.popitem(last=False)
        return built

    def _reference(self, sha256: str, built: _PackageExplainer) -> tuple[int, dict[str, float]]:
        stored = self.repos.insights.reference(sha256)
        if stored is not None:
            return stored
        rows = np.asarray(
            built.manifest.test_vectors.inputs[built.manifest.signature.inputs[0].name],
            dtype=np.float64,
        ).reshape(built.background_rows, -1)
        attr = built.explain(rows)
        mean_abs = attr.mean_abs()
        self.repos.insights.put_reference(sha256, len(attr.values), mean_abs, self.clock())
        return len(attr.values), mean_abs

    # -- one prediction

    def explanation(self, prediction_id: str, device_id: str | None = None) -> dict[str, Any]:
        captures = [
            c
            for c in self.repos.insights.capture(prediction_id)
            if device_id is None or c.device_id == device_id
        ]
        if not captures:
            where = f" from device {device_id!r}" if device_id else ""
            raise NotFound(f"prediction {prediction_id!r}{where} was never captured")
        capture = captures[0]
        stored = self.repos.insights.explanation(capture.prediction_id, capture.device_id)
        if stored is not None:
            return {**stored, "cached": True}
        if capture.package_sha256 is None:
            raise InvalidInput(
                f"prediction {prediction_id!r}: its window names no catalog package,"
                " so there is no model to explain it with"
            )
        with self._lock:
            built = self._explainer(capture.package_sha256)
            name = built.manifest.signature.inputs[0].name
            row = _first_row(capture.inputs.get(name), len(built.names))
            if row is None:
                raise InvalidInput(
                    f"prediction {prediction_id!r} was captured without its input {name!r}"
                    " (trimmed by the device's capture limits, or an older agent)"
                )
            body = self._explain_rows(built, [capture], row[np.newaxis, :])[0][0]
        self.repos.insights.put_explanation(
            capture.prediction_id, capture.device_id, capture.package_sha256, body, self.clock()
        )
        return {**body, "cached": False}

    def _explain_rows(
        self, built: _PackageExplainer, captures: Sequence[StoredCapture], rows: np.ndarray
    ) -> tuple[list[dict[str, Any]], Any]:
        attr = built.explain(rows)
        errors = additivity_error(attr.values, attr.base_values, attr.predictions)
        manifest, budget = built.manifest, self.options.budget
        out_name = manifest.signature.outputs[0].name
        bodies = []
        for i, capture in enumerate(captures[: len(attr.values)]):
            order = np.argsort(-np.abs(attr.values[i]), kind="stable")
            tolerance = ADDITIVITY_TOLERANCE * max(1.0, abs(float(attr.predictions[i])))
            captured = _output_value(capture.outputs.get(out_name), int(attr.outputs[i]))
            bodies.append(
                finite_dict(
                    {
                        "prediction_id": capture.prediction_id,
                        "device_id": capture.device_id,
                        "model": manifest.model_name,
                        "version": manifest.model_version,
                        "package_id": manifest.package_id,
                        "package_sha256": capture.package_sha256,
                        "predicted_at": capture.at,
                        "output": out_name,
                        "output_index": int(attr.outputs[i]),
                        "explained": (
                            "the predicted class's score"
                            if built.classification
                            else "the first output value"
                        ),
                        "base_value": float(attr.base_values[i]),
                        "prediction": float(attr.predictions[i]),
                        "captured_output": captured,
                        "attributions": [
                            {
                                "feature": built.names[j],
                                "value": float(rows[i, j]),
                                "shap": float(attr.values[i, j]),
                            }
                            for j in order
                        ],
                        "additivity": {
                            "sum_plus_base": float(attr.values[i].sum() + attr.base_values[i]),
                            "error": float(errors[i]),
                            "tolerance": tolerance,
                            "holds": bool(errors[i] <= tolerance),
                        },
                        "method": {
                            "explainer": "kernel_shap",
                            "nsamples": budget.nsamples,
                            "background_rows": min(built.background_rows, budget.background),
                            "background": "the manifest's test-vector rows",
                            "runtime": manifest.runtime,
                            "recipe": manifest.recipe,
                        },
                    }
                )
            )
        return bodies, attr

    # -- the background aggregation

    def aggregate(self, now: float | None = None) -> AggregateResult:
        """Explain up to the budget per closed window that has new captures; store the mean
        |SHAP| and the attribution-drift verdict. Bounded: ``max_windows`` windows a tick,
        ``budget.max_rows`` rows a window; the store is asked for counts per window, then
        for the ids of a window to compute, then for the picked captures only."""
        now = self.clock() if now is None else now
        o = self.options
        last = window_start(now, o.window_s)  # closed windows only, newest first
        todo: list[tuple[str, float, int]] = []
        done: dict[str, dict[float, int]] = {}
        start = last - o.window_s
        while start >= last - o.lookback_s:
            for sha, count in sorted(
                self.repos.insights.capture_counts(start, start + o.window_s).items()
            ):
                if sha not in done:
                    done[sha] = {w.window_start: w.captures for w in self._stored_windows(sha)}
                if done[sha].get(start) != count:
                    todo.append((sha, start, count))
            start -= o.window_s
        skipped: dict[str, str] = {}
        windows = rows = handled = 0
        for sha, begin, count in todo:
            if windows >= o.max_windows:
                break
            handled += 1
            if sha in skipped:
                continue
            try:
                rows += self._aggregate_window(sha, begin, count, now)
                windows += 1
            except ControlPlaneError as exc:  # a model that cannot be explained per feature
                skipped[sha] = str(exc)  # costs one manifest check a tick, never a window slot
                logger.info("explanations: package %s skipped: %s", sha, exc)
        return AggregateResult(
            windows, rows, tuple(f"{k}: {v}" for k, v in skipped.items()),
            len(todo) - handled,
        )  # fmt: skip

    def _stored_windows(self, sha256: str) -> list[AttributionWindow]:
        manifest = self.manifest(sha256)
        if manifest is None:
            return []
        return [
            w
            for w in self.repos.insights.windows(
                model_name=manifest.model_name, model_version=manifest.model_version
            )
            if w.package_sha256 == sha256
        ]

    def _aggregate_window(self, sha256: str, start: float, count: int, now: float) -> int:
        ids = self.repos.insights.capture_ids(sha256, start, start + self.options.window_s)
        picked = set(budget_pick(ids, self.options.budget.max_rows))
        chosen_captures = [
            c
            for c in self.repos.monitoring.captures(sorted(picked))
            if c.package_sha256 == sha256 and start <= c.at < start + self.options.window_s
        ]
        with self._lock:
            built = self._explainer(sha256)
            ref_rows, reference = self._reference(sha256, built)
            name = built.manifest.signature.inputs[0].name
            usable = [
                (c, r)
                for c in sorted(chosen_captures, key=lambda c: (c.prediction_id, c.device_id))
                if (r := _first_row(c.inputs.get(name), len(built.names))) is not None
            ][: self.options.budget.max_rows]
            chosen = [c for c, _ in usable]
            mean_abs: dict[str, float] = {n: 0.0 for n in built.names}
            if usable:
                rows = np.array([r for _, r in usable], dtype=np.float64)
                bodies, attr = self._explain_rows(built, chosen, rows)
                for capture, body in zip(chosen, bodies, strict=True):
                    self.repos.insights.put_explanation(
                        capture.prediction_id, capture.device_id, sha256, body, now
                    )
                mean_abs = attr.mean_abs()
        verdict = judge(reference, ref_rows, mean_abs, len(chosen), self.options.thresholds)
        self.repos.insights.put_window(
            AttributionWindow(
                package_sha256=sha256,
                window_start=start,
                window_seconds=self.options.window_s,
                model_name=built.manifest.model_name,
                model_version=built.manifest.model_version,
                captures=count,
                rows_explained=len(chosen),
                mean_abs=mean_abs,
                drift=finite_dict(verdict.as_dict()),
                created_at=now,
            )
        )
        return len(chosen)

    # -- the view

    def attributions(
        self,
        model: str,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        """Stored windows' mean |SHAP| and attribution drift, per package, with the reference."""
        windows = self.repos.insights.windows(
            model_name=model, model_version=version, since=since, until=until
        )
        packages: dict[str, dict[str, Any]] = {}
        for w in windows:
            entry = packages.get(w.package_sha256)
            if entry is None:
                ref = self.repos.insights.reference(w.package_sha256)
                manifest = self.manifest(w.package_sha256)
                entry = packages[w.package_sha256] = {
                    "package_sha256": w.package_sha256,
                    "package_id": None if manifest is None else manifest.package_id,
                    "model_version": w.model_version,
                    "reference": None
                    if ref is None
                    else {"rows_explained": ref[0], "mean_abs_shap": ref[1]},
                    "windows": [],
                }
            entry["windows"].append(
                {
                    "window_start": w.window_start,
                    "window_seconds": w.window_seconds,
                    "captures": w.captures,
                    "rows_explained": w.rows_explained,
                    "mean_abs_shap": w.mean_abs,
                    "attribution_drift": w.drift,
                    "computed_at": w.created_at,
                }
            )
        for entry in packages.values():
            latest = entry["windows"][-1]["attribution_drift"] if entry["windows"] else None
            entry["status"] = None if latest is None else latest.get("status")
        return finite_dict(
            {
                "model": model,
                "version": version,
                "since": since,
                "until": until,
                "budget": asdict(self.options.budget),
                "window_seconds": self.options.window_s,
                "thresholds": asdict(self.options.thresholds),
                "packages": list(packages.values()),
            }
        )


class ExplainWorker:
    """The background job: :meth:`ExplainService.aggregate` every ``interval`` seconds."""

    def __init__(self, service: ExplainService, interval: float = 60.0) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="explanations", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                result = self.service.aggregate()
                if result.windows:
                    logger.info(
                        "explanations: %d windows, %d rows explained, %d pending",
                        result.windows, result.rows_explained, result.pending,
                    )  # fmt: skip
            except Exception:  # the job must outlive one bad tick (the store busy, a model)
                logger.exception("explanations: aggregation tick failed")
