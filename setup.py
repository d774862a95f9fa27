"""Packages and package data that pyproject.toml cannot express.

The built-in hardware profiles live in the top-level ``hardware-profiles/``
directory (one TOML file per target) and ship inside the wheel as the data
directory ``control_plane/hardware_profiles/``, where
``control_plane.core.hardware.builtin_profiles_dir`` finds them. pyproject.toml's
``packages.find`` cannot add a package that lives outside its parent's directory,
so the packages are listed here. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["control_plane*", "edge_agent*", "functions*"]),
        "control_plane.hardware_profiles",
    ],
    package_dir={"control_plane.hardware_profiles": "hardware-profiles"},
    package_data={
        "*": ["py.typed"],
        "control_plane.hardware_profiles": ["*.toml"],
        "control_plane.store.sqlite.migrations": ["*.sql"],
        "control_plane.store.postgres.migrations": ["*.sql"],
    },
)
