"""The "TURN fleet" dashboard: allocations, scaling, traffic, lifecycle and relay health."""

from __future__ import annotations

from typing import Final

from dashboards.grafana import JSON, Panel, Query, Row, Variable, dashboard
from dashboards.names import (
    ALLOCATIONS,
    BANDWIDTH,
    BANDWIDTH_PER_REPLICA,
    DESIRED_REPLICAS,
    FLEET,
    MAX_REPLICAS,
    MIN_REPLICAS,
    NEAR_CAPACITY,
    PER_REPLICA,
    POLICY,
    RATE,
    RELAY,
    RELAYS,
    RELAYS_DRAINING,
    RELAYS_UP,
    SCALER_ALLOCATIONS,
    STALE_AFTER_SECONDS,
    TARGET_BANDWIDTH,
    TARGET_PER_REPLICA,
)

UID: Final = "turnscale-turn-fleet"
# The relay Deployment is named after its gateway (as STUNner's operator names it).
DEPLOYMENT: Final = 'namespace=~"$namespace", deployment=~"$gateway"'

VARIABLES: Final = (
    Variable(
        "namespace",
        "Namespace",
        "Namespaces of the relays (the relay.namespace they report)",
        "label_values(stunner_relay_up, namespace)",
    ),
    Variable(
        "gateway",
        "Gateway",
        "Gateways (relay fleets) in the selected namespaces",
        'label_values(stunner_relay_up{namespace=~"$namespace"}, gateway)',
    ),
    Variable(
        "pod",
        "Relay pod",
        "Relay pods of the selected gateways; panels about whole fleets ignore it",
        'label_values(stunner_relay_up{namespace=~"$namespace", gateway=~"$gateway"}, pod)',
        all_value=".*",
    ),
)


# Every scaler replica holds the whole fleet (relays push to each), so relay series
# come once per replica: deduplicate per relay (or per gateway) before summing.
def _relay_rate(metric: str, label: str) -> str:
    """Fleet rate of a per-relay counter by ``label``, each relay counted once."""
    rate = f"rate({metric}{{{RELAY}}}[{RATE}])"
    return f"sum by ({label}) (max by (namespace, gateway, pod, {label}) ({rate}))"


def _duration_rate(series: str, by: str = "") -> str:
    """Rate of a duration histogram series, each gateway and transport counted once."""
    rate = f"rate(stunner_allocation_duration_seconds_{series}{{{FLEET}}}[{RATE}])"
    if not by:
        return f"sum (max by (namespace, gateway, transport) ({rate}))"
    return f"sum by ({by}) (max by (namespace, gateway, transport, {by}) ({rate}))"


def _quantile(quantile: float) -> Query:
    expr = f"histogram_quantile({quantile}, {_duration_rate('bucket', 'le')})"
    return Query(expr, f"p{quantile * 100:g}")


SCALING = Row(
    "Allocations and scaling",
    (
        Panel(
            "Active allocations",
            "TURN allocations active now on the selected gateways' relays, draining relays "
            "included (recorded fleet total).",
            "short",
            (Query(f"sum({ALLOCATIONS}{{{FLEET}}})", "allocations"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Desired replicas",
            "Relay replicas the scaler's rule asks for, summed over the selected gateways: "
            "ceil(allocations / target per replica), clamped to the min and max replicas.",
            "short",
            (Query(f"sum({DESIRED_REPLICAS}{{{FLEET}}})", "desired replicas"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Allocations per replica",
            f"Highest allocations per desired replica among the selected gateways. Red from "
            f"{NEAR_CAPACITY:.0%} of the default target ({POLICY.target_per_replica}); at a "
            f"gateway's max replicas, {NEAR_CAPACITY:.0%} of its own target is the "
            "TurnscaleFleetNearCapacity alert.",
            "short",
            (Query(f"max({PER_REPLICA}{{{FLEET}}})", "allocations per replica"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=(POLICY.target_per_replica * NEAR_CAPACITY,),
            decimals=1,
        ),
        Panel(
            "Running replicas",
            "Replicas the relay Deployments run now (kube-state-metrics; each Deployment "
            "is named after its gateway).",
            "short",
            (Query(f"sum(kube_deployment_status_replicas{{{DEPLOYMENT}}})", "running replicas"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Active allocations by gateway and relay pod",
            "Fleet total per gateway and the allocations on each selected relay pod "
            "(each relay counted once, however many scaler replicas export it).",
            "short",
            (
                Query(
                    f"sum by (namespace, gateway) ({ALLOCATIONS}{{{FLEET}}})",
                    "{{namespace}}/{{gateway}} total",
                ),
                Query(
                    "sum by (namespace, pod) (max by (namespace, gateway, pod, transport) "
                    f"(stunner_allocations_active{{{RELAY}}}))",
                    "{{pod}}",
                ),
            ),
        ),
        Panel(
            "Replicas: desired, actual and bounds",
            "What the scaler asks for beside what the relay Deployment runs "
            "(kube-state-metrics, Deployment named after its gateway), with each "
            "gateway's min and max replicas (its KEDA trigger's over mutual TLS, else the "
            f"scaler's flags, by default {POLICY.min_replicas} and {POLICY.max_replicas}).",
            "short",
            (
                Query(f"{DESIRED_REPLICAS}{{{FLEET}}}", "desired {{namespace}}/{{gateway}}"),
                Query(
                    "sum by (namespace, deployment) "
                    f"(kube_deployment_status_replicas{{{DEPLOYMENT}}})",
                    "actual {{namespace}}/{{deployment}}",
                ),
                Query(f"{MIN_REPLICAS}{{{FLEET}}}", "min {{namespace}}/{{gateway}}"),
                Query(f"{MAX_REPLICAS}{{{FLEET}}}", "max {{namespace}}/{{gateway}}"),
            ),
            decimals=0,
        ),
        Panel(
            "Allocations per replica against the target",
            "Allocations per desired replica for each gateway, and per running replica "
            "over the selection, against each gateway's target per replica (by default "
            f"{POLICY.target_per_replica}). The dashed line is {NEAR_CAPACITY:.0%} of the "
            "default target.",
            "short",
            (
                Query(f"{PER_REPLICA}{{{FLEET}}}", "per desired replica {{namespace}}/{{gateway}}"),
                Query(
                    f"sum({SCALER_ALLOCATIONS}{{{FLEET}}}) / "
                    f"sum(kube_deployment_status_replicas{{{DEPLOYMENT}}})",
                    "per running replica",
                ),
                Query(f"{TARGET_PER_REPLICA}{{{FLEET}}}", "target {{namespace}}/{{gateway}}"),
            ),
            thresholds=(POLICY.target_per_replica * NEAR_CAPACITY,),
        ),
        Panel(
            "Relayed bandwidth per replica against the target",
            "Relayed bytes per second (the busier direction, client and peer sides summed, "
            "averaged over the scaler's --bandwidth-window) per desired replica for each "
            "gateway, and per running replica over the selection, against each gateway's "
            "bandwidth target per replica. Gateways without a bandwidth target show no "
            "target: allocations alone decide their replicas.",
            "Bps",
            (
                Query(
                    f"{BANDWIDTH_PER_REPLICA}{{{FLEET}}}",
                    "per desired replica {{namespace}}/{{gateway}}",
                ),
                Query(
                    f"sum({BANDWIDTH}{{{FLEET}}}) / "
                    f"sum(kube_deployment_status_replicas{{{DEPLOYMENT}}})",
                    "per running replica",
                ),
                Query(f"{TARGET_BANDWIDTH}{{{FLEET}}}", "target {{namespace}}/{{gateway}}"),
            ),
        ),
    ),
)

TRAFFIC = Row(
    "Traffic",
    (
        Panel(
            "Bytes per second by side and direction",
            "Relayed traffic of the selected relays: side=client on the TURN listeners, "
            "side=peer on the relayed sockets. Received is drawn above the axis, sent below.",
            "Bps",
            (
                Query(
                    _relay_rate("stunner_bytes_received_total", "side"),
                    "received, {{side}} side",
                ),
                Query(_relay_rate("stunner_bytes_sent_total", "side"), "sent, {{side}} side"),
            ),
            negative="^sent.*",
        ),
        Panel(
            "Relayed bandwidth per relay pod",
            "Relayed bytes per second of each selected relay as the scaler measures it for "
            "scaling: the busier direction (received or sent, client and peer sides "
            "summed), averaged over --bandwidth-window.",
            "Bps",
            (
                Query(
                    "max by (namespace, pod) "
                    f"(stunner_relay_bandwidth_bytes_per_second{{{RELAY}}})",
                    "{{pod}}",
                ),
            ),
        ),
        Panel(
            "New connections per second by transport",
            "Client connections (TCP) and new 5-tuples (UDP) accepted by the selected "
            "relays' TURN listeners.",
            "cps",
            (Query(_relay_rate("stunner_connections_total", "transport"), "{{transport}}"),),
        ),
    ),
)

LIFECYCLE = Row(
    "Allocation lifecycle",
    (
        Panel(
            "Allocations created and deleted per second",
            "Creations by transport above the axis, deletions by reason below it "
            "(refresh_zero: the client released it; expired: not refreshed; drained: "
            "ended by a draining relay; error).",
            "ops",
            (
                Query(
                    _relay_rate("stunner_allocations_created_total", "transport"),
                    "created, {{transport}}",
                ),
                Query(
                    _relay_rate("stunner_allocations_deleted_total", "reason"),
                    "deleted, {{reason}}",
                ),
            ),
            negative="^deleted.*",
        ),
        Panel(
            "Allocation duration quantiles",
            "Lifetime of the allocations that ended, from the per-gateway histogram "
            "(the pod filter does not apply): median, 90th and 99th percentile and mean.",
            "s",
            (
                _quantile(0.5),
                _quantile(0.9),
                _quantile(0.99),
                Query(f"{_duration_rate('sum')} / {_duration_rate('count')}", "mean"),
            ),
        ),
        Panel(
            "Allocates refused per second",
            "Allocates the relays answered 486 (Allocation Quota Reached), by reason: "
            "user_quota and total_quota are the per-relay --user-quota and --total-quota; "
            "fleet_user_quota is a user the scaler lists as at or over --fleet-user-quota "
            "across the fleet.",
            "ops",
            (
                Query(
                    _relay_rate("stunner_allocations_refused_total", "reason"),
                    "{{reason}}",
                ),
            ),
        ),
    ),
)

HEALTH = Row(
    "Relay health",
    (
        Panel(
            "Relays up",
            "Relays that reported within the scaler's --stale-after.",
            "short",
            (Query(f"sum({RELAYS_UP}{{{FLEET}}})", "up"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Relays stale",
            "Relays the scaler still tracks but that have not reported within "
            "--stale-after. Their allocations still count for scaling until --expire-after.",
            "short",
            (Query(f"sum({RELAYS}{{{FLEET}}}) - sum({RELAYS_UP}{{{FLEET}}})", "stale"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=(1,),
        ),
        Panel(
            "Relays draining",
            "Relays that report draining: they keep their allocations but no longer count "
            "for scaling.",
            "short",
            (Query(f"sum({RELAYS_DRAINING}{{{FLEET}}})", "draining"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Oldest report",
            "Age of the oldest last report among the selected relays. Relays report at "
            f"least every 5 s; red from the default --stale-after ({STALE_AFTER_SECONDS} s).",
            "s",
            (
                Query(
                    "max(min by (namespace, gateway, pod) "
                    f"(stunner_relay_report_age_seconds{{{RELAY}}}))",
                    "oldest report",
                ),
            ),
            kind="stat",
            width=6,
            height=4,
            thresholds=(STALE_AFTER_SECONDS,),
            decimals=1,
        ),
        Panel(
            "Relays by state",
            "Relays per gateway that are up, stale (tracked but silent past --stale-after) "
            "and draining.",
            "short",
            (
                Query(f"{RELAYS_UP}{{{FLEET}}}", "up {{namespace}}/{{gateway}}"),
                Query(
                    f"{RELAYS}{{{FLEET}}} - {RELAYS_UP}{{{FLEET}}}",
                    "stale {{namespace}}/{{gateway}}",
                ),
                Query(f"{RELAYS_DRAINING}{{{FLEET}}}", "draining {{namespace}}/{{gateway}}"),
            ),
            decimals=0,
        ),
        Panel(
            "Report age per relay",
            "Seconds since each selected relay's last accepted report (at the scaler replica "
            "that heard from it last); the dashed line is "
            f"the default --stale-after ({STALE_AFTER_SECONDS} s).",
            "s",
            (
                Query(
                    f"min by (namespace, pod) (stunner_relay_report_age_seconds{{{RELAY}}})",
                    "{{pod}}",
                ),
            ),
            thresholds=(STALE_AFTER_SECONDS,),
        ),
    ),
)


def build() -> JSON:
    return dashboard(
        uid=UID,
        title="TURN fleet",
        description="turnscale relay fleet: allocations, scaling decisions beside the "
        "Deployment, traffic, allocation lifecycle and relay health, from the scaler's "
        "/metrics and the turnscale recording rules.",
        tags=("turnscale", "turn", "stunner"),
        variables=VARIABLES,
        rows=(SCALING, TRAFFIC, LIFECYCLE, HEALTH),
    )
