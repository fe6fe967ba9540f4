"""The package layout a plain ``pip install .`` ships: every directory is a real package."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def test_every_source_directory_is_a_package_the_wheel_includes() -> None:
    shipped = set(find_packages(str(ROOT), include=["relay*", "scaler*", "dashboards*"]))
    for top in ("relay", "scaler", "dashboards"):
        for directory in [ROOT / top, *(ROOT / top).rglob("*")]:
            if not directory.is_dir() or directory.name == "__pycache__":
                continue
            if not any(directory.glob("*.py")):
                continue
            name = ".".join(directory.relative_to(ROOT).parts)
            assert (directory / "__init__.py").is_file(), f"{name} has no __init__.py"
            assert name in shipped, name
