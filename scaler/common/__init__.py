"""The shared kernel: what both binaries use; imports nothing else of turnscale.

- :mod:`scaler.common.flags`: flags that also read ``TURNSCALE_*`` variables; ``HostPort``.
- :mod:`scaler.common.logs`: structlog set up once per process.
- :mod:`scaler.common.runtime`: every command's ``main``, the event loop, stop signals.
- :mod:`scaler.common.backoff`: exponential backoff with jitter.
- :mod:`scaler.common.names`: Kubernetes object names.
- :mod:`scaler.common.sockets`: binding listening sockets.
- :mod:`scaler.common.kube`: Kubernetes access, client and the list-then-watch reflector.
"""
