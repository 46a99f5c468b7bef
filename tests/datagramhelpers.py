"""
Fakes for the datagram services: a datagram transport whose socket records
its options, and a clock that also listens for datagrams
(C{MemoryReactor} has no UDP); and reading a real daemon's C{/metrics}.
Real processes, pollers and tools are in L{tests.support}.
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock

from tests.support import PATIENCE, Daemon

_SERIES = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class FakeSocket:
    """
    Records C{setsockopt} calls; raises the queued errors first.
    """

    def __init__(self) -> None:
        self.options: list[tuple[int, int, Any]] = []
        self.failures: list[tuple[int, OSError]] = []

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        for i, (failing, error) in enumerate(self.failures):
            if failing == option:
                del self.failures[i]
                raise error
        self.options.append((level, option, value))

    def option(self, level: int, option: int) -> Any:
        """
        The last value set for C{option}, or L{None}.
        """
        found = None
        for lv, op, value in self.options:
            if (lv, op) == (level, option):
                found = value
        return found


class FakeDatagramTransport:
    """
    A datagram transport that records what is written.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.socket = FakeSocket()
        self.host = host
        self.port = port
        self.connected: tuple[str, int] | None = None
        self.stopped = False

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append((data, addr))

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def getHandle(self) -> FakeSocket:
        return self.socket

    def getHost(self) -> Any:
        if ":" in self.host:
            return IPv6Address("UDP", self.host, self.port)
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> None:
        self.stopped = True


class FakeDatagramReactor(Clock):
    """
    A clock that also "listens" for datagrams: protocols get a
    L{FakeDatagramTransport} and their C{startProtocol} is called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str, int]] = []
        self.multicast: list[tuple[int, Any, str, int, bool]] = []
        self.transports: list[FakeDatagramTransport] = []

    def _start(self, proto: Any, interface: str, port: int) -> FakeDatagramTransport:
        transport = FakeDatagramTransport(interface or "0.0.0.0", port or 40000)
        self.transports.append(transport)
        proto.makeConnection(transport)
        return transport

    def listenUDP(
        self, port: int, proto: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeDatagramTransport:
        self.udp.append((port, proto, interface, maxPacketSize))
        return self._start(proto, interface, port)

    def listenMulticast(
        self,
        port: int,
        proto: Any,
        interface: str = "",
        maxPacketSize: int = 8192,
        listenMultiple: bool = False,
    ) -> FakeDatagramTransport:
        self.multicast.append((port, proto, interface, maxPacketSize, listenMultiple))
        return self._start(proto, interface, port)

    def resolve(self, name: str) -> Any:
        from twisted.internet.defer import fail, succeed
        from twisted.internet.error import DNSLookupError

        if name == "localhost":
            return succeed("127.0.0.1")
        return fail(DNSLookupError(name))


def fetch(daemon: Daemon, path: str = "/metrics") -> bytes:
    """
    A page of the daemon's C{--http} listener.
    """
    host, port = daemon.address("http")
    url = f"http://{host}:{port}{path}"
    with urllib.request.urlopen(url, timeout=PATIENCE) as response:
        body: bytes = response.read()
    return body


def seriesValue(exposition: bytes, name: str, **labels: str) -> float:
    """
    The value of one series in a Prometheus text exposition (0 when it is
    not there).
    """
    for line in exposition.decode().splitlines():
        match = _SERIES.match(line)
        if match is None or match[1] != name:
            continue
        if dict(_LABEL.findall(match[2] or "")) == labels:
            return float(match[3])
    return 0.0
