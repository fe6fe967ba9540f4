"""The fleet-wide user quota on the scaler: sums over live relays, answers, bounds, order.

Reports go through the real :class:`scaler.ingest.ReportIngest` and
:class:`scaler.fleet.FleetState` (as the HTTP front end calls them), with the clock
injected; the property test delivers several relays' reports in any order, repeated.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from scaler import wire
from scaler.exposition import make_registry
from scaler.fleet import FleetState
from scaler.ingest import Answer, ReportIngest
from scaler.user_quota import (
    PASS_SHARE,
    REBUILD_EVERY,
    FleetUserQuota,
    QuotaCollector,
    QuotaRefusals,
)
from tests.clock import FakeClock
from tests.reports import T0, report
from tests.scaler.helpers import value

ALICE = wire.user_digest("rest:alice")
BOB = wire.user_digest("static:bob")
ANONYMOUS = wire.user_digest("rest:")


def with_users(base: wire.Report, users: dict[str, int]) -> wire.Report:
    state = msgspec.structs.replace(base.state, users=wire.users_field(users))
    return msgspec.structs.replace(base, state=state)


def users_report(pod: str, seq: int, users: dict[str, int], **kw: object) -> wire.Report:
    return with_users(report(pod, seq=seq, udp=sum(users.values()), **kw), users)  # type: ignore[arg-type]


class Scaler:
    """Ingest, fleet and quota wired as scaler.server wires them."""

    def __init__(self, quota: int = 5, *, max_listed: int = wire.MAX_OVER_QUOTA) -> None:
        self.clock = FakeClock()
        self.fleet = FleetState(stale_after=15, expire_after=60, max_relays=1000)
        self.quota = FleetUserQuota(quota, max_listed=max_listed)
        self.ingest = ReportIngest(
            self.fleet, user_quota=self.quota, wall_clock=lambda: T0 + 10_000
        )

    def post(self, value: wire.Report) -> Answer:
        # Reports arrive over time: each a second after the one before.
        self.clock.now += 1
        return self.ingest.handle(
            content_type="application/json",
            authorization=None,
            body=wire.encode(value),
            now=self.clock(),
        )

    def over(self, value: wire.Report) -> list[str]:
        answer = self.post(value)
        assert answer.status == 202, answer.body
        over_quota = answer.body["over_quota"]
        assert isinstance(over_quota, dict) and over_quota["version"] == 1
        users = over_quota["users"]
        assert isinstance(users, list)
        return users


def test_counts_sum_across_relays_and_the_answer_lists_users_at_the_quota() -> None:
    scaler = Scaler(quota=5)
    assert scaler.over(users_report("relay-a", 1, {ALICE: 3, BOB: 1})) == []
    # Neither relay alone is at 5; together alice is.
    assert scaler.over(users_report("relay-b", 1, {ALICE: 2, ANONYMOUS: 4})) == [ALICE]
    assert scaler.quota.total(ALICE) == 5 and scaler.quota.total(BOB) == 1
    # relay-a closed one of alice's: 4 in all, under the quota again.
    assert scaler.over(users_report("relay-a", 2, {ALICE: 2, BOB: 1})) == []
    assert scaler.quota.total(ALICE) == 4
    # A user a newer snapshot no longer names has no allocations there.
    scaler.over(users_report("relay-b", 2, {}))
    assert scaler.quota.total(ANONYMOUS) == 0 and scaler.quota.users == 2


def test_the_answer_is_json_an_old_relay_can_ignore() -> None:
    scaler = Scaler(quota=1)
    answer = scaler.post(users_report("relay-a", 1, {ALICE: 1}))
    assert answer.body == {
        "result": "accepted",
        "seq": 1,
        "over_quota": {"version": 1, "users": [ALICE], "truncated": False},
    }
    # What the relay reads back: the list, and nothing else it does not know.
    quota = wire.over_quota_from(msgspec.json.encode(answer.body))
    assert quota is not None and quota.users == [ALICE]


def test_without_the_flag_answers_carry_no_list() -> None:
    fleet = FleetState(stale_after=15, expire_after=60, max_relays=10)
    ingest = ReportIngest(fleet, wall_clock=lambda: T0 + 10_000)
    answer = ingest.handle(
        content_type="application/json",
        authorization=None,
        body=wire.encode(users_report("relay-a", 1, {ALICE: 100})),
        now=0.0,
    )
    assert answer.status == 202 and "over_quota" not in answer.body


def test_a_relay_that_expires_or_is_removed_stops_counting() -> None:
    scaler = Scaler(quota=4)
    scaler.over(users_report("relay-a", 1, {ALICE: 2}))
    scaler.clock.now += 30
    assert scaler.over(users_report("relay-b", 1, {ALICE: 2})) == [ALICE]
    scaler.clock.now += 31  # relay-a silent for 61 s: expired
    assert scaler.fleet.expire(scaler.clock()) == [("stunner", "relay-a")]
    assert scaler.quota.total(ALICE) == 2
    assert scaler.over(users_report("relay-b", 2, {ALICE: 2})) == []
    assert scaler.fleet.remove("stunner", "relay-b")
    assert scaler.quota.total(ALICE) == 0 and scaler.quota.users == 0
    # A relay coming back counts its new snapshot, not what it had before it left.
    assert scaler.over(users_report("relay-a", 2, {ALICE: 1})) == []
    assert scaler.quota.total(ALICE) == 1


def test_a_restarted_relay_counts_its_new_instance_only() -> None:
    scaler = Scaler(quota=3)
    scaler.over(users_report("relay-a", 7, {ALICE: 3}, instance="old"))
    restarted = users_report("relay-a", 1, {ALICE: 1}, instance="new", started_at=T0 + 50)
    assert scaler.over(restarted) == []
    assert scaler.quota.total(ALICE) == 1
    # The old instance's late report is ignored (old_instance, 200): nothing changes.
    late = scaler.post(users_report("relay-a", 8, {ALICE: 9}, instance="old"))
    assert late.status == 200 and scaler.quota.total(ALICE) == 1


def test_repeated_and_older_reports_change_nothing() -> None:
    scaler = Scaler(quota=3)
    scaler.over(users_report("relay-a", 2, {ALICE: 1}))
    assert scaler.post(users_report("relay-a", 2, {ALICE: 1})).status == 200  # duplicate
    late = scaler.post(users_report("relay-a", 1, {ALICE: 3}))  # older seq: events only
    assert late.status == 202 and late.body["result"] == "late"
    assert scaler.quota.total(ALICE) == 1
    assert late.body["over_quota"] == {"version": 1, "users": [], "truncated": False}


def test_a_draining_relay_still_counts_its_allocations() -> None:
    scaler = Scaler(quota=2)
    assert scaler.over(users_report("relay-a", 1, {ALICE: 2}, draining=True)) == [ALICE]


def test_the_answer_is_bounded_and_lists_the_users_furthest_over() -> None:
    scaler = Scaler(quota=1, max_listed=3)
    users = {wire.user_digest(f"rest:u{n}"): n + 1 for n in range(10)}
    answer = scaler.post(users_report("relay-a", 1, users))
    over_quota = answer.body["over_quota"]
    assert isinstance(over_quota, dict)
    assert over_quota["truncated"] is True
    assert sorted(over_quota["users"]) == sorted(wire.user_digest(f"rest:u{n}") for n in (7, 8, 9))
    assert scaler.quota.over_quota == 10


def test_while_reports_keep_coming_the_sums_are_redone_at_most_every_quarter_second() -> None:
    quota = FleetUserQuota(1, timer=FakeClock(0.0))  # passes take no time
    quota.replace(("stunner", "relay-a"), wire.users_field({ALICE: 1}))
    assert quota.answer(now=10.0).users == [ALICE]
    quota.replace(("stunner", "relay-b"), wire.users_field({BOB: 1}))
    assert quota.answer(now=10.0 + REBUILD_EVERY / 2).users == [ALICE]  # not yet
    assert quota.answer(now=10.0 + REBUILD_EVERY).users == sorted([ALICE, BOB])
    quota.drop(("stunner", "relay-a"))
    assert quota.answer().users == [BOB]  # without a time: exact


def test_slow_passes_space_themselves_out_to_a_tenth_of_the_time() -> None:
    class SlowTimer:
        """Every pass seems to take 0.5 s."""

        def __init__(self) -> None:
            self.now = 0.0

        def __call__(self) -> float:
            self.now += 0.5
            return self.now

    quota = FleetUserQuota(1, timer=SlowTimer())
    quota.replace(("stunner", "relay-a"), wire.users_field({ALICE: 1}))
    assert quota.answer(now=10.0).users == [ALICE]
    quota.replace(("stunner", "relay-b"), wire.users_field({BOB: 1}))
    # 0.5 s per pass / PASS_SHARE: the next pass waits 5 s, not REBUILD_EVERY.
    assert quota.answer(now=10.0 + 0.5 / PASS_SHARE - 0.01).users == [ALICE]
    assert quota.answer(now=10.0 + 0.5 / PASS_SHARE).users == sorted([ALICE, BOB])


def test_the_largest_answer_fits_what_a_relay_reads() -> None:
    quota = FleetUserQuota(1)
    users = {wire.user_digest(f"rest:{n}"): 1 for n in range(wire.MAX_REPORTED_USERS)}
    quota.replace(("stunner", "relay-a"), wire.users_field(users))
    others = {wire.user_digest(f"rest:x{n}"): 1 for n in range(999)}
    quota.replace(("stunner", "relay-b"), wire.users_field(others))
    answer = quota.answer()
    assert len(answer.users) == wire.MAX_OVER_QUOTA and answer.truncated
    body = msgspec.json.encode({"result": "accepted", "seq": 1, "over_quota": answer})
    assert len(body) <= wire.MAX_ANSWER_BYTES


def raw_report(users: bytes) -> bytes:
    """A report whose ``state.users`` is ``users``, as raw JSON."""
    body = msgspec.json.encode(report("relay-a", udp=1))
    return body.replace(b'"state":{', b'"state":{"users":' + users + b",", 1)


@pytest.mark.parametrize(
    "users",
    [
        b'{"rest:alice": 1}',  # a name in the clear, not a digest
        b'{"' + ALICE.encode() + b'": -1}',
        b'{"' + ALICE.encode() + b'": ' + str(wire.MAX_ALLOCATIONS + 1).encode() + b"}",
        b"[1, 2]",
        msgspec.json.encode(
            {wire.user_digest(f"rest:{n}"): 1 for n in range(wire.MAX_REPORTED_USERS + 1)}
        ),
    ],
)
def test_users_that_do_not_validate_count_as_none_and_say_why(users: bytes) -> None:
    scaler = Scaler(quota=1)
    scaler.clock.now += 1
    answer = scaler.ingest.handle(
        content_type="application/json", authorization=None, body=raw_report(users), now=1.0
    )
    # The report counts (its allocations scale the fleet); its users are read when summed.
    assert answer.status == 202 and len(scaler.fleet) == 1
    assert scaler.quota.users == 0
    assert "`state.users" in scaler.quota.invalid[("stunner", "relay-a")]
    # Valid users from the same relay later count, and the complaint goes.
    assert scaler.over(users_report("relay-a", 2, {ALICE: 1})) == [ALICE]
    assert scaler.quota.invalid == {}


def test_users_over_the_byte_limit_are_refused_naming_the_field() -> None:
    scaler = Scaler()
    padded = b'{"' + ALICE.encode() + b'": 1' + b" " * wire.MAX_USERS_BYTES + b"}"
    answer = scaler.ingest.handle(
        content_type="application/json", authorization=None, body=raw_report(padded), now=0.0
    )
    assert answer.status == 400 and "`state.users`" in str(answer.body["error"])
    assert len(scaler.fleet) == 0 and scaler.quota.users == 0


def test_flag_values() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FleetUserQuota(0)
    with pytest.raises(ValueError, match="between 1 and"):
        FleetUserQuota(1, max_listed=wire.MAX_OVER_QUOTA + 1)


def test_the_gauge_counts_users_over_quota_on_the_exporting_replica_only() -> None:
    quota = FleetUserQuota(2)
    quota.replace(("stunner", "relay-a"), wire.users_field({ALICE: 2, BOB: 5, ANONYMOUS: 1}))
    leading = True
    registry = make_registry(QuotaCollector(QuotaRefusals(), quota, lambda: leading))
    text = generate_latest(registry).decode()
    assert value(text, "stunner_scaler_users_over_quota") == 2
    assert value(text, "stunner_scaler_fleet_user_quota") == 2
    assert "rest:" not in text and ALICE not in text  # no label per user
    leading = False
    assert "stunner_" not in generate_latest(registry).decode()
    # Without the flag, neither gauge.
    text = generate_latest(make_registry(QuotaCollector(QuotaRefusals()))).decode()
    assert "stunner_scaler_users_over_quota" not in text


def refusals_report(seq: int, refused: dict[str, int], **kw: object) -> wire.Report:
    base = report("relay-a", seq=seq, **kw)  # type: ignore[arg-type]
    state = msgspec.structs.replace(base.state, refused_total=refused)
    return msgspec.structs.replace(base, state=state)


def test_refusals_by_reason_are_counters_that_survive_relay_restarts() -> None:
    scaler = Scaler()
    registry = make_registry(QuotaCollector(scaler.ingest.refusals))

    def refused(reason: str) -> float | None:
        text = generate_latest(registry).decode()
        return value(
            text,
            "stunner_allocations_refused_total",
            namespace="stunner",
            gateway="stunner-gateway",
            pod="relay-a",
            reason=reason,
        )

    scaler.post(refusals_report(1, {}))
    assert refused("user_quota") == 0 and refused("fleet_user_quota") == 0  # present at 0
    scaler.post(refusals_report(2, {"user_quota": 3, "fleet_user_quota": 2}))
    assert refused("user_quota") == 3 and refused("fleet_user_quota") == 2
    scaler.post(refusals_report(1, {"user_quota": 99}))  # older seq: its snapshot is not used
    assert refused("user_quota") == 3
    # The relay restarts: its new instance counts from zero, the exported counter goes on.
    scaler.post(refusals_report(1, {"user_quota": 1}, instance="second", started_at=T0 + 60))
    assert refused("user_quota") == 4 and refused("fleet_user_quota") == 2
    # A relay that leaves has no series; back, it continues where it was.
    assert scaler.fleet.remove("stunner", "relay-a")
    assert refused("user_quota") is None
    scaler.post(refusals_report(2, {"user_quota": 2}, instance="second", started_at=T0 + 60))
    assert refused("user_quota") == 5


def test_reasons_are_label_values_so_they_are_checked() -> None:
    scaler = Scaler()
    answer = scaler.post(refusals_report(1, {'bad"label': 1}))
    assert answer.status == 400 and "state.refused_total" in str(answer.body["error"])
    many = {f"reason_{chr(97 + n)}": 1 for n in range(wire.MAX_REFUSAL_REASONS + 1)}
    assert scaler.post(refusals_report(1, many)).status == 400


# ---- any delivery order ----------------------------------------------------------

PODS = ("relay-a", "relay-b", "relay-c")
USERS = (ALICE, BOB, ANONYMOUS)


@st.composite
def relay_reports(draw: st.DrawFn, pod: str) -> list[wire.Report]:
    """One relay's reports over up to two instances, each in seq order."""
    out = []
    for index in range(draw(st.integers(1, 2))):
        for seq in range(1, draw(st.integers(1, 5)) + 1):
            users = draw(st.dictionaries(st.sampled_from(USERS), st.integers(1, 4)))
            instance = {"instance": f"i{index}", "started_at": T0 + index * 100}
            out.append(users_report(pod, seq, users, **instance))
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), quota=st.integers(1, 8))
def test_any_delivery_order_gives_the_newest_snapshots_sum(data: st.DataObject, quota: int) -> None:
    per_relay = {pod: data.draw(relay_reports(pod)) for pod in PODS}
    every = [item for reports in per_relay.values() for item in reports]
    repeats = data.draw(st.lists(st.sampled_from(every), max_size=6))
    order = data.draw(st.permutations(every + repeats))
    scaler = Scaler(quota)
    for item in order:
        assert scaler.post(item).status in (200, 202)
    # Whatever the order, each relay counts with its newest instance's newest snapshot.
    newest = {
        pod: wire.users_of(max(reports, key=lambda r: (r.relay.started_at, r.seq)).state.users)
        for pod, reports in per_relay.items()
    }
    for user in USERS:
        expected = sum(users.get(user, 0) for users in newest.values())
        assert scaler.quota.total(user) == expected
    expected_over = sorted(u for u in USERS if scaler.quota.total(u) >= quota)
    assert list(scaler.quota.answer().users) == expected_over
    # Once every relay has left, nobody counts.
    for pod in PODS:
        scaler.fleet.remove("stunner", pod)
    assert scaler.quota.users == 0 and scaler.quota.answer().users == []
