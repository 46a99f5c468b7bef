# -*- test-case-name: tests.test_echo_direct -*-
"""
Tests for the echo's direct-send path (the socket's C{send} when nothing is
queued, C{transport.write} for the rest) over real loopback sockets, and for
the per-connection state that L{netdemo.stream.LimitedProtocol} sets up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.echo import QUEUED_BUFFER, SEND_BUFFER, Echo, EchoFactory
from netdemo.internals import unsentBytes
from netdemo.limits import ConnectionLimits
from netdemo.metrics import MemoryMetrics
from tests.support import PATIENCE, captureEvents, waitUntil

#: The reactor, for the calls its interfaces do not all declare.
_reactor: Any = reactor

#: Bytes the client sends: more than the loopback socket buffers of both
#: directions hold (Linux caps them at a few MB), so that while the client
#: does not read, the kernel takes only part of some replies.
PAYLOAD = 16 * 1024 * 1024


class RecordingEcho(Echo):
    """
    An echo that records whether the direct path applied and how often a
    reply was left (partly) queued in the transport, and says when that
    first happened.
    """

    factory: RecordingFactory
    queued = 0
    direct = False

    def dataReceived(self, data: bytes) -> None:
        self.direct = self.direct or self._direct is not None
        super().dataReceived(data)
        if unsentBytes(self.transport):
            self.queued += 1
            self.factory.queuedOnce.set()


class RecordingFactory(EchoFactory):
    """
    Keeps every protocol it builds.
    """

    protocol = RecordingEcho

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.built: list[RecordingEcho] = []
        self.queuedOnce = threading.Event()

    def buildProtocol(self, addr: Any) -> RecordingEcho | None:  # type: ignore[override]
        p = super().buildProtocol(addr)
        if p is not None:
            self.built.append(p)  # type: ignore[arg-type]
        return p  # type: ignore[return-value]


def lateReader(port: int, payload: bytes, start: threading.Event) -> bytes:
    """
    Send C{payload} to 127.0.0.1:C{port} from one thread and FIN, while
    this thread, once C{start} is set, reads until the server closes.
    """
    client = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)

    def send() -> None:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    start.wait(PATIENCE)
    try:
        return client.makefile("rb").read()
    finally:
        sender.join(PATIENCE)
        client.close()


class DirectSendTests(TestCase):
    """
    The direct-send path over real loopback TCP.
    """

    timeout = 60

    def setUp(self) -> None:
        self.factory = RecordingFactory(
            "tcp-echo", ConnectionLimits(), MemoryMetrics(), reactor
        )
        self.port = _reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def test_lateReaderGetsEveryByteInOrder(self) -> None:
        """
        A client that starts reading only once the server had to queue part
        of a reply gets every byte back in order: replies the kernel takes
        whole go out directly, and what it cannot take is queued in the
        transport, behind which later replies wait.
        """
        payload = os.urandom(PAYLOAD)
        echoed = await deferToThread(
            lateReader, self.port.getHost().port, payload, self.factory.queuedOnce
        )
        self.assertEqual(len(echoed), len(payload))
        self.assertEqual(echoed, payload)
        [p] = self.factory.built
        self.assertTrue(p.direct)
        self.assertGreater(p.queued, 0)

    async def test_peerGoneIsConnectionLost(self) -> None:
        """
        A reply whose direct send fails because the peer is gone (C{EPIPE}
        after its reset) raises nothing in C{dataReceived}: it is queued in
        the transport, whose next write reports the connection lost, and
        the connection is closed, counted and logged as lost.
        """
        events = captureEvents(self)
        client = socket.create_connection(
            ("127.0.0.1", self.port.getHost().port), timeout=PATIENCE
        )
        self.addCleanup(client.close)
        await waitUntil(lambda: bool(self.factory.built))
        [p] = self.factory.built
        await waitUntil(lambda: p.connected)
        transport: Any = p.transport
        # The reactor must not see the reset before the reply is sent.
        transport.stopReading()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        sock = transport.socket
        await waitUntil(
            lambda: (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
            )
        )
        # The pending reset is read (and cleared) above: the send gets EPIPE.
        with self.assertRaises(OSError) as raised:
            sock.send(b"")
        self.assertEqual(raised.exception.errno, errno.EPIPE)
        p.dataReceived(b"x" * 64)
        self.assertEqual(p.bytesIn, 64)
        self.assertEqual(unsentBytes(transport), 64)
        await waitUntil(lambda: not self.factory.connections)
        self.assertFalse(p.connected)
        [closed] = [e for e in events if e.get("event") == "connection_closed"]
        self.assertTrue(closed["reason"].startswith("lost: "), closed["reason"])
        self.assertEqual(closed["bytesIn"], 64)
        self.assertEqual(closed["bytesOut"], 0)


class StalledReaderTests(TestCase):
    """
    A client that sends and does not read, over real loopback TCP: what the
    echo holds for it, and what the byte totals say meanwhile.
    """

    async def test_boundedAndCounted(self) -> None:
        """
        The echo reads 64 KiB at a time while the kernel takes every reply;
        once it refuses part of one, the transport pauses above
        L{QUEUED_BUFFER} unsent bytes, and full-size reads come back once
        the client has read everything.  The kernel send buffer is
        L{SEND_BUFFER} (doubled by Linux).  The metrics' byte totals are
        those of the connection: received is all it read, sent is that less
        what is still queued.
        """
        metrics = MemoryMetrics()
        factory = RecordingFactory("tcp-echo", ConnectionLimits(), metrics, reactor)
        port = _reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.socket()
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        client.setblocking(False)
        await waitUntil(lambda: factory.built)
        [p] = factory.built
        transport: Any = p.transport
        self.assertIs(transport.producer, p)
        self.assertEqual(transport.bufferSize, 64 * 1024)
        self.assertEqual(
            transport.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            2 * SEND_BUFFER,
        )

        def push() -> bool:
            with contextlib.suppress(BlockingIOError):
                client.send(b"z" * 65536)
            return transport not in _reactor.getReaders()

        await waitUntil(push, "the echo to stop reading")
        self.assertEqual(transport.bufferSize, QUEUED_BUFFER)
        unsent = unsentBytes(transport)
        self.assertGreater(unsent, QUEUED_BUFFER)
        self.assertLessEqual(unsent, 64 * 1024 + QUEUED_BUFFER)
        received = metrics.value("netdemo_received_bytes_total", service="tcp-echo")
        sent = metrics.value("netdemo_sent_bytes_total", service="tcp-echo")
        self.assertEqual((received, sent), (p.bytesIn, p.bytesIn - unsent))
        self.assertEqual(sent, p.bytesOut)
        got = 0

        def drain() -> bool:
            nonlocal got
            with contextlib.suppress(BlockingIOError):
                got += len(client.recv(1 << 20))
            return got >= p.bytesIn and transport in _reactor.getReaders()

        await waitUntil(drain, "the client to read everything")
        self.assertEqual(transport.bufferSize, 64 * 1024)
        client.close()
        await waitUntil(lambda: not factory.connections)
        self.assertEqual(
            metrics.value("netdemo_sent_bytes_total", service="tcp-echo"), p.bytesOut
        )


class ConnectionStateTests(SynchronousTestCase):
    """
    What L{netdemo.stream.LimitedProtocol.makeConnection} sets up.
    """

    def connect(self, factory: EchoFactory, port: int) -> Echo:
        """
        Connect a protocol to a L{StringTransport} with its own (equal)
        local address object.
        """
        address = IPv4Address("TCP", "127.0.0.1", port)
        p = factory.buildProtocol(address)
        assert isinstance(p, Echo)
        local = IPv4Address("TCP", "127.0.0.1", 8007)
        p.makeConnection(StringTransport(hostAddress=local, peerAddress=address))
        return p

    def test_localAddressShared(self) -> None:
        """
        Connections to the same local address share one address object.
        """
        factory = EchoFactory("tcp-echo", ConnectionLimits(), MemoryMetrics(), Clock())
        first = self.connect(factory, 40001)
        second = self.connect(factory, 40002)
        self.assertEqual(first.local, IPv4Address("TCP", "127.0.0.1", 8007))
        self.assertIs(first.local, second.local)

    def test_countersStartAtZero(self) -> None:
        """
        A new connection has read nothing and is not idle.
        """
        factory = EchoFactory("tcp-echo", ConnectionLimits(), MemoryMetrics(), Clock())
        p = self.connect(factory, 40001)
        self.assertEqual((p.bytesIn, p.idleTicks), (0, 0))
        p.dataReceived(b"abc")
        self.assertEqual((p.bytesIn, p.idleTicks), (3, 0))
