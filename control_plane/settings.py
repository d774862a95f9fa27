"""Settings of the control-plane process, read once from FLEETCAST_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".fleetcast")
    profiles_dir: Path = Path("hardware-profiles")

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def package_dir(self) -> Path:
        return self.data_dir / "packages"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        defaults = cls()
        return cls(
            data_dir=Path(environ.get("FLEETCAST_DATA_DIR", defaults.data_dir)),
            profiles_dir=Path(environ.get("FLEETCAST_PROFILES_DIR", defaults.profiles_dir)),
        )
