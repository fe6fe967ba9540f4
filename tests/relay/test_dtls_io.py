"""An established DTLS session's application data (relay.net.dtls_io), through OpenSSL's
functions directly and through pyOpenSSL's public methods: the same results either way,
with a real client session on a real listener."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

from relay.core.certs import TlsFiles
from relay.net.dtls import DtlsSession
from relay.net.dtls_io import (
    PLAINTEXT_MAX,
    DirectRecords,
    PublicRecords,
    Records,
    SessionEnded,
    records_for,
)
from tests.relay.servers import address, running, until
from tests.relay.test_dtls import dtls_config, listener
from tests.relay.tls_helpers import Authority, DtlsChannel, Leaf, dtls_handshake

_lib = Binding().lib


@pytest.fixture
async def session(
    served: tuple[TlsFiles, Leaf], authority: Authority
) -> AsyncIterator[tuple[DtlsSession, DtlsChannel]]:
    """The relay's side of a fresh session, and the client's."""
    async with running(dtls_config(served[0])) as server:
        client = await dtls_handshake(address(server, "dtls"), authority)
        try:
            await until(lambda: any(s.established for s in listener(server).sessions.values()))
            (relay_side,) = listener(server).sessions.values()
            yield relay_side, client
        finally:
            client.close()


def record_from(client: DtlsChannel, plaintext: bytes) -> bytes:
    client.connection.send(plaintext)
    return client.connection.bio_read(65536)


def opened_by(client: DtlsChannel, record: bytes | memoryview) -> bytes:
    client.connection.bio_write(bytes(record))
    return client.connection.recv(65536)


@pytest.fixture(params=[True, False], ids=["direct", "public"])
def records(request: pytest.FixtureRequest, session: tuple[DtlsSession, DtlsChannel]) -> Records:
    return records_for(session[0].connection, direct=request.param)


def test_the_direct_path_is_taken_where_pyopenssl_has_the_pointers(
    session: tuple[DtlsSession, DtlsChannel],
) -> None:
    connection = session[0].connection
    assert isinstance(records_for(connection), DirectRecords)
    assert isinstance(records_for(connection, direct=False), PublicRecords)
    assert isinstance(session[0].records, DirectRecords)  # what the listener gave it


def test_records_open_and_seal_both_ways(
    records: Records, session: tuple[DtlsSession, DtlsChannel]
) -> None:
    _, client = session
    for size in (4, 200, 1200, PLAINTEXT_MAX):
        message = bytes(range(256)) * (size // 256) + b"m" * (size % 256)
        plain = records.open(record_from(client, message))
        assert plain is not None and bytes(plain) == message
        sealed = records.seal(message)
        assert sealed is not None
        assert opened_by(client, sealed) == message
    assert records.seal(b"") is None  # nothing to send: no empty record
    assert _lib.ERR_peek_error() == 0


def test_a_copy_of_a_plaintext_outlives_the_next_record(
    records: Records, session: tuple[DtlsSession, DtlsChannel]
) -> None:
    _, client = session
    first = records.open(record_from(client, b"first message"))
    assert first is not None
    kept = bytes(first)
    second = records.open(record_from(client, b"second"))
    assert second is not None and bytes(second) == b"second"
    assert kept == b"first message"


def test_replayed_and_tampered_records_are_discarded_and_the_session_goes_on(
    records: Records, session: tuple[DtlsSession, DtlsChannel]
) -> None:
    _, client = session
    record = record_from(client, b"once")
    assert bytes(records.open(record) or b"") == b"once"
    assert records.open(record) is None  # a replay (RFC 6347 §4.1.2.6)
    tampered = bytearray(record_from(client, b"tampered"))
    tampered[-1] ^= 0x01  # the AEAD tag no longer matches
    assert records.open(bytes(tampered)) is None
    assert records.open(b"\x17\xfe\xfd" + bytes(10)) is None  # a record cut short
    assert _lib.ERR_peek_error() == 0  # nothing left for the next call on this thread
    assert bytes(records.open(record_from(client, b"still here")) or b"") == b"still here"


def test_close_notify_ends_the_session_cleanly(
    records: Records, session: tuple[DtlsSession, DtlsChannel]
) -> None:
    _, client = session
    with contextlib.suppress(SSL.Error):  # no answer to wait for: the record is what counts
        client.connection.shutdown()
    close_notify = client.connection.bio_read(65536)
    with pytest.raises(SessionEnded) as ended:
        records.open(close_notify)
    assert ended.value.clean
    assert _lib.ERR_peek_error() == 0
