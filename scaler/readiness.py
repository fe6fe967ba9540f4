"""Readiness (``/readyz``): the scaler's named checks, declared when the scaler is built.

Each part that can keep the scaler from serving has a :class:`Check`: the HTTP listener
(``http``) and the gRPC listener (``grpc``). A check that is ``advisory`` is shown in
``/readyz`` but never makes the scaler unready: the Kubernetes API (``kubernetes``), whose
trouble would otherwise take every scaler replica out of its Services at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Check:
    """One named check; its owner sets ``ok``."""

    name: str
    advisory: bool = False
    ok: bool = False


class Readiness:
    """Every check of one scaler, in the order ``/readyz`` lists them."""

    def __init__(self, *checks: Check) -> None:
        self._checks = {check.name: check for check in checks}
        if len(self._checks) != len(checks):
            raise ValueError("readiness checks need distinct names")

    def __getitem__(self, name: str) -> Check:
        return self._checks[name]

    def checks(self) -> dict[str, bool]:
        """``{name: ok}`` of every check, advisory ones included."""
        return {name: check.ok for name, check in self._checks.items()}

    @property
    def ready(self) -> bool:
        """Whether every check that is not advisory is ok."""
        return all(check.ok for check in self._checks.values() if not check.advisory)

    def fail_all(self) -> None:
        """Every check not ok: the scaler is stopping."""
        for check in self._checks.values():
            check.ok = False
