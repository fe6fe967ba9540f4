"""The fleet sweeper: expires relays silent for ``--expire-after``, about once a second.

Owned by :class:`scaler.server.ScalerServer`, which starts it with its listeners and
stops it last. With ``--kubernetes`` it spares the relays whose pod exists
(:meth:`scaler.kube.integration.KubeIntegration.spared`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container
from typing import Final

from scaler.common.runtime import cancel_and_wait
from scaler.fleet import RelayKey
from scaler.service import ScalerService

SWEEP_INTERVAL: Final = 1.0

Spared = Callable[[], Container[RelayKey]]


def nothing_spared() -> Container[RelayKey]:
    """Without Kubernetes: ``--expire-after`` applies to every relay."""
    return ()


class Sweeper:
    def __init__(
        self,
        service: ScalerService,
        spared: Spared = nothing_spared,
        *,
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.service = service
        self.spared = spared
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def sweep(self) -> None:
        """One sweep now: expire silent relays but the spared ones."""
        self.service.sweep(self.spared())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sweep_forever(), name="fleet-sweeper")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sweep()
