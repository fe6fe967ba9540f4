"""The turnscale TURN relay (RFC 8489 STUN, RFC 8656 TURN), in layers.

* :mod:`.proto`: the wire formats, sans-I/O (STUN, TURN, ChannelData, Data indications, TCP
  framing).
* :mod:`.core`: the logic, pure (auth, credentials, peer policy, ports, allocations, the
  request handler, stats).
* :mod:`.reporting`: reporting to the scalers (flags, the pusher).
* :mod:`.config`: the relay's frozen configuration and its flags.
* :mod:`.net`: the asyncio edges (listeners, relayed sockets, health, the server and its
  drain).
* :mod:`.gateway`: the relay configured by Gateway API objects, and ``turnscale auth``.
* :mod:`.settings`: the relay's and the gateway's flags composed: what ``turnscale relay``
  parses.
* :mod:`.cli`: ``turnscale relay`` (and ``python -m relay``).
* :mod:`.embedded`: ``turnscale run``, a scaler, a relay and an echo peer on loopback.
* :mod:`.tools`: ``turnscale load``.
"""
