"""``python -m tests.bench [NAME...]``: run the benchmarks (all by default)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "scaler_bench",
    "quota_bench",
    "keda_bench",
    "relay_bench",
    "tls_bench",
    "dtls_bench",
    "flow_bench",
]


def main() -> None:
    names = sys.argv[1:] or BENCHMARKS
    for name in names:
        module = importlib.import_module(f"tests.bench.{name}")
        module.main()


main()
