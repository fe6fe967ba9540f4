"""Report ingest with plain values (no aiohttp): every rule's answer, its count, and that a
rejected report changes nothing (:mod:`scaler.ingest`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from scaler import wire
from scaler.binding import PodBinding
from scaler.fleet import FleetState
from scaler.ingest import RESULTS, Answer, ReportIngest
from scaler.kube.pods import PodInfo, PodView
from tests.reports import T0, as_dict, as_json, created, deleted, report

JSON = "application/json"
NOW = 100.0
#: The scaler's wall clock in these tests: a while after the reports' start (T0).
WALL = T0 + 1000.0


def new_ingest(
    token: str | None = None, max_relays: int = 10, binding: PodBinding | None = None
) -> ReportIngest:
    return ReportIngest(
        FleetState(stale_after=15.0, expire_after=60.0, max_relays=max_relays),
        token,
        binding=binding,
        wall_clock=lambda: WALL,
    )


def handle(
    ingest: ReportIngest,
    body: bytes | None,
    *,
    content_type: str = JSON,
    authorization: str | None = None,
    now: float = NOW,
) -> Answer:
    return ingest.handle(
        content_type=content_type, authorization=authorization, body=body, now=now, peer="10.0.0.7"
    )


def fleet_state(fleet: FleetState) -> Any:
    """Everything a report can change in the fleet, comparable with ``==``."""
    relays = {
        key: (
            relay.identity,
            relay.state,
            relay.draining,
            relay.seq,
            relay.last_seen,
            relay.seen_window,
            relay.totals(),
            dict(relay.created),
            dict(relay.deleted),
        )
        for relay in fleet.relays()
        for key in [(relay.identity.namespace, relay.identity.pod)]
    }
    durations = {key: (tuple(h.buckets), h.count, h.total) for key, h in fleet.durations()}
    return relays, durations, fleet.generation, len(fleet), fleet.gateways()


def counts(ingest: ReportIngest) -> dict[str, int]:
    """The non-zero ``turnscale_reports_total{result}`` counts."""
    return {result: n for result, n in ingest.stats.reports.items() if n}


def busy_ingest(token: str | None = None, max_relays: int = 10) -> ReportIngest:
    """An ingest whose fleet holds relay-a (seq 2, events counted) and relay-b."""
    ingest = new_ingest(token, max_relays)
    auth = f"Bearer {token}" if token else None
    first = report(seq=2, udp=5, received={"client": 100}, events=[created(), deleted()])
    for item in (first, report("relay-b", udp=1)):
        assert handle(ingest, as_json(item), authorization=auth).status == 202
    return ingest


# ---- accepted reports --------------------------------------------------------------------


def test_a_new_relay_is_accepted_and_its_events_counted() -> None:
    ingest = new_ingest()
    answer = handle(ingest, as_json(report(seq=3, udp=4, events=[created(), deleted()])))
    assert answer == Answer(202, {"result": "accepted", "seq": 3})
    assert counts(ingest) == {"accepted": 1}
    assert ingest.stats.events == 2
    relay = ingest.fleet.get("stunner", "relay-a")
    assert relay is not None
    assert (relay.seq, relay.allocations, relay.last_seen) == (3, 4, NOW)


def test_a_newer_seq_is_accepted_and_replaces_the_snapshot() -> None:
    ingest = busy_ingest()
    answer = handle(ingest, as_json(report(seq=3, udp=9, received={"client": 150})), now=NOW + 5)
    assert answer == Answer(202, {"result": "accepted", "seq": 3})
    assert counts(ingest) == {"accepted": 3}
    assert ingest.stats.events == 2
    relay = ingest.fleet.get("stunner", "relay-a")
    assert relay is not None
    assert (relay.allocations, relay.last_seen) == (9, NOW + 5)


def test_a_late_report_counts_its_events_but_not_its_snapshot() -> None:
    ingest = busy_ingest()
    answer = handle(ingest, as_json(report(seq=1, udp=77, events=[created("a9")])))
    assert answer == Answer(202, {"result": "late", "seq": 1})
    assert counts(ingest) == {"accepted": 2, "late": 1}
    assert ingest.stats.events == 3
    relay = ingest.fleet.get("stunner", "relay-a")
    assert relay is not None
    assert (relay.seq, relay.allocations, relay.created) == (2, 5, {"udp": 2})


def test_a_duplicate_is_200_and_counts_nothing_else() -> None:
    ingest = busy_ingest()
    before = fleet_state(ingest.fleet)
    answer = handle(ingest, as_json(report(seq=2, udp=99, events=[created("a9")])), now=NOW + 1)
    assert answer == Answer(200, {"result": "duplicate", "seq": 2})
    assert counts(ingest) == {"accepted": 2, "duplicate": 1}
    assert ingest.stats.events == 2
    assert fleet_state(ingest.fleet) == before


def test_an_older_instance_is_200_old_instance_and_changes_nothing() -> None:
    ingest = busy_ingest()
    before = fleet_state(ingest.fleet)
    older = report(seq=9, instance="old", started_at=1e9, udp=3, events=[created("a9")])
    assert handle(ingest, as_json(older)) == Answer(200, {"result": "old_instance", "seq": 9})
    assert counts(ingest) == {"accepted": 2, "old_instance": 1}
    assert ingest.stats.events == 2
    assert fleet_state(ingest.fleet) == before


def test_the_right_token_is_accepted_in_any_scheme_case() -> None:
    ingest = new_ingest(token="secret")
    for seq, authorization in enumerate(("Bearer secret", "bearer secret", "Bearer  secret "), 1):
        answer = handle(ingest, as_json(report(seq=seq)), authorization=authorization)
        assert answer.status == 202, authorization
    assert counts(ingest) == {"accepted": 3}


def test_json_content_type_in_any_case_is_accepted() -> None:
    ingest = new_ingest()
    assert handle(ingest, as_json(report()), content_type="Application/JSON").status == 202


# ---- rejected reports ------------------------------------------------------------------------


def _changed(mutate: Any) -> bytes:
    body = as_dict(report("relay-a", seq=3, udp=1, events=[created("a7")]))
    mutate(body)
    return json.dumps(body).encode()


def _set(**fields: Any) -> Any:
    return lambda body: body.update(fields)


def _set_in(section: str, **fields: Any) -> Any:
    return lambda body: body[section].update(fields)


REJECTED = [
    # 400: not JSON, not a report, a version this scaler does not speak, a field that
    # breaks the contract, totals that went down within one instance.
    pytest.param(b"{not json", {}, 400, "invalid", "malformed JSON", id="400-malformed-json"),
    pytest.param(b"[]", {}, 400, "invalid", "Expected `object`", id="400-not-an-object"),
    pytest.param(
        _changed(_set(version=2)), {}, 400, "invalid", "unsupported version 2", id="400-version"
    ),
    pytest.param(_changed(_set(seq=0)), {}, 400, "invalid", "`seq`", id="400-field-bounds"),
    pytest.param(
        _changed(_set_in("relay", pod="Relay_A")),
        {},
        400,
        "invalid",
        "`relay.pod`",
        id="400-field-pattern",
    ),
    pytest.param(
        _changed(lambda body: body.pop("state")),
        {},
        400,
        "invalid",
        "`state`",
        id="400-missing-field",
    ),
    pytest.param(
        as_json(report(seq=3, received={"client": 1})),
        {},
        400,
        "invalid",
        "bytes_received_total.client",
        id="400-totals-went-down",
    ),
    # 401, 415 and 413 come before the body is even decoded.
    pytest.param(
        as_json(report(seq=3)),
        {"authorization": None},
        401,
        "unauthorized",
        "bearer token",
        id="401-missing",
    ),
    pytest.param(
        as_json(report(seq=3)),
        {"authorization": "Bearer wrong"},
        401,
        "unauthorized",
        "bearer token",
        id="401-wrong",
    ),
    pytest.param(
        as_json(report(seq=3)),
        {"authorization": "Basic c2VjcmV0"},
        401,
        "unauthorized",
        "bearer token",
        id="401-scheme",
    ),
    pytest.param(
        b"{not json",
        {"authorization": None, "content_type": "text/plain"},
        401,
        "unauthorized",
        "bearer token",
        id="401-before-415",
    ),
    pytest.param(
        as_json(report(seq=3)),
        {"content_type": "text/plain"},
        415,
        "unsupported_media_type",
        "not 'text/plain'",
        id="415-text",
    ),
    pytest.param(
        as_json(report(seq=3)),
        {"content_type": ""},
        415,
        "unsupported_media_type",
        "not 'missing'",
        id="415-missing",
    ),
    pytest.param(
        None,
        {"content_type": "text/plain"},
        415,
        "unsupported_media_type",
        "application/json",
        id="415-before-413",
    ),
    pytest.param(None, {}, 413, "too_large", "1048576-byte limit", id="413-over-the-limit"),
    pytest.param(
        b" " * (wire.MAX_BODY_BYTES + 1),
        {},
        413,
        "too_large",
        "1048576-byte limit",
        id="413-body-too-long",
    ),
    # 400: timestamps from the future (a forged "newer instance" would take the pod over).
    pytest.param(
        as_json(report(seq=3, instance="forged", started_at=WALL + 6.0)),
        {},
        400,
        "invalid",
        "at `relay.started_at` is more than 5 s ahead of the scaler's clock",
        id="400-started-in-the-future",
    ),
    pytest.param(
        _changed(_set(sent_at=WALL + 3600.0)),
        {},
        400,
        "invalid",
        "at `sent_at` is more than 5 s ahead of the scaler's clock",
        id="400-sent-in-the-future",
    ),
    # 503: a relay the fleet has no room for (max_relays=2, relay-a and relay-b tracked).
    pytest.param(
        as_json(report("relay-c", udp=1)),
        {},
        503,
        "fleet_full",
        "--max-relays",
        id="503-max-relays",
    ),
]


@pytest.mark.parametrize(("body", "options", "status", "result", "says"), REJECTED)
def test_a_rejected_report_is_answered_counted_logged_and_changes_nothing(
    body: bytes | None, options: dict[str, Any], status: int, result: str, says: str
) -> None:
    # Relays must send a token here: the right one unless the case says otherwise.
    ingest = busy_ingest("secret", max_relays=2)
    options = {"authorization": "Bearer secret", **options}
    before = fleet_state(ingest.fleet)
    with capture_logs() as logs:
        answer = handle(ingest, body, now=NOW + 30, **options)
    assert answer.status == status
    assert set(answer.body) == {"error"}
    assert says in str(answer.body["error"])
    assert counts(ingest) == {"accepted": 2, result: 1}
    assert ingest.stats.events == 2
    assert fleet_state(ingest.fleet) == before
    assert logs == [
        {
            "event": "report rejected",
            "log_level": "warning",
            "status": status,
            "result": result,
            "error": answer.body["error"],
            "peer": "10.0.0.7",
        }
    ]


def test_every_result_is_one_the_metrics_export() -> None:
    assert set(RESULTS) == {
        "accepted",
        "late",
        "duplicate",
        "old_instance",
        "invalid",
        "unauthorized",
        "too_large",
        "unsupported_media_type",
        "fleet_full",
        "forbidden",
        "unknown_pod",
    }
    # ... and each rejection's result has its case above.
    rejected = {param.values[3] for param in REJECTED}
    rejected |= {param.values[2] for param in BOUND_REJECTED}
    assert rejected | {"accepted", "late", "duplicate", "old_instance"} == set(RESULTS)


def test_a_known_relay_still_reports_while_the_fleet_is_full() -> None:
    ingest = busy_ingest(max_relays=2)
    assert handle(ingest, as_json(report("relay-c", udp=1))).status == 503
    answer = handle(ingest, as_json(report("relay-b", seq=2, udp=4)))
    assert answer == Answer(202, {"result": "accepted", "seq": 2})
    assert counts(ingest) == {"accepted": 3, "fleet_full": 1}
    assert len(ingest.fleet) == 2


# ---- reports bound to pods (--kubernetes) ----------------------------------------------------


def pod(name: str, *ips: str, namespace: str = "stunner") -> PodInfo:
    return PodInfo(namespace, name, f"uid-{name}", "Running", True, False, None, ips)


def bound_ingest(max_relays: int = 10) -> tuple[ReportIngest, PodView]:
    """Pods relay-a (10.0.0.7) and relay-b (10.0.0.8 and fd00::8) in the watched namespace;
    relay-a reports, as the watch and the fleet know it."""
    view = PodView()
    view.namespace = "stunner"
    view.replace([pod("relay-a", "10.0.0.7"), pod("relay-b", "10.0.0.8", "fd00::8")])
    ingest = new_ingest(max_relays=max_relays, binding=PodBinding(view))
    assert handle(ingest, as_json(report(udp=5))).status == 202
    return ingest, view


BOUND_REJECTED = [
    pytest.param(
        as_json(report("relay-b", udp=90)),
        403,
        "forbidden",
        "from 10.0.0.7, which is not that pod's IP",
        id="403-another-pods-name",
    ),
    pytest.param(
        as_json(report("relay-a", namespace="other", udp=90)),
        403,
        "forbidden",
        "is not the watched namespace 'stunner'",
        id="403-another-namespace",
    ),
    pytest.param(
        as_json(report("relay-z", udp=90)),
        503,
        "unknown_pod",
        "not (yet) known to the scaler's pod watch; retry",
        id="503-unknown-pod",
    ),
]


@pytest.mark.parametrize(("body", "status", "result", "says"), BOUND_REJECTED)
def test_a_report_not_from_the_pod_it_names_is_refused_and_changes_nothing(
    body: bytes, status: int, result: str, says: str
) -> None:
    ingest, _ = bound_ingest()
    before = fleet_state(ingest.fleet)
    answer = handle(ingest, body)  # every report here comes from 10.0.0.7 (relay-a)
    assert (answer.status, answer.body) == (status, {"error": answer.body["error"]})
    assert says in str(answer.body["error"])
    assert counts(ingest) == {"accepted": 1, result: 1}
    assert fleet_state(ingest.fleet) == before


def test_a_pod_reports_from_any_of_its_ips_in_any_notation() -> None:
    ingest, _ = bound_ingest()
    for seq, peer in enumerate(("10.0.0.8", "::ffff:10.0.0.8", "fd00::8", "fd00:0::8"), 1):
        answer = ingest.handle(
            content_type=JSON,
            authorization=None,
            body=as_json(report("relay-b", seq=seq, udp=seq)),
            now=NOW,
            peer=peer,
        )
        assert answer.status == 202, peer
    refused = ingest.handle(
        content_type=JSON,
        authorization=None,
        body=as_json(report("relay-b", seq=9)),
        now=NOW,
        peer=None,
    )
    assert refused.status == 403


def test_a_forged_newer_instance_cannot_take_a_pod_over() -> None:
    ingest, _ = bound_ingest()
    # The forger knows the token (every relay does) but is not relay-a's pod.
    forged = report("relay-a", instance="forged", started_at=WALL, udp=0)
    answer = ingest.handle(
        content_type=JSON, authorization=None, body=as_json(forged), now=NOW, peer="10.9.9.9"
    )
    assert answer.status == 403
    assert ingest.fleet.select("stunner-gateway", "stunner").allocations == 5
    # The real relay keeps reporting as before.
    real = handle(ingest, as_json(report(seq=2, udp=6)))
    assert real == Answer(202, {"result": "accepted", "seq": 2})


def test_max_relays_never_locks_out_a_pod_the_watch_knows() -> None:
    ingest, view = bound_ingest(max_relays=1)
    view.apply("ADDED", pod("relay-c", "10.0.0.7"))
    answer = handle(ingest, as_json(report("relay-c", udp=2)))
    assert answer.status == 202
    assert len(ingest.fleet) == 2


def test_rejections_are_logged_at_most_once_a_second_per_result() -> None:
    clock = [0.0]
    ingest = ReportIngest(
        FleetState(stale_after=15.0, expire_after=60.0, max_relays=10),
        wall_clock=lambda: WALL,
        log_clock=lambda: clock[0],
    )
    with capture_logs() as logs:
        for _ in range(5):
            handle(ingest, b"{not json")
        handle(ingest, as_json(report()), content_type="text/plain")  # another result
        clock[0] = 1.5
        handle(ingest, b"{not json")
    assert [(entry["result"], entry.get("suppressed")) for entry in logs] == [
        ("invalid", None),
        ("unsupported_media_type", None),
        ("invalid", 4),
    ]
    assert counts(ingest) == {"invalid": 6, "unsupported_media_type": 1}  # all counted


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["relay-a", "relay-b", "relay-z"]),
            st.sampled_from(["10.0.0.7", "10.0.0.8", "::ffff:10.0.0.8", "10.9.9.9", None]),
            st.sampled_from([0.0, 4.0, 6.0, 3600.0]),  # seconds ahead of the wall clock
        ),
        max_size=25,
    )
)
def test_only_a_pods_own_reports_from_its_own_ip_and_not_from_the_future_ever_count(
    sent: list[tuple[str, str | None, float]],
) -> None:
    ingest, _ = bound_ingest()
    own = {"relay-a": {"10.0.0.7"}, "relay-b": {"10.0.0.8", "::ffff:10.0.0.8"}}
    counted = {"relay-a": 5}
    for seq, (pod_name, peer, ahead) in enumerate(sent, 2):
        before = fleet_state(ingest.fleet)
        body = report(pod_name, seq=seq, instance=f"i{seq}", started_at=WALL + ahead, udp=seq)
        answer = ingest.handle(
            content_type=JSON, authorization=None, body=as_json(body), now=NOW, peer=peer
        )
        if answer.status == 202:
            assert peer in own.get(pod_name, set()) and ahead <= 5.0
            counted[pod_name] = seq
        else:
            assert fleet_state(ingest.fleet) == before
    for pod_name, allocations in counted.items():
        relay = ingest.fleet.get("stunner", pod_name)
        assert relay is not None and relay.allocations == allocations
    assert ingest.fleet.get("stunner", "relay-z") is None
