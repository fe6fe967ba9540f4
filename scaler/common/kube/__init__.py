"""Kubernetes access shared by the scaler and the relay.

- :mod:`scaler.common.kube.access`: where the API credentials come from (pure; flags).
- :mod:`scaler.common.kube.client`: the kubernetes-asyncio client built from them.
- :mod:`scaler.common.kube.reflector`: list, then watch, any kind, with backoff.
"""
