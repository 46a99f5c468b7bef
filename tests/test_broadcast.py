"""
Tests for L{netdemo.broadcast}: the byte relay, in memory (clients on
L{StringTransport}s that pause like real ones, the relay's timers on a
L{MemoryReactorClock}).  The real-daemon figures (two seed clients, a
receiver that never reads while 100 MB go through) are in
L{tests.seeds.test_seed000}.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from netdemo.broadcast import BroadcastFactory, BroadcastProtocol, welcome
from netdemo.limits import BroadcastLimits, ConnectionLimits
from netdemo.metrics import MemoryMetrics
from netdemo.tap import DEFAULTS, Options, makeService
from tests.pubsubhelpers import ClosingTransport, PacedTransport
from tests.support import captureEvents


class Relay:
    """
    A relay on a fake clock, with in-memory clients.
    """

    def __init__(
        self,
        limits: BroadcastLimits | None = None,
        connectionLimits: ConnectionLimits | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.metrics = MemoryMetrics()
        self.factory = BroadcastFactory(
            "broadcast",
            connectionLimits or ConnectionLimits(),
            limits or BroadcastLimits(),
            self.metrics,
            self.clock,
        )
        self.factory.startFactory()
        self._port = 40000

    def connect(self, transportType: type[ClosingTransport] = ClosingTransport) -> Any:
        """
        Connect one more client; its transport, whose C{protocol} is the
        relay's protocol (or the refusal).
        """
        self._port += 1
        addr = IPv4Address("TCP", "127.0.0.1", self._port)
        protocol: Any = self.factory.buildProtocol(addr)
        transport = transportType(peerAddress=addr)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def value(self, name: str) -> float:
        """
        One of the relay's metrics.
        """
        return self.metrics.value(name, service="broadcast")


def after(transport: ClosingTransport, data: bytes) -> bytes:
    """
    What C{transport} got after C{data} (the welcome line, say).
    """
    return transport.value().split(data, 1)[1]


class RelayTests(SynchronousTestCase):
    """
    Every chunk goes to every other client, unframed, in order.
    """

    def setUp(self) -> None:
        self.relay = Relay()
        self.addCleanup(self.relay.factory.stopFactory)

    def test_welcome(self) -> None:
        """
        Each client is greeted with its number and how many are connected.
        """
        a = self.relay.connect()
        b = self.relay.connect()
        self.assertEqual(a.value(), welcome(1, 1))
        self.assertEqual(
            b.value(),
            b"* welcome to netdemo broadcast, you are client #2 (2 connected)\n",
        )

    def test_othersGetEveryChunk(self) -> None:
        """
        Chunks without a newline, binary ones included, reach every other
        client as they are, in order; never their sender.
        """
        a, b, c = (self.relay.connect() for _ in range(3))
        a.protocol.dataReceived(b"hello,i am xx")
        b.protocol.dataReceived(b"\x00\xff\r")
        a.protocol.dataReceived(b" again")
        self.assertEqual(after(a, welcome(1, 1)), b"\x00\xff\r")
        self.assertEqual(after(b, welcome(2, 2)), b"hello,i am xx again")
        self.assertEqual(after(c, welcome(3, 3)), b"hello,i am xx\x00\xff\r again")
        self.assertEqual(self.relay.value("netdemo_broadcast_relayed_chunks_total"), 3)
        self.assertEqual(
            self.relay.value("netdemo_broadcast_delivered_chunks_total"), 6
        )

    def test_close(self) -> None:
        """
        A chunk that is exactly C{close}, with or without CR/LF, closes its
        sender and is not relayed; a longer chunk is relayed.
        """
        for chunk in (b"close", b"close\n", b"close\r\n"):
            sender, other = self.relay.connect(), self.relay.connect()
            sender.protocol.dataReceived(b"closed")
            sender.protocol.dataReceived(chunk)
            self.assertFalse(sender.connected, chunk)
            self.assertEqual(sender.protocol.closeReason, "close")
            self.assertTrue(other.connected)
            self.assertTrue(other.value().endswith(b"closed"), other.value())

    def test_leftClientGetsNothing(self) -> None:
        """
        A client that left is not written to.
        """
        a, b = self.relay.connect(), self.relay.connect()
        b.loseConnection()
        written = b.value()
        a.protocol.dataReceived(b"x")
        self.assertEqual(b.value(), written)
        self.assertEqual(list(self.relay.factory.clients), [a.protocol])

    def test_refusedGetsReasonLine(self) -> None:
        """
        A connection over C{maxConnections} gets one reason line and is
        closed.
        """
        relay = Relay(connectionLimits=ConnectionLimits(maxConnections=1))
        relay.connect()
        refused = relay.connect()
        self.assertEqual(refused.value(), b"* refused: max-connections\n")
        self.assertTrue(refused.disconnecting)

    def test_shutdownDrains(self) -> None:
        """
        On shutdown every client is told, then closed.
        """
        a = self.relay.connect()
        d = self.relay.factory.drain()
        self.assertTrue(a.value().endswith(b"* server shutting down\n"))
        self.successResultOf(d)
        self.assertEqual(a.protocol.closeReason, "shutdown")


class SlowReceiverTests(SynchronousTestCase):
    """
    A receiver that does not read never holds up the sender or the others,
    and what waits for it is bounded (the hub's slow-consumer machinery,
    L{netdemo.fanout}).
    """

    def flood(self, relay: Relay, chunks: int, size: int = 1000) -> tuple[Any, ...]:
        """
        A sender, a reader that keeps up, and a stalled receiver; the
        sender sends C{chunks} chunks of C{size} bytes.
        """
        sender = relay.connect(PacedTransport)
        reader = relay.connect(PacedTransport)
        stalled = relay.connect(PacedTransport)
        for i in range(chunks):
            sender.protocol.dataReceived(b"%08d" % (i,) + b"." * (size - 8))
            reader.drain()
        return sender, reader, stalled

    def test_disconnectPastMaxPending(self) -> None:
        """
        With the disconnect policy, a receiver with more than C{maxPending}
        bytes waiting while paused is aborted and counted; the sender was
        never paused and the reader got every chunk.
        """
        events = captureEvents(self)
        relay = Relay(BroadcastLimits(maxPending=10_000, writeDeadline=0))
        sender, reader, stalled = self.flood(relay, 200)
        self.assertTrue(stalled.aborted)
        self.assertEqual(stalled.protocol.closeReason, "slow-consumer")
        self.assertEqual(sender.producerState, "producing")
        self.assertEqual(len(after(reader, welcome(2, 2))), 200 * 1000)
        self.assertEqual(
            relay.metrics.value(
                "netdemo_refused_total", service="broadcast", reason="slow-consumer"
            ),
            1,
        )
        self.assertIn("refused", [e.get("event") for e in events])

    def test_writeDeadline(self) -> None:
        """
        A receiver paused for longer than C{writeDeadline} is aborted.
        """
        relay = Relay(BroadcastLimits(writeDeadline=3.0))
        sender, reader, stalled = self.flood(relay, 80)
        self.assertTrue(stalled.paused)
        relay.clock.advance(3.0)
        self.assertEqual(stalled.protocol.closeReason, "write-deadline")

    def test_dropOldestWholeChunks(self) -> None:
        """
        With drop-oldest, whole chunks are dropped past C{maxPending}; when
        the receiver reads again it is told how many bytes were dropped,
        then gets the rest, in order, and the counts add up.
        """
        events = captureEvents(self)
        relay = Relay(BroadcastLimits(maxPending=10_000, slowPolicy="drop-oldest"))
        sender, reader, stalled = self.flood(relay, 500)
        self.assertTrue(stalled.connected)
        stalled.drain()
        got = after(stalled, welcome(3, 3))
        match = re.fullmatch(
            rb"(.*)\* dropped (\d+) bytes in (\d+) chunks \(slow consumer\)\n(.*)",
            got,
            re.S,
        )
        assert match is not None, got[-200:]
        head, size, chunks, rest = match.groups()
        received = head + rest
        self.assertEqual(len(received) % 1000, 0)
        numbers = [int(received[i : i + 8]) for i in range(0, len(received), 1000)]
        self.assertEqual(numbers, sorted(numbers))
        self.assertEqual(int(size), int(chunks) * 1000)
        self.assertEqual(len(numbers) + int(chunks), 500)
        self.assertEqual(
            relay.value("netdemo_broadcast_dropped_chunks_total"), int(chunks)
        )
        self.assertEqual(
            relay.value("netdemo_broadcast_dropped_bytes_total"), int(size)
        )
        self.assertIn("slow_consumer_dropped", [e.get("event") for e in events])


class OptionsTests(SynchronousTestCase):
    """
    C{--broadcast} and the default set.
    """

    def test_default(self) -> None:
        """
        With no service option, the relay listens on 127.0.0.1:8010.
        """
        self.assertEqual(
            DEFAULTS["broadcast"], ["tcp:8010:interface=127.0.0.1:backlog=1024"]
        )
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["broadcast"], DEFAULTS["broadcast"])

    def test_service(self) -> None:
        """
        C{--broadcast} builds a service named C{broadcast} with the
        slow-consumer options of the hub.
        """
        options = Options()
        options.parseOptions(
            [
                "--broadcast",
                "9010",
                "--max-pending",
                "2MiB",
                "--slow-policy",
                "drop-oldest",
            ]
        )
        self.assertEqual(
            options.broadcastLimits(),
            BroadcastLimits(maxPending=2 << 20, slowPolicy="drop-oldest"),
        )
        top = makeService(options, MemoryReactorClock())
        service: Any = top.getServiceNamed("broadcast")
        self.assertIsInstance(service.factory.protocol(), BroadcastProtocol)
        self.assertEqual(service.factory.slowLimits.maxPending, 2 << 20)

    def test_badDescription(self) -> None:
        """
        A bad C{--broadcast} value is a usage error naming the option.
        """
        from twisted.python.usage import UsageError

        options = Options()
        with self.assertRaises(UsageError) as caught:
            options.parseOptions(["--broadcast", "99999"])
        self.assertIn("--broadcast", str(caught.exception))
