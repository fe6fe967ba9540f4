"""Reporting to the scalers (the wire contract of :mod:`scaler.wire`).

* :mod:`.config`: where a relay reports to and as whom (flags, validated).
* :mod:`.pusher`: the report pusher, and :func:`.pusher.make_pusher` wiring it to the stats.
"""
