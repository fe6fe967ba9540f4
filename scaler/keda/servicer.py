"""KEDA's ``externalscaler.ExternalScaler`` over the scaler's in-memory fleet state.

Every answer is computed from memory on the event loop, without waiting on I/O:
KEDA sets no deadline and holds a lock while it waits. ``StreamIsActive`` is the
push path (``external-push`` triggers): the current state when the stream opens,
then one message per change of activity, woken by :class:`scaler.changes.ChangeFeed`
on the same loop that applies reports.

A trigger with a bandwidth target gets two metrics: ``GetMetricSpec`` returns the
allocations spec and a ``stunner-bandwidth`` one (target: bytes/s per replica), and
``GetMetrics`` answers each name with its one value (allocations; relayed bytes/s). The
HPA divides each value by its target and takes the larger proposal, as
:meth:`scaler.scaling.ScalingPolicy.decide` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final, NoReturn

import grpc

from scaler.common import logs
from scaler.keda.metadata import MetadataError, Trigger, parse_trigger
from scaler.keda.policies import PolicyBook
from scaler.keda.proto import externalscaler_pb2 as pb
from scaler.keda.proto import externalscaler_pb2_grpc as pb_grpc
from scaler.scaling import BANDWIDTH, metric_value
from scaler.service import ScalerService

log = logs.get("scaler.keda")

SERVICE_NAME: Final = "externalscaler.ExternalScaler"
# Distinct bad-metadata messages logged (once each); the rest only count in metrics.
MAX_LOGGED_ERRORS: Final = 100


class ExternalScalerServicer(pb_grpc.ExternalScalerServicer):
    """KEDA's calls, answered from memory.

    A trigger's bounds (``minReplicas``, ``maxReplicas``, ``targetPerReplica``) go into
    ``policies`` (what ``/metrics`` and the deletion-cost planner follow) only when
    ``trusted_callers``: the listener requires mutual TLS, so every caller presented a
    certificate of the client CA. Otherwise any caller that reaches the port could rewrite
    the exported desired replicas, and the flags decide them. Answers to the call itself
    always use its metadata (KEDA's HPA does its own arithmetic from them).
    """

    def __init__(
        self, service: ScalerService, policies: PolicyBook, *, trusted_callers: bool = False
    ) -> None:
        self.service = service
        self.policies = policies
        self.trusted_callers = trusted_callers
        self.open_streams = 0
        self._closing = False
        self._logged: set[str] = set()

    # ---- RPCs -----------------------------------------------------------------

    async def IsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.IsActiveResponse:
        trigger = await self._trigger(request, context)
        return pb.IsActiveResponse(result=trigger.is_active(self._allocations(trigger)))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IsActiveResponse]:
        trigger = await self._trigger(request, context)
        changes = self.service.changes
        self.open_streams += 1
        try:
            sent: bool | None = None
            while not self._closing:
                active = trigger.is_active(self._allocations(trigger))
                if active != sent:
                    yield pb.IsActiveResponse(result=active)
                    sent = active
                    continue  # the yield awaited: look at the state again before waiting
                # No await between reading the state and waiting: no change slips past.
                await changes.wait()
                self._record(trigger)
        finally:
            self.open_streams -= 1

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        trigger = await self._trigger(request, context)
        policy = trigger.policy
        specs = []
        for metric, name in trigger.metrics.items():
            target = policy.target_per_replica
            if metric == BANDWIDTH:
                assert policy.target_bandwidth_per_replica is not None  # trigger.metrics says so
                target = policy.target_bandwidth_per_replica
            specs.append(
                pb.MetricSpec(metricName=name, targetSize=target, targetSizeFloat=float(target))
            )
        return pb.GetMetricSpecResponse(metricSpecs=specs)

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        trigger = await self._trigger(request.scaledObjectRef, context)
        metric = trigger.metric_named(request.metricName)
        if metric is None:
            names = " or ".join(repr(name) for name in trigger.metrics.values())
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"metricName {request.metricName!r} is not this trigger's metric "
                f"{names} (GetMetricSpec names it)",
            )
            raise AssertionError("context.abort() returned")  # pragma: no cover
        answer = self.service.scale(trigger.gateway, trigger.namespace, trigger.policy)
        # Whole numbers in both fields: the HPA reads either, and they must agree.
        number = metric_value(answer.bandwidth) if metric == BANDWIDTH else answer.allocations
        value = pb.MetricValue(
            metricName=trigger.metrics[metric],
            metricValue=number,
            metricValueFloat=float(number),
        )
        return pb.GetMetricsResponse(metricValues=[value])

    async def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> None:
        # KEDA then keeps asking GetMetricSpec, whose answer only changes with the trigger.
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "turnscale pushes no metric specs; use GetMetricSpec"
        )

    # ---- lifecycle ------------------------------------------------------------

    def close_streams(self) -> None:
        """End every open StreamIsActive cleanly (OK), so KEDA reconnects; for shutdown."""
        self._closing = True
        self.service.changes.notify()

    # ---- helpers --------------------------------------------------------------

    def _allocations(self, trigger: Trigger) -> int:
        return self.service.scale(trigger.gateway, trigger.namespace, trigger.policy).allocations

    async def _trigger(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> Trigger:
        try:
            trigger = parse_trigger(request.scalerMetadata, self.service.policy)
        except MetadataError as error:
            await self._invalid(request, context, str(error))
        self._record(trigger)
        return trigger

    def _record(self, trigger: Trigger) -> None:
        if self.trusted_callers:
            self.policies.record(trigger)

    async def _invalid(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext, message: str
    ) -> NoReturn:
        if message not in self._logged and len(self._logged) < MAX_LOGGED_ERRORS:
            self._logged.add(message)
            log.warning(
                "bad KEDA trigger metadata",
                scaled_object=f"{request.namespace}/{request.name}",
                error=message,
            )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        raise AssertionError("context.abort() returned")  # pragma: no cover
