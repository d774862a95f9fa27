"""The runner a compile worker uses: the real compile pipeline over the uploaded files."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from control_plane.errors import CompileError
from control_plane.services.compile_jobs import BuiltPackage, CompileTask, ProgressFn, Runner
from control_plane.settings import Settings

logger = logging.getLogger(__name__)

# how far along a job is when the pipeline says a line starting with this
_PHASES = (("loading", 0.05), ("building", 0.2), ("choosing", 0.7), ("wrote", 0.9))


def pipeline_runner(settings: Settings) -> Runner:
    """Compile with ``control_plane.compiler.pipeline`` into the settings' package directory."""

    def run(task: CompileTask, progress: ProgressFn) -> list[BuiltPackage]:
        from control_plane.compiler.pipeline import CompileRequest, compile_model
        from control_plane.core.hardware import select_profiles

        profiles = select_profiles(settings.profile_dirs(), list(task.job.profiles))
        state = {"fraction": 0.0}

        def on_line(line: str) -> None:
            for prefix, at in _PHASES:
                if line.startswith(prefix):
                    state["fraction"] = max(state["fraction"], at)
            if line.startswith("building"):  # each candidate moves the bar a little
                state["fraction"] = min(0.65, state["fraction"] + 0.05)
            progress(state["fraction"], line)

        with tempfile.TemporaryDirectory(prefix="fleetcast-compile-") as work:
            source = Path(work) / f"model.{task.source_format}"
            source.symlink_to(task.source.resolve())  # a relative data dir is relative to here
            data = {role: _named(Path(work), role, path) for role, path in task.data.items()}
            request = CompileRequest(
                model=source,
                calibration=data["calibration"],
                validation=data["validation"],
                reference=data.get("reference"),
                labels=data.get("labels"),
                profiles=profiles,
                out_dir=settings.package_dir,
                signing_key=settings.key_dir / "fleetcast.key",
                model_name=task.job.model,
                model_version=task.job.version,
                release=task.release,
                created_by=task.job.requested_by,
            )
            outcomes = compile_model(request, on_line)
        built = []
        for outcome in outcomes:
            if outcome.manifest is None or outcome.path is None or outcome.package_sha256 is None:
                raise CompileError(f"profile {outcome.profile}: the pipeline wrote no package")
            built.append(
                BuiltPackage(
                    profile_id=outcome.profile,
                    path=outcome.path,
                    sha256=outcome.package_sha256,
                    size_bytes=outcome.package_bytes or outcome.path.stat().st_size,
                    package_id=outcome.manifest.package_id,
                    release=outcome.manifest.release,
                    manifest=outcome.manifest.model_dump(mode="json"),
                    summary=outcome.summary(),
                )
            )
        return built

    return run


def _named(work: Path, role: str, blob: Path) -> Path:
    """The pipeline reads .npz files by suffix (and names them in lineage): link one."""
    link = work / f"{role}.npz"
    link.symlink_to(blob.resolve())
    return link
