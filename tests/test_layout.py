"""The package layout a plain ``pip install .`` ships: every directory is a real package."""

from __future__ import annotations

import ast
import sys
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


def test_the_wire_formats_use_the_standard_library_only() -> None:
    """relay/proto is sans-I/O and stdlib only (import-linter checks turnscale's own
    packages; this checks third-party ones)."""
    for path in sorted((ROOT / "relay" / "proto").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                allowed = top in sys.stdlib_module_names or name.startswith("relay.proto")
                assert allowed or top == "__future__", f"{path.name} imports {name}"
