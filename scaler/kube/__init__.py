"""The scaler's Kubernetes integration (``--kubernetes``).

- :mod:`scaler.kube.settings`: the flags' frozen settings; pure, no kubernetes-asyncio.
- :mod:`scaler.kube.selector`: label selector syntax, validated once at start-up.
- :mod:`scaler.kube.pods`: the relay pods as the API shows them; pure.
- :mod:`scaler.kube.cost`: which pods get which ``pod-deletion-cost`` on scale-in; pure.
- :mod:`scaler.kube.watch`: the relay pod watch (a :mod:`scaler.common.kube.reflector`).
- :mod:`scaler.kube.leader`: the exporter Lease, on kubernetes-asyncio's leader election.
- :mod:`scaler.kube.stats`: what the integration counts and exports on ``/metrics``.
- :mod:`scaler.kube.integration`: ties them to the fleet; a collector, an advisory check.
"""
