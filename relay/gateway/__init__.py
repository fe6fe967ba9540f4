"""The relay configured by Gateway API objects (Gateway, UDPRoute, GatewayConfig), STUNner's
shape.

* :mod:`.objects`: parses and checks one object.
* :mod:`.translate`: turns a set of them into what one relay runs with.
* :mod:`.files`: loads them from YAML files (``--config``), Secrets from mounted directories.
* :mod:`.options`: the ``--config`` / ``--kubernetes`` flags, and what they replace.
* :mod:`.peers`: keeps the peer allow-list current (routed Services looked up again).
* :mod:`.run`: serves a relay from files, or live from Kubernetes.
* :mod:`.kube`: live mode's watches of every object the Gateway depends on.
* :mod:`.live`: live mode: the relay follows its objects as they change.
* :mod:`.status`: the Gateway API status live mode writes back.
* :mod:`.ice`: ICE server configurations for browsers (``GET /ice``), pure.
* :mod:`.ice_server`: ``turnscale auth``, the ICE credential endpoint.
"""
