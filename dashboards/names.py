"""Names the dashboards and rules share: recorded series, filters, scaling bounds.

Values that the scaler defines are imported from it (scaling defaults, report
results, the KEDA metric name), so the artefacts cannot drift from the code.
"""

from __future__ import annotations

from typing import Final

from scaler.fleet import Outcome
from scaler.ingest import RESULTS
from scaler.keda.metadata import BANDWIDTH_METRIC_PREFIX, METRIC_PREFIX
from scaler.scaling import ScalingPolicy

# The scaler's defaults (--min-replicas, --max-replicas, --target-per-replica); dashboards
# and alerts read each gateway's own from stunner_scaler_{min,max}_replicas and
# stunner_scaler_target_per_replica, these only name the defaults in descriptions.
POLICY: Final = ScalingPolicy()
# The scaler's --stale-after default: a relay whose last report is older is stale.
STALE_AFTER_SECONDS: Final = 15
# "Near capacity": allocations per replica at this share of the target, at max replicas.
NEAR_CAPACITY: Final = 0.9

# turnscale_reports_total{result} values that are rejections (answered 4xx/503),
# as opposed to the idempotent outcomes (accepted, late, duplicate, old_instance).
REJECTED_RESULTS: Final = tuple(
    result for result in RESULTS if result not in {outcome.value for outcome in Outcome}
)
REJECTED_REGEX: Final = "|".join(REJECTED_RESULTS)

# KEDA names a trigger's metric "s<trigger index>-<GetMetricSpec name>"; turnscale's
# names start with "stunner-allocations" or, with a bandwidth target, "stunner-bandwidth"
# (then the trigger's namespace and gateway).
KEDA_METRIC_REGEX: Final = f"s[0-9]+-({METRIC_PREFIX}|{BANDWIDTH_METRIC_PREFIX}).*"

# Grafana's rate window: at least four scrape intervals, so every rate has samples.
RATE: Final = "$__rate_interval"
# Label filters of the fleet dashboard's variables. Per-gateway series (the duration
# histogram, the scaler's decision) carry no relay pod, so they take FLEET only.
FLEET: Final = 'namespace=~"$namespace", gateway=~"$gateway"'
RELAY: Final = FLEET + ', pod=~"$pod"'
# The scaler's own series carry the scrape target's namespace and pod.
SCALER: Final = 'namespace=~"$namespace", pod=~"$pod"'

# Recorded series (level:metric:operations); dashboards/rules/turnscale-recording.yaml.
ALLOCATIONS: Final = "namespace_gateway:stunner_allocations_active:sum"
RELAYS: Final = "namespace_gateway:stunner_relay_up:count"
RELAYS_UP: Final = "namespace_gateway:stunner_relay_up:sum"
RELAYS_DRAINING: Final = "namespace_gateway:stunner_relay_draining:sum"
SCALER_ALLOCATIONS: Final = "namespace_gateway:stunner_scaler_allocations:max"
DESIRED_REPLICAS: Final = "namespace_gateway:stunner_scaler_desired_replicas:max"
# Each gateway's own bounds and target (its trigger's over mutual TLS, else the flags).
MIN_REPLICAS: Final = "namespace_gateway:stunner_scaler_min_replicas:max"
MAX_REPLICAS: Final = "namespace_gateway:stunner_scaler_max_replicas:max"
TARGET_PER_REPLICA: Final = "namespace_gateway:stunner_scaler_target_per_replica:max"
PER_REPLICA: Final = "namespace_gateway:stunner_scaler_allocations_per_desired_replica:ratio"
# Relayed bytes/s that count for scaling, the target per replica (with a bandwidth target
# only) and the bytes/s per desired replica.
BANDWIDTH: Final = "namespace_gateway:stunner_scaler_bandwidth_bytes_per_second:max"
TARGET_BANDWIDTH: Final = "namespace_gateway:stunner_scaler_target_bandwidth_per_replica:max"
BANDWIDTH_PER_REPLICA: Final = (
    "namespace_gateway:stunner_scaler_bandwidth_bytes_per_second_per_desired_replica:ratio"
)
REPORTS: Final = "namespace_job_result:turnscale_reports:rate5m"
