"""Tools run against a relay fleet.

* :mod:`.load`: ``turnscale load``, real TURN allocations for a while.
"""
