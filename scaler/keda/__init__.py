"""KEDA external scaler (gRPC ``externalscaler.ExternalScaler``) and gRPC health.

Importing this package loads nothing heavy: the gRPC server lives in
:mod:`scaler.keda.grpc_server`, the generated stubs in :mod:`scaler.keda.proto`.

- :mod:`scaler.keda.grpc_server`: the gRPC listener, its accounting interceptor and TLS.
- :mod:`scaler.keda.servicer`: ``ExternalScaler`` answered from the in-memory fleet.
- :mod:`scaler.keda.metadata`: a trigger's metadata map, read into a :class:`Trigger`; pure.
- :mod:`scaler.keda.policies`: the per-gateway policies triggers asked for (PolicyBook).
- :mod:`scaler.keda.stats`: the gRPC calls' counters, a collector of the registry.
- :mod:`scaler.keda.codegen`: regenerates :mod:`scaler.keda.proto` (``make proto``).
- :mod:`scaler.keda.proto`: the stubs generated from ``externalscaler.proto``.
"""
