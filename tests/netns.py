"""A test network of Linux network namespaces: a client behind a NAT, a relay with a public
and a cluster side (a pod behind a LoadBalancer), a media server only the cluster reaches.

::

    client ──lan──▶ nat ───────public───────▶ relay ─────cluster─────▶ media
    198.18.1.2      198.18.1.1 │ 198.18.0.1   198.18.0.2 │ 198.19.0.2   198.19.0.3
                    masquerade, drops unsolicited inbound

Every address is in 198.18.0.0/15, the benchmarking range (RFC 2544 §C.2.2, RFC 6815), so the
network can never be mistaken for a real one. Every veth end lives inside a test namespace:
the root namespace's interfaces and routes are untouched, and no namespace has a route off
the machine (only the client has a default route, and it leads to the NAT, which has none).
Forwarding is enabled in the NAT namespace only; the relay does not forward, so the only way
from the client to the media server is through the relay's sockets.

The NAT is nftables (RFC 4787 terms): masquerade on the public interface (endpoint-
independent mapping as Linux does it) and conntrack filtering, so a packet from the public
side that answers nothing the client sent is dropped and counted (counter ``unsolicited``),
whether it is addressed to the LAN (forward) or to a port of the NAT with no mapping (input).
``block_udp=True`` makes it a firewall that lets only TCP out (counter ``blocked_udp``).

:func:`nat_topology` builds it under names unique to the process (``tsnat<pid>x<n>-…``) and
deletes every namespace it created on exit, even when building failed halfway; it first ends
any process still inside them (only processes in namespaces this call created). Deleting a
namespace removes its veths and nftables rules with it. Every ``ip``/``nft`` call has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from tests.tools import require_root, require_tool

T = TypeVar("T")

#: Bound on one ``ip`` or ``nft`` command.
COMMAND_TIMEOUT: Final = 10.0
#: Bound on a function run inside a namespace by :meth:`Namespace.call`.
CALL_TIMEOUT: Final = 30.0

CLIENT_LAN: Final = "198.18.1.0/24"
CLIENT: Final = "198.18.1.2"
NAT_LAN: Final = "198.18.1.1"
PUBLIC: Final = "198.18.0.0/24"
NAT_PUBLIC: Final = "198.18.0.1"
RELAY_PUBLIC: Final = "198.18.0.2"
CLUSTER: Final = "198.19.0.0/24"
RELAY_CLUSTER: Final = "198.19.0.2"
MEDIA: Final = "198.19.0.3"

#: The NAT's interfaces (names are per namespace, so they never collide across runs).
NAT_LAN_IF: Final = "lan0"
NAT_PUBLIC_IF: Final = "wan0"
#: The nftables table, the counter of dropped unsolicited inbound packets, and that of UDP
#: from the LAN dropped by a NAT that blocks UDP (``nat_topology(block_udp=True)``).
NAT_TABLE: Final = "natbox"
UNSOLICITED: Final = "unsolicited"
BLOCKED_UDP: Final = "blocked_udp"

_NAT_RULES: Final = f"""
table ip {NAT_TABLE} {{
    counter {UNSOLICITED} {{ }}
    counter {BLOCKED_UDP} {{ }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{NAT_PUBLIC_IF}" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        {{udp_rule}}
        iifname "{NAT_LAN_IF}" oifname "{NAT_PUBLIC_IF}" accept
        iifname "{NAT_PUBLIC_IF}" counter name "{UNSOLICITED}" drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        ct state established,related accept
        iifname "{NAT_PUBLIC_IF}" counter name "{UNSOLICITED}" drop
    }}
}}
"""

_CLONE_NEWNET: Final = 0x40000000  # <sched.h>; os.setns arrives only in Python 3.12
_libc = ctypes.CDLL(None, use_errno=True)
_runs = itertools.count()


class NetnsError(RuntimeError):
    """An ``ip``/``nft`` command failed or timed out; the message has its stderr."""


def run_command(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run ``argv`` (at most :data:`COMMAND_TIMEOUT` s); its stdout, or :class:`NetnsError`."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{' '.join(argv)}: no answer within {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _enter(name: str) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {name}: {os.strerror(error)}")
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Namespace:
    """One network namespace of the topology, by its ``ip netns`` name."""

    name: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this namespace (``ip netns exec`` execs it: same pid)."""
        return [require_tool("ip"), "netns", "exec", self.name, *command]

    def run(self, *command: str, stdin: str | None = None) -> str:
        """Run ``command`` inside this namespace, bounded; its stdout."""
        return run_command(self.argv(*command), stdin=stdin)

    def ip(self, *arguments: str) -> str:
        """``ip -n NAME ARGUMENTS...``."""
        return run_command([require_tool("ip"), "-n", self.name, *arguments])

    def call(self, function: Callable[[], T], timeout: float = CALL_TIMEOUT) -> T:
        """``function()`` run in a new thread inside this namespace: every socket it creates
        belongs to the namespace, and stays there when used from any thread afterwards."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                _enter(self.name)
                outcome.append(function())
            except BaseException as error:  # handed to the caller below
                failure.append(error)

        thread = threading.Thread(target=inside, name=f"in-{self.name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"a call inside {self.name} took over {timeout} s")
        if failure:
            raise failure[0]
        return outcome[0]

    async def run_async(
        self, main: Callable[[], Coroutine[Any, Any, T]], within: float = CALL_TIMEOUT
    ) -> T:
        """``asyncio.run(main())`` on a thread inside this namespace, awaited without blocking
        the caller's event loop (which may serve this namespace's peers meanwhile)."""
        return await asyncio.to_thread(self.call, lambda: asyncio.run(main()), within)

    def socket(self, kind: socket.SocketKind = socket.SOCK_DGRAM) -> socket.socket:
        """A non-blocking IPv4 socket of this namespace (for asyncio's ``sock=``)."""
        sock = self.call(lambda: socket.socket(socket.AF_INET, kind))
        sock.setblocking(False)
        return sock

    def pids(self) -> list[int]:
        """The processes running inside this namespace."""
        out = run_command([require_tool("ip"), "netns", "pids", self.name])
        return [int(pid) for pid in out.split()]


@dataclass(frozen=True, slots=True)
class NatTopology:
    """The four namespaces; the addresses are this module's constants."""

    client: Namespace
    nat: Namespace
    relay: Namespace
    media: Namespace

    @property
    def all(self) -> tuple[Namespace, ...]:
        return (self.client, self.nat, self.relay, self.media)

    def unsolicited_drops(self) -> int:
        """Packets the NAT dropped because they answered nothing sent from the LAN."""
        return self._counter(UNSOLICITED)

    def blocked_udp(self) -> int:
        """UDP packets from the LAN the NAT dropped (only ``block_udp=True`` drops any)."""
        return self._counter(BLOCKED_UDP)

    def _counter(self, name: str) -> int:
        out = self.nat.run(require_tool("nft"), "-j", "list", "counter", "ip", NAT_TABLE, name)
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                packets: int = item["counter"]["packets"]
                return packets
        raise NetnsError(f"no counter {name} in {out!r}")


def _veth(left: Namespace, left_if: str, right: Namespace, right_if: str) -> None:
    """A veth pair created directly inside both namespaces (never in the root namespace,
    where a fixed name could collide with a parallel run)."""
    left.ip("link", "add", left_if, "type", "veth", "peer", "name", right_if, "netns", right.name)
    left.ip("link", "set", left_if, "up")
    right.ip("link", "set", right_if, "up")


def _address(namespace: Namespace, interface: str, address: str, prefix: int = 24) -> None:
    namespace.ip("address", "add", f"{address}/{prefix}", "dev", interface)


def _wire(topology: NatTopology, *, block_udp: bool) -> None:
    client, nat, relay, media = topology.all
    for namespace in topology.all:
        namespace.ip("link", "set", "lo", "up")
    _veth(client, "eth0", nat, NAT_LAN_IF)
    _address(client, "eth0", CLIENT)
    _address(nat, NAT_LAN_IF, NAT_LAN)
    # The client's only way out is the NAT, a home router's LAN side.
    client.ip("route", "add", "default", "via", NAT_LAN)

    _veth(nat, NAT_PUBLIC_IF, relay, "public0")
    _address(nat, NAT_PUBLIC_IF, NAT_PUBLIC)
    _address(relay, "public0", RELAY_PUBLIC)

    _veth(relay, "cluster0", media, "eth0")
    _address(relay, "cluster0", RELAY_CLUSTER)
    _address(media, "eth0", MEDIA)

    # A new namespace may inherit forwarding from the root namespace: set it everywhere.
    for namespace in topology.all:
        forward = 1 if namespace is nat else 0
        namespace.run(require_tool("sysctl"), "-q", "-w", f"net.ipv4.ip_forward={forward}")
    # A firewall that lets only TCP out (as many corporate ones do): TURN over TCP remains.
    udp_rule = (
        f'iifname "{NAT_LAN_IF}" meta l4proto udp counter name "{BLOCKED_UDP}" drop'
        if block_udp
        else ""
    )
    nat.run(require_tool("nft"), "-f", "-", stdin=_NAT_RULES.replace("{udp_rule}", udp_rule))


def _end_processes(namespace: Namespace) -> None:
    """SIGKILL whatever still runs inside ``namespace`` (it holds the namespace alive)."""
    with contextlib.suppress(NetnsError):
        for pid in namespace.pids():
            if pid == os.getpid():
                continue  # never the test process itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def nat_topology(prefix: str = "tsnat", *, block_udp: bool = False) -> Iterator[NatTopology]:
    """Build the NAT topology (``block_udp``: the NAT forwards no UDP from the LAN); on exit
    (or a failure while building) delete every namespace created, after killing any process
    left inside them."""
    require_root()
    require_tool("ip")
    require_tool("nft")
    require_tool("sysctl")
    _sweep_abandoned(prefix)
    tag = f"{prefix}{os.getpid()}x{next(_runs)}"
    topology = NatTopology(
        *(Namespace(f"{tag}-{role}") for role in ("client", "nat", "relay", "media"))
    )
    created: list[Namespace] = []
    try:
        for namespace in topology.all:
            run_command([require_tool("ip"), "netns", "add", namespace.name])
            created.append(namespace)
        _wire(topology, block_udp=block_udp)
        yield topology
    except BaseException:
        _delete(created)
        raise
    errors = _delete(created)
    if errors:
        raise NetnsError("; ".join(errors))


def _sweep_abandoned(prefix: str) -> None:
    """Delete namespaces a killed test process left behind: those named by this module whose
    process is gone and inside which nothing runs (anything else is left alone)."""
    listed = run_command([require_tool("ip"), "netns", "list"])
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{re.escape(prefix)}(\d+)x\d+-[a-z]+", name)
        if match is None or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(NetnsError):
            if not Namespace(name).pids():
                run_command([require_tool("ip"), "netns", "delete", name])


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete(namespaces: Sequence[Namespace]) -> list[str]:
    """Delete ``namespaces`` (their processes killed first); the errors, so that a failing
    deletion neither hides the test's own failure nor stops the other deletions."""
    for namespace in namespaces:
        _end_processes(namespace)
    errors = []
    for namespace in namespaces:
        try:
            run_command([require_tool("ip"), "netns", "delete", namespace.name])
        except NetnsError as error:
            errors.append(str(error))
    return errors
