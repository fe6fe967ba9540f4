"""KEDA external scaler (gRPC ``externalscaler.ExternalScaler``) and gRPC health.

Importing this package loads nothing heavy: the gRPC server lives in
:mod:`scaler.keda.grpc_server`, the generated stubs in :mod:`scaler.keda.proto`.
"""
