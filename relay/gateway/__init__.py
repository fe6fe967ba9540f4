"""The relay configured by Gateway API objects (Gateway, UDPRoute, GatewayConfig), STUNner's
shape.

- :mod:`relay.gateway.objects`: parses and checks one object.
- :mod:`relay.gateway.translate`: turns a set of them into what one relay runs with.
- :mod:`relay.gateway.files`: loads them from YAML files (``--config``), Secrets from mounts.
- :mod:`relay.gateway.certificates`: the TLS listeners' Secrets, checked, as files the relay
  serves and rotates.
- :mod:`relay.gateway.options`: the ``--config``/``--kubernetes`` flags and what they replace.
- :mod:`relay.gateway.peers`: keeps the peer allow-list current (routed Services looked up).
- :mod:`relay.gateway.run`: serves a relay from files, or live from Kubernetes.
- :mod:`relay.gateway.kube`: live mode's watches of every object the Gateway depends on.
- :mod:`relay.gateway.live`: live mode: the relay follows its objects as they change.
- :mod:`relay.gateway.status`: the Gateway API status live mode writes back.
- :mod:`relay.gateway.ice`: ICE server configurations for browsers (``GET /ice``), pure.
- :mod:`relay.gateway.ice_server`: ``turnscale auth``, the ICE credential endpoint.
"""
