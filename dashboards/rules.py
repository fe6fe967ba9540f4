"""Prometheus rules: recording rules for the fleet totals, and the turnscale alerts.

Recorded names follow ``level:metric:operations``. Every scaler replica holds the
whole fleet (relays push to each), so per-relay series are deduplicated with
``max by`` the relay's identity before they are summed. Alerts carry a
``severity``, a static ``summary`` and a ``description`` templated from the
alert's labels and value. ``dashboards/rules/tests/`` holds their unit tests.
"""

from __future__ import annotations

from typing import Any, Final

from dashboards.names import (
    ALLOCATIONS,
    BANDWIDTH,
    BANDWIDTH_PER_REPLICA,
    DESIRED_REPLICAS,
    KEDA_METRIC_REGEX,
    MAX_REPLICAS,
    MIN_REPLICAS,
    NEAR_CAPACITY,
    PER_REPLICA,
    REJECTED_REGEX,
    RELAYS,
    RELAYS_DRAINING,
    RELAYS_UP,
    REPORTS,
    SCALER_ALLOCATIONS,
    TARGET_BANDWIDTH,
    TARGET_PER_REPLICA,
)

Rule = dict[str, Any]

RECORDING_GROUP: Final = "turnscale-recording"
ALERT_GROUP: Final = "turnscale-alerts"
# A relay drains until its allocations end or its drain timeout passes; the relay
# Deployment (deploy/base) gives it terminationGracePeriodSeconds 3600 for that.
DRAINING_TOO_LONG: Final = "1h"


def _record(name: str, expr: str) -> Rule:
    return {"record": name, "expr": expr}


RELAY_IDENTITY: Final = "namespace, gateway, pod"

RECORDING_RULES: Final = (
    _record(
        ALLOCATIONS,
        "sum by (namespace, gateway) (\n"
        f"  max by ({RELAY_IDENTITY}, transport) (stunner_allocations_active)\n)",
    ),
    _record(
        RELAYS,
        f"count by (namespace, gateway) (max by ({RELAY_IDENTITY}) (stunner_relay_up))",
    ),
    _record(
        RELAYS_UP,
        f"sum by (namespace, gateway) (max by ({RELAY_IDENTITY}) (stunner_relay_up))",
    ),
    _record(
        RELAYS_DRAINING,
        f"sum by (namespace, gateway) (max by ({RELAY_IDENTITY}) (stunner_relay_draining))",
    ),
    _record(SCALER_ALLOCATIONS, "max by (namespace, gateway) (stunner_scaler_allocations)"),
    _record(DESIRED_REPLICAS, "max by (namespace, gateway) (stunner_scaler_desired_replicas)"),
    _record(MIN_REPLICAS, "max by (namespace, gateway) (stunner_scaler_min_replicas)"),
    _record(MAX_REPLICAS, "max by (namespace, gateway) (stunner_scaler_max_replicas)"),
    _record(TARGET_PER_REPLICA, "max by (namespace, gateway) (stunner_scaler_target_per_replica)"),
    _record(PER_REPLICA, f"{SCALER_ALLOCATIONS}\n/\n({DESIRED_REPLICAS} > 0)"),
    _record(BANDWIDTH, "max by (namespace, gateway) (stunner_scaler_bandwidth_bytes_per_second)"),
    _record(
        TARGET_BANDWIDTH,
        "max by (namespace, gateway) (stunner_scaler_target_bandwidth_per_replica)",
    ),
    _record(BANDWIDTH_PER_REPLICA, f"{BANDWIDTH}\n/\n({DESIRED_REPLICAS} > 0)"),
    _record(REPORTS, "sum by (namespace, job, result) (rate(turnscale_reports_total[5m]))"),
)


def _alert(
    name: str,
    expr: str,
    *,
    duration: str | None,
    severity: str,
    summary: str,
    description: str,
) -> Rule:
    rule: Rule = {"alert": name, "expr": expr}
    if duration is not None:
        rule["for"] = duration
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


ALERTS: Final = (
    _alert(
        "TurnscaleScalerDown",
        # A scaler target that served metrics in the last hour and now fails its scrape;
        # failing that, no scaler metrics at all (down for longer, or not scraped).
        "(\n  up == 0\n  and on (job, instance)\n  max_over_time(turnscale_relays_tracked[1h])\n)\n"
        "or on ()\nabsent(turnscale_relays_tracked)",
        duration="2m",
        severity="critical",
        summary="The turnscale scaler is down or not scraped",
        description=(
            "{{ if $labels.instance }}Prometheus cannot scrape the turnscale scaler at "
            "{{ $labels.instance }} (job {{ $labels.job }}).{{ else }}Prometheus has no "
            "turnscale scaler metrics: the scaler is down or no scrape config selects it."
            "{{ end }} Without the scaler KEDA cannot read allocations, so the relay fleet "
            "does not scale, and relay telemetry stops."
        ),
    ),
    _alert(
        "TurnscaleRelayReportsStale",
        # The stale window (--stale-after to --expire-after) can be shorter than a rule
        # evaluation interval: min_over_time keeps a stale relay visible for a minute.
        "min_over_time(stunner_relay_up[1m]) == 0\n"
        f"unless on ({RELAY_IDENTITY})\n"
        "max_over_time(stunner_relay_draining[1m]) == 1",
        duration=None,
        severity="warning",
        summary="A relay stopped reporting to the scaler",
        description=(
            "Relay {{ $labels.namespace }}/{{ $labels.pod }} (gateway {{ $labels.gateway }}) "
            "has not reported to the scaler at {{ $labels.instance }} for longer than its "
            "--stale-after, without draining. Its allocations still count for scaling "
            "until --expire-after, then they drop out. Check the relay and its path to the "
            "scaler (--scaler URL, token, network policy)."
        ),
    ),
    _alert(
        "TurnscaleFleetAtMaxReplicas",
        f"{DESIRED_REPLICAS} >= on (namespace, gateway) {MAX_REPLICAS}",
        duration="15m",
        severity="warning",
        summary="A relay fleet is held at its maximum replicas",
        description=(
            "The scaler has asked for {{ $value }} replicas of gateway "
            "{{ $labels.namespace }}/{{ $labels.gateway }} for 15 minutes: the maximum. New "
            "allocations still land on the running relays; raise maxReplicas (ScaledObject "
            "and scaler) if the load keeps growing."
        ),
    ),
    _alert(
        "TurnscaleFleetNearCapacity",
        f"{PER_REPLICA} >= on (namespace, gateway) {TARGET_PER_REPLICA} * {NEAR_CAPACITY:g}\n"
        "and on (namespace, gateway)\n"
        f"{DESIRED_REPLICAS} >= on (namespace, gateway) {MAX_REPLICAS}",
        duration="5m",
        severity="critical",
        summary="A relay fleet at maximum replicas is close to its allocation target",
        description=(
            "Gateway {{ $labels.namespace }}/{{ $labels.gateway }} carries "
            "{{ $value | humanize }} allocations per replica at its maximum replicas, "
            f"{NEAR_CAPACITY:.0%} or more of its target per replica. It "
            "cannot scale out further: raise maxReplicas or add capacity before relays "
            "run past their planned load."
        ),
    ),
    _alert(
        "TurnscaleFleetOverBandwidth",
        # Only gateways with a bandwidth target have the target series: the others never fire.
        f"{BANDWIDTH_PER_REPLICA} > on (namespace, gateway) {TARGET_BANDWIDTH}\n"
        "and on (namespace, gateway)\n"
        f"{DESIRED_REPLICAS} >= on (namespace, gateway) {MAX_REPLICAS}",
        duration="5m",
        severity="critical",
        summary="A relay fleet at maximum replicas relays more than its bandwidth target",
        description=(
            "Gateway {{ $labels.namespace }}/{{ $labels.gateway }} relays "
            "{{ $value | humanize }}B/s per replica at its maximum replicas, over its "
            "bandwidth target per replica (--target-bandwidth-per-replica or the trigger's "
            "targetBandwidthPerReplica). It cannot scale out further, so its relays' NICs "
            "run past their planned load and calls may lose packets: raise maxReplicas or "
            "add capacity."
        ),
    ),
    _alert(
        "TurnscaleReportsRejected",
        f'{REPORTS}{{result=~"{REJECTED_REGEX}"}} > 0',
        duration="10m",
        severity="warning",
        summary="The scaler keeps rejecting relay reports",
        description=(
            "The scaler (job {{ $labels.job }}, namespace {{ $labels.namespace }}) rejects "
            '{{ $value | printf "%.2f" }} relay reports per second as {{ $labels.result }}. '
            "Rejected reports change nothing, so their relays are missing from scaling. "
            "unauthorized: check the relays' token; invalid or too_large: the relay "
            "version (or clocks: a report from the future is invalid); fleet_full: "
            "--max-relays; forbidden: a report for a pod from an address not that pod's "
            "(a forgery, or NAT between relays and scaler); unknown_pod: a pod the scaler's "
            "pod watch does not show (selector, namespace)."
        ),
    ),
    _alert(
        "TurnscaleKedaScalerErrors",
        "sum by (scaledObject, metric) (\n"
        f'  rate(keda_scaler_detail_errors_total{{metric=~"{KEDA_METRIC_REGEX}"}}[5m])\n'
        ") > 0",
        duration="5m",
        severity="warning",
        summary="KEDA fails to get the relay allocations from the scaler",
        description=(
            "KEDA's operator fails to get {{ $labels.metric }} for ScaledObject "
            "{{ $labels.scaledObject }} from the turnscale scaler "
            '({{ $value | printf "%.2f" }} errors per second), so the relay Deployment is not '
            "scaled on allocations. "
            "Check the KEDA operator's log and the scaler's gRPC address and TLS settings."
        ),
    ),
    _alert(
        "TurnscaleRelayDrainingTooLong",
        f"max by ({RELAY_IDENTITY}) (stunner_relay_draining) == 1",
        duration=DRAINING_TOO_LONG,
        severity="warning",
        summary="A relay has been draining for too long",
        description=(
            "Relay {{ $labels.namespace }}/{{ $labels.pod }} (gateway {{ $labels.gateway }}) "
            f"has been draining for more than {DRAINING_TOO_LONG}, longer than the relay "
            "Deployment's grace period. A draining relay keeps its allocations but does not "
            "count for scaling: check that the pod is terminating and the relay's drain "
            "timeout."
        ),
    ),
)


def recording_rules() -> dict[str, Any]:
    return {"groups": [{"name": RECORDING_GROUP, "rules": list(RECORDING_RULES)}]}


def alerting_rules() -> dict[str, Any]:
    return {"groups": [{"name": ALERT_GROUP, "rules": list(ALERTS)}]}
