"""The relay's asyncio edges: sockets, the packet path, health, the server that runs them.

- :mod:`relay.net.buffers`: the two receive buffers (one per direction) and the read batch.
- :mod:`relay.net.sockets`: socket options (buffer sizes, DONT-FRAGMENT) over the binding.
- :mod:`relay.net.bugs`: the rate-limited log line for a bug in request handling.
- :mod:`relay.net.udp`: a TURN listener on UDP; ChannelData from clients to peers.
- :mod:`relay.net.tcp`: one TURN client over TCP.
- :mod:`relay.net.tls`: a TURN listener over TLS (RFC 8656 §3.1) and its certificate reloads.
- :mod:`relay.net.dtls`: a TURN listener over DTLS 1.2 (RFC 6347, RFC 7350): one session per
  client 5-tuple; :mod:`relay.net.dtls_cookies` its stateless cookies,
  :mod:`relay.net.dtls_records` the record framing it looks at.
- :mod:`relay.net.relayed`: relayed sockets and their ports; peer data to clients.
- :mod:`relay.net.health`: the ``/live``, ``/ready`` and ``/status`` endpoints.
- :mod:`relay.net.server`: the RelayServer wiring it all, and its drain on SIGTERM.
"""
