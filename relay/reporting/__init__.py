"""Reporting to the scalers (the wire contract of :mod:`scaler.wire`).

- :mod:`relay.reporting.config`: where a relay reports to and as whom (flags, validated).
- :mod:`relay.reporting.pusher`: the report pusher, and ``make_pusher`` wiring it to the stats.
- :mod:`relay.reporting.fleet_quota`: the scalers' over-quota lists (fleet user quota).
"""
