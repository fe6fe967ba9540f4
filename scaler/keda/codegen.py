"""Regenerate the committed gRPC stubs: ``python -m scaler.keda.codegen [--out DIR]``.

``make proto`` runs this; a test runs it into a temporary directory and compares
the result byte for byte with the committed files. grpc_tools (grpcio-tools, a
test dependency) is imported only here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "externalscaler.proto"
OUT = HERE / "proto"
STEM = PROTO.stem
# What protoc writes, in the order it writes them.
GENERATED = (f"{STEM}_pb2.py", f"{STEM}_pb2.pyi", f"{STEM}_pb2_grpc.py")

# protoc's gRPC plugin imports the messages as a top-level module; the stubs
# live in a package, so the import is made relative to it.
_ABSOLUTE_IMPORT = f"import {STEM}_pb2 as {STEM}__pb2\n"
_RELATIVE_IMPORT = f"from . import {STEM}_pb2 as {STEM}__pb2\n"


def generate(out: Path = OUT) -> list[Path]:
    """Write the stubs for :data:`PROTO` into ``out``; return the files written."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO.parent}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit status {status})")
    service = out / f"{STEM}_pb2_grpc.py"
    text = service.read_text(encoding="utf-8")
    if _ABSOLUTE_IMPORT not in text:
        raise RuntimeError(f"{service.name}: protoc no longer writes {_ABSOLUTE_IMPORT.strip()!r}")
    service.write_text(text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT, 1), encoding="utf-8")
    return [out / name for name in GENERATED]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scaler.keda.codegen", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help="directory to write the stubs to")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
