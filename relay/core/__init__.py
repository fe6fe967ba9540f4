"""The relay's logic, pure: plain values in, plain values out, clocks passed in.

- :mod:`relay.core.auth`: long-term keys, nonces, REST API minting, the RFC 8489 §9.2.4 checks.
- :mod:`relay.core.credentials`: the one credential store: static users and REST API secrets.
- :mod:`relay.core.peer_policy`: which peers a client may reach (SSRF protection), cached.
- :mod:`relay.core.ports`: which relayed-transport ports are free.
- :mod:`relay.core.admission`: caps on TCP connections without an allocation, per source IP.
- :mod:`relay.core.certs`: TLS certificate/key pairs: loading, checking, noticing a change.
- :mod:`relay.core.allocation`: allocations, expiry, quotas; the endpoint and link Protocols.
- :mod:`relay.core.handler`: the STUN/TURN request handler (RFC 8656 §5-§12).
- :mod:`relay.core.stats`: the counters and lifecycle events the reports are made of.
"""
