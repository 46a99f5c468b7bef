"""
Hub fixtures for the pub/sub tests: in memory (L{FakeHub}: a
L{PubSubFactory} on a L{MemoryReactorClock}, clients on
L{StringTransport}s), and in this process on real loopback sockets
(L{LoopbackHub}, with raw L{Watcher} clients).
"""

from __future__ import annotations

import re
import select
import socket
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from netdemo.hubwire import LineBuffer
from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from netdemo.pubsub import PubSubFactory, PubSubProtocol
from netdemo.stream import StreamService
from tests.support import PATIENCE, poll, waitUntil


def hubFactory(
    metrics: MemoryMetrics,
    clock: Any,
    hubLimits: HubLimits | None = None,
    limits: ConnectionLimits | None = None,
    auth: Any = None,
    backplane: Any = None,
) -> PubSubFactory:
    """
    A hub named C{pubsub}, with the default limits unless given (and the
    accounts C{auth}, an L{netdemo.hubauth.AccountsFile}, and a backplane,
    if given).
    """
    return PubSubFactory(
        "pubsub",
        limits or ConnectionLimits(),
        hubLimits or HubLimits(),
        metrics,
        clock,
        backplane,
        auth=auth,
    )


class ClosingTransport(StringTransport):
    """
    A L{StringTransport} that tells its protocol when it is closed, as a
    real transport would once its buffer is flushed.
    """

    protocol: PubSubProtocol
    connected = True
    writes = 0

    def write(self, data: bytes) -> None:
        """
        Take data, and count the writes.
        """
        self.writes += 1
        super().write(data)

    def loseConnection(self) -> None:
        """
        Close, and tell the protocol at once.
        """
        super().loseConnection()
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(Failure(ConnectionError("closed")))

    def abortConnection(self) -> None:
        """
        Abort: as L{loseConnection}, and remember it.
        """
        self.aborted = True
        self.loseConnection()


class PacedTransport(ClosingTransport):
    """
    A L{ClosingTransport} that pauses its producer once more than C{window}
    bytes were written that the client has not read, as a real transport
    does once the kernel takes no more, and resumes it when the client
    reads everything (L{drain}).
    """

    window = 64 * 1024
    paused = False
    _read = 0

    def write(self, data: bytes) -> None:
        """
        Take data; pause the producer when too much is unread.
        """
        super().write(data)
        unread = len(self.io.getvalue()) - self._read
        if unread > self.window and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> int:
        """
        The client reads everything written so far: resume the producer (it
        may write more at once).

        @return: The bytes read.
        """
        total = len(self.io.getvalue())
        read, self._read = total - self._read, total
        if self.paused:
            self.paused = False
            if self.producer is not None:
                self.producer.resumeProducing()
        return read


class FakeClient:
    """
    One client of an in-memory hub.
    """

    def __init__(self, protocol: PubSubProtocol, transport: ClosingTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._seen = 0

    def send(self, data: bytes) -> None:
        """
        Deliver bytes from the client to the hub.
        """
        self.protocol.dataReceived(data)

    def received(self) -> list[bytes]:
        """
        Every line the hub sent so far (without LF).
        """
        return self.transport.value().split(b"\n")[:-1]

    def new(self) -> list[bytes]:
        """
        The lines sent since the last call.
        """
        lines = self.received()
        fresh = lines[self._seen :]
        self._seen = len(lines)
        return fresh

    @property
    def identity(self) -> bytes:
        """
        The identity the hub shows for this client.
        """
        return self.protocol.identity

    @property
    def closed(self) -> bool:
        """
        Whether the hub closed the connection.
        """
        return not self.transport.connected


class FakeHub:
    """
    A hub with a fake clock and in-memory connections.
    """

    def __init__(
        self,
        hubLimits: HubLimits | None = None,
        limits: ConnectionLimits | None = None,
        auth: Any = None,
        metrics: MemoryMetrics | None = None,
        backplane: Any = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.metrics = metrics or MemoryMetrics()
        self.factory = hubFactory(
            self.metrics, self.clock, hubLimits, limits, auth, backplane
        )
        # The per-turn time budget reads a frozen clock (a test that needs
        # time to pass sets its own): on a busy machine, real time would end
        # turns where a test counts lines.
        self.factory.timer = lambda: 0.0
        self.factory.startFactory()
        self._port = 40000

    def connect(
        self, transportType: type[ClosingTransport] = ClosingTransport
    ) -> FakeClient:
        """
        Connect one more client.
        """
        self._port += 1
        addr = IPv4Address("TCP", "127.0.0.1", self._port)
        protocol = self.factory.buildProtocol(addr)
        assert isinstance(protocol, PubSubProtocol)
        transport = transportType(peerAddress=addr)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return FakeClient(protocol, transport)

    def stop(self) -> None:
        """
        Stop the factory's timers.
        """
        self.factory.stopFactory()


class Watcher(Protocol):
    """
    A raw hub client on the running reactor, for the tests' side: sends
    lines, collects every line it gets.

    @ivar identity: Its identity, once greeted.
    """

    identity = b""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._buffer = LineBuffer()
        self.gone: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.lines.extend(self._buffer.feed(data))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone.callback(None)

    def send(self, line: bytes) -> None:
        """
        Send one line.
        """
        self.transport.write(line + b"\n")  # type: ignore[union-attr]

    def starting(self, prefix: bytes) -> list[bytes]:
        """
        The lines received that start with C{prefix}.
        """
        return [line for line in self.lines if line.startswith(prefix)]

    async def waitFor(self, prefix: bytes, count: int = 1) -> list[bytes]:
        """
        Wait until C{count} lines starting with C{prefix} arrived.

        @return: Those lines.
        """
        await waitUntil(
            lambda: len(self.starting(prefix)) >= count,
            f"{count} lines starting with {prefix!r}; got {self.lines[-5:]!r}",
        )
        return self.starting(prefix)

    async def command(self, line: bytes, answer: bytes) -> None:
        """
        Send a command and wait for its answer (C{answer} starts it).
        """
        before = len(self.starting(answer))
        self.send(line)
        await self.waitFor(answer, before + 1)

    async def close(self) -> None:
        """
        Close the connection and wait until it is closed.
        """
        if not self.gone.called:
            self.transport.loseConnection()  # type: ignore[union-attr]
            await self.gone


class LoopbackHub:
    """
    A hub in this process, on the running reactor, listening on 127.0.0.1
    (and on ::1 when asked) on ports it bound itself.

    @ivar target: C{127.0.0.1:PORT}.
    @ivar target6: C{[::1]:PORT}, when listening on ::1.
    """

    def __init__(
        self,
        hubLimits: HubLimits | None = None,
        limits: ConnectionLimits | None = None,
        ipv6: bool = False,
        clock: Any = None,
        auth: Any = None,
    ) -> None:
        """
        @param clock: The hub's clock (its timeouts, deadlines and sweeps);
            the reactor unless given.
        @param auth: The hub's accounts (an L{netdemo.hubauth.AccountsFile}),
            if any.
        """
        from twisted.internet import reactor

        descriptions = ["tcp:0:interface=127.0.0.1"]
        if ipv6:
            descriptions.append(r"tcp6:0:interface=\:\:1")
        self.metrics = MemoryMetrics()
        self.factory = hubFactory(
            self.metrics, reactor if clock is None else clock, hubLimits, limits, auth
        )
        self.service = StreamService("pubsub", self.factory, descriptions, reactor)
        self.watchers: list[Watcher] = []
        self.target = self.target6 = ""
        self.port = 0

    async def start(self) -> LoopbackHub:
        """
        Listen.
        """
        self.service.startService()
        listening = await self.service.whenListening()
        assert listening, "the hub could not listen"
        for port in self.service.ports:
            address: Any = port.getHost()
            if address.host == "::1":
                self.target6 = f"[::1]:{address.port}"
            else:
                self.port = address.port
                self.target = f"127.0.0.1:{self.port}"
        return self

    async def watcher(self, *patterns: bytes) -> Watcher:
        """
        A raw client, subscribed to C{patterns} when this returns.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        client = Watcher()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        await connectProtocol(endpoint, client)
        self.watchers.append(client)
        [greeting] = await client.waitFor(b"* welcome")
        client.identity = greeting.split(b"you are ")[1].split(b" ")[0]
        for pattern in patterns:
            await client.command(b"/sub " + pattern, b"+OK subscribed to " + pattern)
        return client

    async def stop(self) -> None:
        """
        Close the test's clients and stop the hub (it drains its
        connections).
        """
        for client in self.watchers:
            await client.close()
        await self.service.stopService()


class LineSocket:
    """
    A hub client on a blocking socket, for the tests' side of a hub in
    another process (its threads may read while others publish).

    @ivar sock: The socket, for raw reads and writes.
    @ivar identity: The identity the hub's greeting names (C{b""} when the
        greeting was not awaited).
    @ivar lines: Every complete line read so far.
    @ivar closed: Whether the hub closed the connection.
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        rcvbuf: int | None = None,
        greeting: bool = True,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(PATIENCE)
        self.sock.connect((host, port))
        self.lines: list[bytes] = []
        self.closed = False
        self._buffer = LineBuffer()
        self._seen = 0
        self.identity = b""
        if greeting:
            match = re.match(
                rb"\* welcome to netdemo pubsub, you are (\S+) ",
                self.waitFor(b"* welcome"),
            )
            assert match is not None, self.lines
            self.identity = match.group(1)

    def send(self, data: bytes) -> None:
        """
        Send bytes (lines with their ends).
        """
        self.sock.sendall(data)

    def receive(self) -> list[bytes]:
        """
        Read what has arrived, without waiting (and without changing the
        socket's mode: another thread may be writing to it).

        @return: Every line read so far.
        """
        # poll, not select: the descriptor may be above FD_SETSIZE when a
        # test holds thousands of sockets.
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            while not self.closed and poller.poll(0):
                data = self.sock.recv(1 << 16)
                if not data:
                    self.closed = True
                self.lines.extend(self._buffer.feed(data))
        except ConnectionResetError:
            self.closed = True
        return self.lines

    def matching(self, prefix: bytes | tuple[bytes, ...]) -> list[bytes]:
        """
        The lines read so far that start with C{prefix}.
        """
        return [line for line in self.lines if line.startswith(prefix)]

    def collect(
        self,
        prefix: bytes | tuple[bytes, ...],
        count: int,
        timeout: float = PATIENCE,
        settle: float = 0.0,
    ) -> list[bytes]:
        """
        Read until C{count} lines starting with C{prefix} arrived (or the
        time runs out, or the hub closes), then for C{settle} seconds more
        (to see lines that should not come).

        @return: The lines starting with C{prefix}.
        """

        def enough() -> bool:
            self.receive()
            return self.closed or len(self.matching(prefix)) >= count

        poll(enough, f"{count} lines starting with {prefix!r}", timeout, 0.01)
        if settle:
            time.sleep(settle)
            self.receive()
        return self.matching(prefix)

    def waitFor(self, text: bytes, timeout: float = PATIENCE) -> bytes:
        """
        Read until a line containing C{text} arrived after the last line
        this returned; return it.
        """

        def found() -> int | None:
            self.receive()
            for i in range(self._seen, len(self.lines)):
                if text in self.lines[i]:
                    return i + 1
            return None

        self._seen = poll(found, f"a line with {text!r}", timeout, interval=0.01)
        return self.lines[self._seen - 1]

    def close(self) -> None:
        """
        Close the socket.
        """
        self.sock.close()
