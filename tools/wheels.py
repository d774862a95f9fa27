"""Build the wheel, check the device extras resolve to wheels on the targets, make wheelhouses.

    python -m tools.wheels build [--out DIR]
    python -m tools.wheels check [--extra agent ...] [--arch aarch64 ...] [--python 3.11 ...]
    python -m tools.wheels wheelhouse --arch aarch64 --python 3.11 --extra agent --dest DIR
    python -m tools.wheels sizes [--extra agent-onnx ...]

The wheel is built from a clean copy of the work tree (the files git tracks or
would track), so nothing ignored or left over leaks into it. ``check`` runs
pip's resolver exactly as ``pip download --only-binary=:all: --platform ...
--python-version ...`` does, reading only the wheels' metadata; ``wheelhouse``
downloads the wheels themselves.

Targets: a manylinux tag names the oldest glibc a wheel needs. The devices in
hardware-profiles/ run Raspberry Pi OS 12 (glibc 2.36) and JetPack 6 (Ubuntu
22.04, glibc 2.35), so a device accepts every manylinux tag up to 2.35;
``manylinux2014`` (glibc 2.17) alone is too old a floor for onnxruntime and
LiteRT, whose aarch64 wheels need glibc 2.27/2.28 (docs/install.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_EXTRAS = ("agent", "agent-onnx", "agent-litert")
ARCHES = ("aarch64", "x86_64")
PYTHONS = ("3.11", "3.12")
GLIBC = (2, 35)


def clean_env() -> dict[str, str]:
    """This environment without what would let a child Python see the source tree."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def platforms(arch: str, glibc: tuple[int, int] = GLIBC) -> list[str]:
    """Every manylinux tag a host with this glibc accepts, newest first (pip does not expand)."""
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_{arch}" for minor in range(newest, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def clean_copy(dest: Path, source: Path = ROOT) -> Path:
    """Copy the files git tracks or would track (nothing ignored) of ``source`` into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    return dest


def build_wheel(out: Path, source: Path | str = ROOT) -> Path:
    """Build the fleetcast wheel into ``out``: from a clean copy of a work tree, or an sdist."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("fleetcast-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="fleetcast-src-") as tmp:
        target = str(source) if str(source).endswith(".tar.gz") else "."
        if target == ".":
            clean_copy(Path(tmp), Path(source))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), target],
            cwd=tmp,
            check=True,
            env=clean_env(),
        )
    (wheel,) = out.glob("fleetcast-*.whl")
    return wheel


def build_sdist(out: Path, source: Path = ROOT) -> Path:
    """Build the sdist from a clean copy of ``source``'s work tree (setuptools' PEP 517 hook)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleetcast-src-") as tmp:
        clean_copy(Path(tmp), source)
        code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
        name = subprocess.run(
            [sys.executable, "-c", code, str(out.resolve())],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
            env=clean_env(),
        ).stdout.split()[-1]
    return out / name


@dataclass(frozen=True)
class Resolution:
    extra: str
    arch: str
    python: str
    ok: bool
    wheels: tuple[str, ...]  # file names pip picked, one per distribution
    error: str = ""


def _pip_target(wheel: Path, extra: str, arch: str, python: str) -> list[str]:
    flags = [f"--platform={p}" for p in platforms(arch)]
    return [
        "--only-binary=:all:",
        *flags,
        f"--python-version={python}",
        f"fleetcast{f'[{extra}]' if extra else ''} @ {wheel.resolve().as_uri()}",
    ]


def resolve(wheel: Path, extra: str, arch: str, python: str) -> Resolution:
    """Resolve ``fleetcast[extra]`` for a target without installing: which wheels pip picks."""
    with tempfile.TemporaryDirectory(prefix="fleetcast-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                f"--target={tmp}/target",
                f"--report={report}",
                *_pip_target(wheel, extra, arch, python),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        if run.returncode != 0:
            errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR")]
            return Resolution(extra, arch, python, False, (), "; ".join(errors) or run.stderr)
        items = json.loads(report.read_text())["install"]
    names = tuple(sorted(i["download_info"]["url"].rsplit("/", 1)[-1] for i in items))
    return Resolution(extra, arch, python, True, names)


def wheelhouse(wheel: Path, extra: str, arch: str, python: str, dest: Path) -> list[Path]:
    """Download fleetcast[extra] and every dependency as wheels for a target into ``dest``."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            f"--dest={dest}",
            *_pip_target(wheel, extra, arch, python),
        ],
        check=True,
        env=clean_env(),
    )
    return sorted(dest.glob("*.whl"))


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def installed_size(wheel: Path, extra: str, work: Path) -> tuple[int, list[str]]:
    """Bytes that ``fleetcast[extra]`` adds to a fresh venv on this host, and its distributions.

    Measured as site-packages after the install minus site-packages of the empty
    venv (pip itself), installing offline from a wheelhouse made for this host.
    """
    import platform
    import venv

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    label = extra or "base"
    house = work / f"house-{label}"
    wheelhouse(wheel, extra, platform.machine(), python, house)
    env = work / f"venv-{label}"
    venv.create(env, with_pip=True)
    (site,) = (env / "lib").glob("python*/site-packages")
    empty = _tree_bytes(site)
    subprocess.run(
        [
            str(env / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            f"--find-links={house}",
            f"fleetcast[{extra}]" if extra else "fleetcast",
        ],
        check=True,
        cwd=work,
        env=clean_env(),
    )
    dists = sorted(p.name.split("-")[0] for p in site.glob("*.dist-info"))
    return _tree_bytes(site) - empty, [d for d in dists if d not in ("pip", "setuptools")]


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.wheels")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the wheel from a clean copy of the work tree")
    build.add_argument("--out", type=Path, default=ROOT / "dist")
    check = sub.add_parser("check", help="resolve the device extras for every target")
    check.add_argument("--extra", action="append", choices=DEVICE_EXTRAS)
    check.add_argument("--arch", action="append", choices=ARCHES)
    check.add_argument("--python", action="append")
    house = sub.add_parser("wheelhouse", help="download the wheels for an offline install")
    house.add_argument("--extra", default="agent")
    house.add_argument("--arch", default="aarch64", choices=ARCHES)
    house.add_argument("--python", default="3.11")
    house.add_argument("--dest", type=Path, default=ROOT / "dist" / "wheelhouse")
    sizes = sub.add_parser("sizes", help="installed size per extra on this host")
    sizes.add_argument("--extra", action="append", help="e.g. agent-onnx or agent,server")
    args = parser.parse_args(argv)

    if args.command == "build":
        print(build_wheel(args.out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        if args.command == "wheelhouse":
            dest = args.dest / f"{args.arch}-py{args.python}"
            wheels = wheelhouse(wheel, args.extra, args.arch, args.python, dest)
            print(f"{len(wheels)} wheels for fleetcast[{args.extra}] on {args.arch} "
                  f"Python {args.python} in {dest}")  # fmt: skip
            print(f"install offline: pip install --no-index --find-links {dest} "
                  f"'fleetcast[{args.extra}]'")  # fmt: skip
            return 0
        if args.command == "sizes":
            for extra in args.extra or ["", *DEVICE_EXTRAS, "server", "agent,server"]:
                size, dists = installed_size(wheel, extra, Path(tmp))
                print(f"fleetcast[{extra}]: {size / 2**20:.0f} MiB, {len(dists)} distributions: "
                      f"{' '.join(dists)}")  # fmt: skip
            return 0
        failed = 0
        for extra in args.extra or DEVICE_EXTRAS:
            for arch in args.arch or ARCHES:
                for python in args.python or PYTHONS:
                    res = resolve(wheel, extra, arch, python)
                    failed += not res.ok
                    status = f"ok, {len(res.wheels)} wheels" if res.ok else f"FAIL: {res.error}"
                    print(f"fleetcast[{extra}] {arch} py{python}: {status}")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main())
