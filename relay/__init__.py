"""The turnscale TURN relay (RFC 8489 STUN, RFC 8656 TURN), in layers, lowest first.

- :mod:`relay.proto`: the wire formats, sans-I/O and stdlib only.
- :mod:`relay.core`: the logic, pure, clocks passed in.
- :mod:`relay.reporting`: reporting to the scalers: its flags, the pusher.
- :mod:`relay.config`: the relay's frozen configuration and its flags.
- :mod:`relay.net`: the asyncio edges: listeners, relayed sockets, health, the server.
- :mod:`relay.gateway`: the relay configured by Gateway API objects; ``turnscale auth``.
- :mod:`relay.settings`: the relay's and the gateway's flags composed (``turnscale relay``).
- :mod:`relay.cli`: ``turnscale relay`` and ``python -m relay``.
- :mod:`relay.embedded`: ``turnscale run``: a scaler, a relay and an echo peer on loopback.
- :mod:`relay.tools`: tools run against a relay fleet (``turnscale load``).
"""
