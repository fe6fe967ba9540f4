"""The relay's asyncio edges: sockets, the packet path, health, the server that runs them.

* :mod:`.buffers`: the process's two receive buffers (one per direction) and the read batch.
* :mod:`.sockets`: socket options (buffer sizes, DONT-FRAGMENT) over the shared binding.
* :mod:`.bugs`: the rate-limited log line for a bug in request handling.
* :mod:`.udp`: a TURN listener on UDP; ChannelData from clients to peers.
* :mod:`.tcp`: one TURN client over TCP.
* :mod:`.relayed`: relayed sockets and their ports; peer data to clients.
* :mod:`.health`: the ``/live``, ``/ready`` and ``/status`` endpoints.
* :mod:`.server`: :class:`.server.RelayServer` wiring it all, and the drain on SIGTERM.
"""
