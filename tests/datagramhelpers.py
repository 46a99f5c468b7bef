"""
Test helpers for the datagram services: a fake datagram transport and
reactor (C{MemoryReactor} has no UDP), and a real C{twistd} child process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

_LISTENING = re.compile(
    r"(?P<service>[\w-]+): listening on (?P<address>\S+) \((?P<description>.*)\)$"
)


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


def twistdPath() -> str:
    """
    The C{twistd} next to the Python running the tests.
    """
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else "twistd"


class Twistd:
    """
    A C{twistd -n --pidfile= netdemo ARGS} child logging to a file,
    optionally inside a network namespace.
    """

    def __init__(
        self,
        args: list[str],
        netns: str | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            "w+", prefix="netdemo-", suffix=".log", delete=False
        )
        command = [*(command or []), twistdPath(), "-n", "--pidfile=", "netdemo", *args]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def text(self) -> str:
        """
        The log so far.
        """
        return Path(self.log.name).read_text(errors="replace")

    def waitFor(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list[Any]:
        """
        Wait until C{pattern} matches C{count} lines of the log.

        @return: The matches.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = [m for m in map(regex.search, self.text().splitlines()) if m]
            if len(matches) >= count:
                return matches
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not logged {count} times "
                    f"(exit {self.process.poll()}):\n{self.text()[-3000:]}"
                )
            time.sleep(0.05)

    def listening(self, service: str, count: int = 1) -> list[str]:
        """
        The addresses C{service} logged it listens on.
        """
        found = self.waitFor(rf"{service}: listening on (\S+) \(", count=count)
        return [m.group(1) for m in found]

    def stop(self) -> int:
        """
        SIGTERM the daemon and wait for it.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def close(self) -> None:
        """
        Stop and remove the log.
        """
        self.stop()
        self.log.close()
        os.unlink(self.log.name)


def splitAddress(address: str) -> tuple[str, int]:
    """
    C{host:port} or C{[v6]:port} to a tuple.
    """
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def waitUntil(predicate: Any, timeout: float = 15.0) -> Deferred[None]:
    """
    Fire when C{predicate()} is true, polling every 50 ms on the real
    reactor; fail after C{timeout} seconds.
    """
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    deadline = time.monotonic() + timeout

    def check() -> None:
        if predicate():
            d.callback(None)
        elif time.monotonic() > deadline:
            d.errback(AssertionError("condition not met in time"))
        else:
            reactor.callLater(0.05, check)  # type: ignore[attr-defined]

    check()
    return d
