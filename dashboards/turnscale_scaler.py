"""The "turnscale scaler" dashboard: report ingest, scaling decisions, KEDA, the process."""

from __future__ import annotations

from typing import Final

from dashboards.grafana import JSON, Panel, Query, Row, Variable, dashboard
from dashboards.names import KEDA_METRIC_REGEX, RATE, REJECTED_REGEX, SCALER

UID: Final = "turnscale-scaler"
# The scaler's per-gateway series: the gateway it decides for, exported by the selected pods.
DECISION: Final = 'gateway=~"$gateway", pod=~"$pod"'
KEDA: Final = f'metric=~"{KEDA_METRIC_REGEX}"'

VARIABLES: Final = (
    Variable(
        "namespace",
        "Namespace",
        "Namespace the scaler runs in (its scrape target's namespace label)",
        "label_values(turnscale_relays_tracked, namespace)",
    ),
    Variable(
        "gateway",
        "Gateway",
        "Gateways the scaler makes scaling decisions for",
        "label_values(stunner_scaler_desired_replicas, gateway)",
    ),
    Variable(
        "pod",
        "Scaler pod",
        "Scaler pods in the selected namespace",
        'label_values(turnscale_relays_tracked{namespace=~"$namespace"}, pod)',
    ),
)

INGEST = Row(
    "Report ingest",
    (
        Panel(
            "Reports per second by result",
            "Relay reports the scaler answered, by result: accepted, late (older seq, "
            "events still counted), duplicate and old_instance (ignored, idempotent), and "
            "the rejections.",
            "reqps",
            (
                Query(
                    f"sum by (result) (rate(turnscale_reports_total{{{SCALER}}}[{RATE}]))",
                    "{{result}}",
                ),
            ),
            stack=True,
        ),
        Panel(
            "Rejected reports per second",
            "Reports rejected whole (they change nothing): invalid (400), unauthorized "
            "(401), too_large (413), unsupported_media_type (415), fleet_full (503), "
            "forbidden (403, not from the pod it names), unknown_pod (503, not in the pod "
            "watch). The "
            "TurnscaleReportsRejected alert fires while any persist.",
            "reqps",
            (
                Query(
                    "sum by (result) (rate(turnscale_reports_total"
                    f'{{{SCALER}, result=~"{REJECTED_REGEX}"}}[{RATE}]))',
                    "{{result}}",
                ),
            ),
        ),
        Panel(
            "Allocation events per second",
            "Allocation lifecycle events (created, deleted) taken from accepted reports.",
            "ops",
            (
                Query(
                    f"sum(rate(turnscale_report_events_total{{{SCALER}}}[{RATE}]))",
                    "events",
                ),
            ),
        ),
        Panel(
            "Relays tracked",
            "Relays each scaler pod tracks now (bounded by --max-relays).",
            "short",
            (Query(f"sum by (pod) (turnscale_relays_tracked{{{SCALER}}})", "{{pod}}"),),
            decimals=0,
        ),
        Panel(
            "Exporting replica",
            "1 for the scaler pod that exports the fleet's stunner_* series (it holds the "
            "Lease, or runs alone): one pod at a time, so sum(stunner_allocations_active) "
            "counts each relay once. 0 everywhere for at most the lease duration during "
            "a failover.",
            "short",
            (Query(f"sum by (pod) (turnscale_scaler_leader{{{SCALER}}})", "{{pod}}"),),
            decimals=0,
        ),
    ),
)

DECISIONS = Row(
    "Scaling decisions",
    (
        Panel(
            "Allocations counted for scaling",
            "Allocations of relays that are neither draining nor expired, per gateway: the "
            "value KEDA scales on.",
            "short",
            (
                Query(
                    f"max by (namespace, gateway) (stunner_scaler_allocations{{{DECISION}}})",
                    "{{namespace}}/{{gateway}}",
                ),
            ),
        ),
        Panel(
            "Desired replicas",
            "Replicas the scaling rule asks for per gateway, within the bounds the "
            "gateway's KEDA trigger asks for.",
            "short",
            (
                Query(
                    f"max by (namespace, gateway) (stunner_scaler_desired_replicas{{{DECISION}}})",
                    "{{namespace}}/{{gateway}}",
                ),
            ),
            decimals=0,
        ),
        Panel(
            "Deciding metric",
            "Per gateway with a bandwidth target: 1 for the metric whose proposal sets the "
            "desired replicas (allocations or relayed bandwidth, the larger; allocations on a "
            "tie), 0 for the other. Gateways without a bandwidth target have no series.",
            "short",
            (
                Query(
                    f"max by (namespace, gateway, metric) (stunner_scaler_deciding{{{DECISION}}})",
                    "{{namespace}}/{{gateway}} {{metric}}",
                ),
            ),
            decimals=0,
        ),
    ),
)

GRPC = Row(
    "KEDA external scaler (gRPC)",
    (
        Panel(
            "gRPC requests per second by method and code",
            "Finished gRPC calls by method and status code; a stream counts once, when it ends.",
            "reqps",
            (
                Query(
                    "sum by (method, code) "
                    f"(rate(turnscale_grpc_requests_total{{{SCALER}}}[{RATE}]))",
                    "{{method}} {{code}}",
                ),
            ),
        ),
        Panel(
            "gRPC latency by method",
            "Time to answer unary gRPC calls (IsActive, GetMetricSpec, GetMetrics, health "
            "Check): median and 99th percentile.",
            "s",
            tuple(
                Query(
                    f"histogram_quantile({quantile}, sum by (method, le) "
                    f"(rate(turnscale_grpc_request_duration_seconds_bucket{{{SCALER}}}[{RATE}])))",
                    f"p{quantile * 100:g} {{{{method}}}}",
                )
                for quantile in (0.5, 0.99)
            ),
        ),
        Panel(
            "Open gRPC streams",
            "Server streams open now: KEDA's StreamIsActive (external-push triggers) and "
            "health Watch.",
            "short",
            (
                Query(
                    f"sum by (method) (turnscale_grpc_streams_active{{{SCALER}}})",
                    "{{method}}",
                ),
            ),
            decimals=0,
        ),
        Panel(
            "KEDA scaler metric value",
            "What KEDA's operator last read from the turnscale triggers (metric "
            "s<N>-stunner-allocations...), beside the scaler's own count. Empty where "
            "KEDA's metrics are not scraped.",
            "short",
            (
                Query(
                    f"sum by (scaledObject, metric) (keda_scaler_metrics_value{{{KEDA}}})",
                    "KEDA {{scaledObject}} {{metric}}",
                ),
                Query(
                    f"max by (namespace, gateway) (stunner_scaler_allocations{{{DECISION}}})",
                    "scaler {{namespace}}/{{gateway}}",
                ),
            ),
        ),
        Panel(
            "KEDA scaler errors per second",
            "Errors KEDA's operator had getting the turnscale triggers' metric "
            "(keda_scaler_detail_errors_total). Empty where KEDA's metrics are not scraped.",
            "ops",
            (
                Query(
                    "sum by (scaledObject, metric) "
                    f"(rate(keda_scaler_detail_errors_total{{{KEDA}}}[{RATE}]))",
                    "{{scaledObject}} {{metric}}",
                ),
            ),
        ),
        Panel(
            "KEDA metric latency",
            "How long KEDA's operator took to get the turnscale triggers' metric from the "
            "scaler. Empty where KEDA's metrics are not scraped.",
            "s",
            (
                Query(
                    "max by (scaledObject, metric) "
                    f"(keda_scaler_metrics_latency_seconds{{{KEDA}}})",
                    "{{scaledObject}} {{metric}}",
                ),
            ),
        ),
    ),
)

PROCESS = Row(
    "Process",
    (
        Panel(
            "Scaler targets up",
            "Scaler scrape targets Prometheus reaches now (up == 1).",
            "short",
            (Query(f"sum(up{{{SCALER}}})", "up"),),
            kind="stat",
            width=4,
        ),
        Panel(
            "CPU",
            "CPU time the scaler process uses per second (1 = one core), from its "
            "process_* metrics.",
            "percentunit",
            (
                Query(
                    f"sum by (pod) (rate(process_cpu_seconds_total{{{SCALER}}}[{RATE}]))",
                    "{{pod}}",
                ),
            ),
            width=10,
        ),
        Panel(
            "Memory",
            "Resident memory of the scaler process, from its process_* metrics.",
            "bytes",
            (
                Query(
                    f"sum by (pod) (process_resident_memory_bytes{{{SCALER}}})",
                    "{{pod}}",
                ),
            ),
            width=10,
        ),
    ),
)


def build() -> JSON:
    return dashboard(
        uid=UID,
        title="turnscale scaler",
        description="The turnscale collector: relay report ingest, its scaling decisions, "
        "the KEDA external scaler (its gRPC front end and KEDA's view of it) and the "
        "scaler process.",
        tags=("turnscale", "keda"),
        variables=VARIABLES,
        rows=(INGEST, DECISIONS, GRPC, PROCESS),
    )
