"""Readiness checks and the sweeper, as the server owns them."""

from __future__ import annotations

import asyncio

import pytest

from scaler.readiness import Check, Readiness
from scaler.server import ScalerServer
from tests.reports import as_json, report
from tests.scaler.helpers import FakeClock, scaler_config
from tests.waiting import eventually


def test_advisory_checks_are_shown_but_never_make_the_scaler_unready() -> None:
    readiness = Readiness(Check("http"), Check("grpc"), Check("kubernetes", advisory=True))
    assert readiness.checks() == {"http": False, "grpc": False, "kubernetes": False}
    assert not readiness.ready
    readiness["http"].ok = readiness["grpc"].ok = True
    assert readiness.ready
    readiness["kubernetes"].ok = True
    assert readiness.checks() == {"http": True, "grpc": True, "kubernetes": True}
    readiness["kubernetes"].ok = False
    assert readiness.ready
    readiness["grpc"].ok = False
    assert not readiness.ready
    readiness.fail_all()
    assert readiness.checks() == {"http": False, "grpc": False, "kubernetes": False}


def test_check_names_are_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Readiness(Check("http"), Check("http", advisory=True))
    with pytest.raises(KeyError):
        Readiness(Check("http"))["grpc"]


def test_a_server_declares_its_listeners_checks() -> None:
    assert ScalerServer(scaler_config()).readiness.checks() == {"http": False, "grpc": False}


async def test_the_servers_sweeper_expires_silent_relays_while_it_runs() -> None:
    clock = FakeClock()
    server = ScalerServer(scaler_config(), clock)
    server.sweeper.interval = 0.01
    answer = server.service.submit_report(
        content_type="application/json", authorization=None, body=as_json(report()), peer=None
    )
    assert answer.status == 202
    await server.start()
    try:
        clock.now += 61.0  # past --expire-after
        await eventually(lambda: len(server.service.fleet) == 0, "relay expired")
    finally:
        await server.stop()
    server.service.submit_report(
        content_type="application/json",
        authorization=None,
        body=as_json(report("relay-b")),
        peer=None,
    )
    clock.now += 61.0
    await asyncio.sleep(0.05)
    assert len(server.service.fleet) == 1  # stopped with the server
