"""Settings of the control-plane process, read once from FLEETCAST_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STORE_FILE = "store.db"  # the old store's file was fleetcast.db (docs/store.md)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".fleetcast")
    # a directory of the user's own profiles, overlaid on the built-in ones by id
    profiles_dir: Path | None = None
    store: str | None = None  # postgresql://…, sqlite:///path, a path, :memory:; None: the data dir
    public_key: Path | None = None  # None: <data dir>/keys/fleetcast.pub, if it is there
    # the AES key captured samples are sealed with; None: FLEETCAST_SAMPLES_KEY (hex) if set,
    # else <data dir>/keys/samples.key (made 0600 by `fleetcast admin init` or on first use)
    samples_key_file: Path | None = None

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def package_dir(self) -> Path:
        return self.data_dir / "packages"

    def profile_dirs(self, override: Path | None = None) -> list[Path]:
        """Where profiles load from: the built-ins, then the user's directory on top."""
        from control_plane.core.hardware import builtin_profiles_dir

        user = override or self.profiles_dir
        return [builtin_profiles_dir(), *([user] if user else [])]

    @property
    def catalog_dir(self) -> Path:
        """Where the control plane keeps the package files it registered."""
        return self.data_dir / "catalog"

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.data_dir / STORE_FILE}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        defaults = cls()
        key = environ.get("FLEETCAST_PUBLIC_KEY")
        return cls(
            data_dir=Path(environ.get("FLEETCAST_DATA_DIR", defaults.data_dir)),
            profiles_dir=Path(environ["FLEETCAST_PROFILES_DIR"])
            if environ.get("FLEETCAST_PROFILES_DIR")
            else defaults.profiles_dir,
            store=environ.get("FLEETCAST_STORE") or None,
            public_key=Path(key) if key else None,
            samples_key_file=Path(environ["FLEETCAST_SAMPLES_KEY_FILE"])
            if environ.get("FLEETCAST_SAMPLES_KEY_FILE")
            else None,
        )
