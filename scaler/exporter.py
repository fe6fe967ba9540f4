"""Whether this scaler replica exports the fleet on ``/metrics``.

Every replica keeps the whole fleet and answers KEDA, but only one may export the
per-relay families and ``stunner_scaler_*``: otherwise ``sum(stunner_allocations_active)``
over all scrape targets counts each relay once per replica. With ``--kubernetes`` the
replicas elect that one on a Lease (:mod:`scaler.kube.leader`); without it a scaler is its
own exporter.
"""

from __future__ import annotations

from typing import Final, Protocol


class Exporter(Protocol):
    """``leading`` is read at every scrape and before every deletion-cost round."""

    @property
    def leading(self) -> bool: ...


class _Alone:
    """A scaler without a Lease: always the exporter."""

    @property
    def leading(self) -> bool:
        return True


ALONE: Final[Exporter] = _Alone()
