"""Pure parts of the Kubernetes integration: selectors, pod objects, the pod view,
fleet expiry with spared relays, and the deletion-cost planner."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.common.backoff import Backoff
from scaler.fleet import FleetState
from scaler.kube.cost import CostPatch, CostPlanner, clamp_int32
from scaler.kube.pods import (
    POD_DELETION_COST,
    PodInfo,
    PodObjectError,
    PodView,
    parse_cost,
    pod_info,
)
from scaler.kube.selector import SelectorError, parse_selector
from scaler.scaling import ScalingPolicy
from tests.reports import report

# ---- selectors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("app=stunner", {"app": "stunner"}, True),
        ("app==stunner", {"app": "stunner"}, True),
        ("app=stunner", {"app": "other"}, False),
        ("app=stunner,tier!=canary", {"app": "stunner", "tier": "canary"}, False),
        ("app=stunner,tier!=canary", {"app": "stunner"}, True),
        ("app in (stunner, relay)", {"app": "relay"}, True),
        ("app notin (stunner)", {"app": "relay"}, True),
        ("example.com/role", {"example.com/role": ""}, True),
        ("!canary", {"canary": "yes"}, False),
        (" app = stunner ", {"app": "stunner"}, True),
    ],
)
def test_selector_grammar(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


@pytest.mark.parametrize(
    "text",
    [
        "",
        "app=stunner,,x=y",
        "app in ()",
        "app in (a",
        "-bad=x",
        "app=has space",
        "a=b=c",
        "x" * 64,
    ],
)
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


# ---- pod objects and the view ----------------------------------------------------------


def pod_object(
    name: str = "relay-a",
    *,
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
    cost: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "stunner", "uid": "u-" + name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if cost is not None:
        metadata["annotations"] = {POD_DELETION_COST: cost}
    return {
        "metadata": metadata,
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def pod(name: str = "relay-a", **kwargs: Any) -> PodInfo:
    return pod_info(pod_object(name, **kwargs))


def test_pod_info_reads_what_the_scaler_needs() -> None:
    info = pod("relay-a", cost="42")
    assert info.key == ("stunner", "relay-a")
    assert (info.ready, info.terminating, info.alive, info.deletion_cost) == (True, False, True, 42)
    assert pod(ready=False).ready is False
    assert pod(deleting=True).alive is False
    assert pod(phase="Failed").alive is False
    assert pod(phase="Pending", ready=False).alive is True
    no_status = pod_info({"metadata": {"name": "x", "namespace": "y"}})
    assert (no_status.phase, no_status.ready) == ("Pending", False)
    with pytest.raises(PodObjectError):
        pod_info({"metadata": {"name": "x"}})


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("0", 0),
        ("-5", -5),
        (" 7 ", 7),
        ("2147483647", 2147483647),
        ("2147483648", None),
        ("-2147483649", None),
        ("1.5", None),
        ("x", None),
        (None, None),
    ],
)
def test_the_cost_annotation_is_an_int32(raw: str | None, parsed: int | None) -> None:
    assert parse_cost(raw) == parsed


def test_the_view_says_which_pods_are_gone() -> None:
    view = PodView()
    assert not view.listed
    assert view.replace([pod("a"), pod("b"), pod("c", deleting=True)]) == []
    assert view.listed
    assert view.alive() == {("stunner", "a"), ("stunner", "b")}
    assert view.apply("MODIFIED", pod("a", ready=False)) is False
    assert view.get(("stunner", "a")) == pod("a", ready=False)
    assert view.apply("DELETED", pod("b")) is True
    assert view.replace([pod("a"), pod("d")]) == [("stunner", "c")]
    assert {p.name for p in view} == {"a", "d"}


# ---- fleet expiry with spared relays ---------------------------------------------------


def test_spared_relays_stay_stale_instead_of_expiring() -> None:
    fleet = FleetState(stale_after=15.0, expire_after=60.0, max_relays=10)
    fleet.apply(report("relay-a", udp=40), now=0.0)
    fleet.apply(report("relay-b", udp=10), now=0.0)
    assert fleet.expire(61.0, spare={("stunner", "relay-a")}) == [("stunner", "relay-b")]
    assert fleet.select().allocations == 40
    relay = fleet.get("stunner", "relay-a")
    assert relay is not None and not fleet.is_up(relay, 61.0)
    assert fleet.expire(10_000.0, spare={("stunner", "relay-a")}) == []
    assert fleet.expire(10_000.0) == [("stunner", "relay-a")]  # not spared any more


# ---- the deletion-cost planner ----------------------------------------------------------

POLICY = ScalingPolicy(min_replicas=2, max_replicas=10, target_per_replica=100)


def flag_policy(namespace: str, gateway: str) -> ScalingPolicy:
    return POLICY


def fleet_of(**allocations: int) -> FleetState:
    fleet = FleetState(stale_after=15.0, expire_after=60.0, max_relays=100)
    for name, count in allocations.items():
        fleet.apply(report(name.replace("_", "-"), udp=count), now=0.0)
    return fleet


def pods_of(*infos: PodInfo) -> dict[tuple[str, str], PodInfo]:
    return {info.key: info for info in infos}


def test_no_patches_while_the_fleet_is_not_scaling_in() -> None:
    # 250 allocations want 3 replicas; 3 ready relays: nothing to do.
    fleet = fleet_of(relay_a=100, relay_b=100, relay_c=50)
    pods = pods_of(pod("relay-a"), pod("relay-b"), pod("relay-c"))
    plan = CostPlanner(min_interval=10.0).plan(fleet, pods, flag_policy, now=0.0)
    assert plan.patches == []
    assert [(f.desired, f.ready, f.scaling_in) for f in plan.fleets] == [(3, 3, False)]


def test_on_scale_in_every_relay_pod_gets_its_allocations() -> None:
    # 130 allocations want 2 replicas; 4 ready relays: scale-in.
    fleet = fleet_of(relay_a=100, relay_b=0, relay_c=30, relay_d=0)
    pods = pods_of(pod("relay-a"), pod("relay-b"), pod("relay-c"), pod("relay-d", cost="0"))
    plan = CostPlanner(min_interval=10.0).plan(fleet, pods, flag_policy, now=0.0)
    assert plan.fleets[0].scaling_in
    # relay-b (absent = 0) and relay-d ("0") already carry their cost: only changes.
    assert plan.patches == [
        CostPatch("stunner", "relay-a", 100, None),
        CostPatch("stunner", "relay-c", 30, None),
    ]


def test_patches_are_rate_limited_per_pod_and_per_round() -> None:
    fleet = fleet_of(relay_a=5, relay_b=6, relay_c=7, relay_d=8)
    pods = pods_of(pod("relay-a"), pod("relay-b"), pod("relay-c"), pod("relay-d"))
    planner = CostPlanner(min_interval=10.0, max_patches=3)
    first = planner.plan(fleet, pods, flag_policy, now=0.0)
    # Biggest corrections first; the fourth waits for the next round.
    assert [p.pod for p in first.patches] == ["relay-d", "relay-c", "relay-b"]
    assert first.deferred == 1
    # The pods still show their old annotations (the watch has not caught up), yet
    # none is patched again within min_interval.
    second = planner.plan(fleet, pods, flag_policy, now=1.0)
    assert [p.pod for p in second.patches] == ["relay-a"]
    assert planner.plan(fleet, pods, flag_policy, now=5.0).patches == []
    assert len(planner.plan(fleet, pods, flag_policy, now=10.0).patches) == 3


def test_planner_skips_pods_that_are_not_alive_or_unknown_and_counts_only_ready() -> None:
    fleet = fleet_of(relay_a=10, relay_b=20, relay_c=30, relay_d=40, relay_e=1)
    pods = pods_of(
        pod("relay-a"),
        pod("relay-b", deleting=True),  # on its way out: not ours to rank
        pod("relay-c", phase="Failed"),
        pod("relay-d", ready=False),  # exists, not ready: patched, not counted as ready
        # relay-e has no pod in the view
    )
    plan = CostPlanner(min_interval=10.0).plan(fleet, pods, flag_policy, now=0.0)
    # desired = 2 (101 allocations), ready = 1 (relay-a): not scaling in.
    assert plan.fleets[0].ready == 1
    assert plan.patches == []
    pods.update(pods_of(pod("relay-f"), pod("relay-g")))
    fleet.apply(report("relay-f"), now=0.0)
    fleet.apply(report("relay-g"), now=0.0)
    plan = CostPlanner(min_interval=10.0).plan(fleet, pods, flag_policy, now=0.0)
    assert plan.fleets[0].ready == 3
    assert {p.pod for p in plan.patches} == {"relay-a", "relay-d"}


def test_each_gateway_is_its_own_fleet_and_follows_its_policy() -> None:
    fleet = FleetState(stale_after=15.0, expire_after=60.0, max_relays=100)
    for name, gateway in (("a1", "one"), ("a2", "one"), ("b1", "two"), ("b2", "two")):
        fleet.apply(report(name, gateway=gateway, udp=1), now=0.0)
    pods = pods_of(*(pod(name) for name in ("a1", "a2", "b1", "b2")))

    def policy_for(namespace: str, gateway: str) -> ScalingPolicy:
        return ScalingPolicy(1, 10, 100) if gateway == "two" else POLICY

    plan = CostPlanner(min_interval=10.0).plan(fleet, pods, policy_for, now=0.0)
    assert [(f.gateway, f.scaling_in) for f in plan.fleets] == [("one", False), ("two", True)]
    assert {p.pod for p in plan.patches} == {"b1", "b2"}


def test_costs_are_clamped_to_int32() -> None:
    assert clamp_int32(2**40) == 2**31 - 1
    assert clamp_int32(-(2**40)) == -(2**31)
    assert clamp_int32(5) == 5


def test_the_planner_forgets_pods_that_are_gone() -> None:
    fleet = fleet_of(relay_a=5, relay_b=6, relay_c=7)
    pods = pods_of(pod("relay-a"), pod("relay-b"), pod("relay-c"))
    planner = CostPlanner(min_interval=10.0)
    planner.plan(fleet, pods, flag_policy, now=0.0)
    planner.plan(fleet, {}, flag_policy, now=1.0)
    assert planner._last_patch == {}


def test_backoff_grows_with_jitter_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(1.0, 8.0, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    backoff.reset()
    low = Backoff(1.0, 8.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.next() == 1.0
