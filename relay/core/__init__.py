"""The relay's logic, pure: plain values in, plain values out, clocks passed in.

* :mod:`.auth`: long-term credential keys, nonces and the server-side checks.
* :mod:`.credentials`: where the keys come from: static users and REST API secrets.
* :mod:`.peer_policy`: which peers a client may reach (SSRF protection).
* :mod:`.ports`: which relayed-transport ports are free.
* :mod:`.allocation`: allocations, their expiry and quotas, and what they hold.
* :mod:`.handler`: the STUN/TURN request handler.
* :mod:`.stats`: the counters and lifecycle events the reports are made of.
"""
