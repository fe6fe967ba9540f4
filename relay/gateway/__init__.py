"""The relay configured by Gateway API objects (Gateway, UDPRoute, GatewayConfig), STUNner's
shape: :mod:`.objects` parses and checks one object, :mod:`.translate` turns a set of them
into relay settings, :mod:`.files` loads them from YAML files (``--config``), :mod:`.peers`
keeps the peer allow-list current, :mod:`.run` serves a relay from them."""
