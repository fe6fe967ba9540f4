"""Tools that run against a relay fleet.

- :mod:`relay.tools.load`: ``turnscale load``, real TURN allocations through aioice.
"""
