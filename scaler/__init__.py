"""The turnscale collector: report ingest, fleet state, metrics and KEDA answers.

- :mod:`scaler.cli`: the ``turnscale`` dispatcher, one sub-command per binary.
- :mod:`scaler.server`: the composition root (:class:`ScalerServer`) and ``turnscale scaler``.
- :mod:`scaler.config`: the flags, parsed into one frozen :class:`ScalerConfig`.
- :mod:`scaler.wire`: the report wire contract (relay -> scaler), as msgspec types.
- :mod:`scaler.fleet`: every relay's state, instances, staleness and expiry; pure.
- :mod:`scaler.ingest`: one report's rules, from request parts to an answer; no aiohttp.
- :mod:`scaler.binding`: reports bound to the pods that send them (``--kubernetes``); pure.
- :mod:`scaler.exporter`: whether this replica exports the fleet on ``/metrics``.
- :mod:`scaler.service`: the fleet state and the operations every front end shares.
- :mod:`scaler.changes`: wakes push-style answers when the scaling inputs change.
- :mod:`scaler.scaling`: the scaling rule and the per-gateway policy protocol.
- :mod:`scaler.histogram`: the histogram both exported histograms count in.
- :mod:`scaler.families`: self-rendering metric families and the fast encoder.
- :mod:`scaler.exposition`: the fleet collector and the private registry.
- :mod:`scaler.readiness`: the named readiness checks behind ``/readyz``.
- :mod:`scaler.http`: the HTTP front end (reports, /metrics, /v1/scale, health).
- :mod:`scaler.sweeper`: expires silent relays about once a second.
- :mod:`scaler.keda`: the gRPC front end, KEDA's external scaler and gRPC health.
- :mod:`scaler.kube`: the Kubernetes integration (``--kubernetes``).
- :mod:`scaler.common`: the kernel the relay shares (flags, logs, runtime, names, kube access).
"""
