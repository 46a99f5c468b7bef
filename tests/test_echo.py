"""
Unit tests for L{netdemo.echo} and the limits it inherits from
L{netdemo.limits}, with in-memory transports and a fake clock.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netdemo.echo import Echo, EchoFactory
from netdemo.limits import ConnectionLimits
from netdemo.metrics import MemoryMetrics
from netdemo.stream import IDLE_SWEEPS, SWEEP_CHUNK
from tests.support import captureEvents
from tests.test_internals import nextTurn

HOST = IPv4Address("TCP", "127.0.0.1", 8007)


def peer(host: str = "127.0.0.1", port: int = 40000) -> IPv4Address:
    """
    A client address.
    """
    return IPv4Address("TCP", host, port)


def makeFactory(
    limits: ConnectionLimits | None = None,
) -> tuple[EchoFactory, MemoryMetrics, Clock]:
    """
    An echo factory with in-memory metrics and a fake clock, started.
    """
    metrics = MemoryMetrics()
    clock = Clock()
    factory = EchoFactory("tcp-echo", limits or ConnectionLimits(), metrics, clock)
    factory.doStart()
    return factory, metrics, clock


def connect(
    factory: EchoFactory, address: IPv4Address | None = None
) -> tuple[Echo, StringTransport]:
    """
    Build a protocol for C{address} and connect it to a L{StringTransport}.
    """
    address = address or peer()
    protocol = factory.buildProtocol(address)
    assert protocol is not None
    transport = StringTransport(hostAddress=HOST, peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport  # type: ignore[return-value]


def assertDrained(
    testCase: SynchronousTestCase,
    clock: Clock,
    protocol: Echo,
    transport: StringTransport,
    done: Deferred[Any],
    drain: float,
) -> None:
    """
    A drain in progress: the connection is closing gracefully and C{done}
    waits; C{drain} seconds later the connection is aborted, and C{done}
    fires once it is lost.
    """
    testCase.assertTrue(transport.disconnecting)
    testCase.assertFalse(transport.disconnected)
    testCase.assertNoResult(done)
    clock.advance(drain)
    testCase.assertTrue(transport.disconnected)
    protocol.connectionLost(Failure(ConnectionLost()))
    testCase.successResultOf(done)


class EchoBytesTests(SynchronousTestCase):
    """
    The echo sends back exactly what it receives, however it is chunked.
    """

    def test_everyChunkSize(self) -> None:
        """
        Every chunk size from one byte to the whole message gives the
        message back byte for byte.
        """
        data = bytes(range(256)) * 3 + b"\r\n\n\x00end"
        for size in range(1, len(data) + 1):
            factory, _, _ = makeFactory()
            protocol, transport = connect(factory)
            for i in range(0, len(data), size):
                protocol.dataReceived(data[i : i + size])
            self.assertEqual(transport.value(), data, f"chunk size {size}")
            self.assertEqual(protocol.bytesIn, len(data))

    @settings(max_examples=200, deadline=None)
    @given(
        data=st.binary(max_size=4096),
        cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=64),
    )
    def test_anyChunking(self, data: bytes, cuts: list[int]) -> None:
        """
        Any split of any byte string into reads is echoed unchanged.
        """
        factory, _, _ = makeFactory()
        protocol, transport = connect(factory)
        points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        for start, end in zip(points, points[1:], strict=False):
            protocol.dataReceived(data[start:end])
        self.assertEqual(transport.value(), data)


class FlowControlTests(SynchronousTestCase):
    """
    The transport is its own streaming producer, and stops being one before
    a graceful close.
    """

    def test_protocolIsTheProducer(self) -> None:
        """
        On connection the protocol is registered as the transport's
        streaming producer and passes pauses on to the transport, so a full
        write buffer pauses reading.
        """
        factory, _, _ = makeFactory()
        protocol, transport = connect(factory)
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        protocol.stopProducing()
        self.assertEqual(transport.producerState, "stopped")

    def test_halfCloseFlushesThenCloses(self) -> None:
        """
        When the client half-closes, the echo unregisters the producer (so
        a drained buffer closes the connection instead of resuming reads)
        and closes after flushing; everything received is still echoed.
        """
        factory, _, _ = makeFactory()
        protocol, transport = connect(factory)
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.dataReceived(b"x" * 100000)
        protocol.readConnectionLost()
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertEqual(transport.value(), b"x" * 100000)


class LimitTests(SynchronousTestCase):
    """
    Connection caps refuse at once and are counted.
    """

    def test_maxConnections(self) -> None:
        """
        Past C{maxConnections} no protocol is built (Twisted closes the
        socket at once) and the refusal is counted; a closed connection
        frees its place.
        """
        factory, metrics, _ = makeFactory(ConnectionLimits(maxConnections=2))
        first, _ = connect(factory, peer(port=1))
        connect(factory, peer("127.0.0.2", 2))
        self.assertIsNone(factory.buildProtocol(peer("127.0.0.3", 3)))
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="tcp-echo", reason="max-connections"
            ),
            1,
        )
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(peer("127.0.0.3", 4)))

    def test_maxPerPeer(self) -> None:
        """
        Past C{maxPerPeer} connections from one IP address, further ones from
        it are refused while other addresses are still accepted.
        """
        factory, metrics, _ = makeFactory(ConnectionLimits(maxPerPeer=2))
        first, _ = connect(factory, peer(port=1))
        connect(factory, peer(port=2))
        self.assertIsNone(factory.buildProtocol(peer(port=3)))
        self.assertIsNotNone(factory.buildProtocol(peer("127.0.0.9", 3)))
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="tcp-echo", reason="max-per-peer"
            ),
            1,
        )
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(peer(port=4)))
        self.assertEqual(factory.perPeer["127.0.0.1"], 2)

    def test_zeroMeansUnlimited(self) -> None:
        """
        A limit of 0 turns the cap off.
        """
        factory, _, _ = makeFactory(ConnectionLimits(maxConnections=0, maxPerPeer=0))
        for i in range(300):
            connect(factory, peer(port=i + 1))
        self.assertEqual(len(factory.connections), 300)

    def test_negativeLimitRejected(self) -> None:
        """
        Limits are validated when built.
        """
        self.assertRaises(ValueError, ConnectionLimits, maxConnections=-1)
        self.assertRaises(ValueError, ConnectionLimits, drain=-0.5)


class IdleTimeoutTests(SynchronousTestCase):
    """
    The idle timeout closes connections that send nothing, and trickling
    data keeps a connection alive only because it is real activity.
    """

    def test_idleConnectionClosed(self) -> None:
        """
        A silent connection is aborted after more than C{idleTimeout} and at
        most C{idleTimeout * (1 + 1/IDLE_SWEEPS)} seconds, and counted.
        """
        factory, metrics, clock = makeFactory(ConnectionLimits(idleTimeout=100))
        protocol, transport = connect(factory)
        clock.pump([1] * 100)
        self.assertFalse(transport.disconnected)
        clock.pump([1] * (100 // IDLE_SWEEPS))
        self.assertTrue(transport.disconnected)
        self.assertEqual(protocol.closeReason, "idle-timeout")
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="tcp-echo", reason="idle-timeout"
            ),
            1,
        )

    def test_sweepInChunks(self) -> None:
        """
        One reactor turn of a sweep visits at most L{SWEEP_CHUNK}
        connections; the rest are visited in the next turns, and every idle
        connection is closed in the end.  Connections closed meanwhile are
        skipped; stopping the factory leaves no call behind.
        """
        factory, _, clock = makeFactory(ConnectionLimits(idleTimeout=100, maxPerPeer=0))
        count = 2 * SWEEP_CHUNK + 10
        connections = [connect(factory, peer(port=i + 1)) for i in range(count)]
        # One turn: the sweep's first chunk.
        factory.sweepIdle()
        ticks = [p.idleTicks for p, _ in connections]
        self.assertEqual(ticks.count(1), SWEEP_CHUNK)
        self.assertEqual(ticks.count(0), count - SWEEP_CHUNK)
        # A sweep due while this one goes on is skipped.
        factory.sweepIdle()
        self.assertEqual([p.idleTicks for p, _ in connections], ticks)
        # A connection closed while the sweep goes on is skipped.
        gone, _ = connections[0]
        gone.connectionLost(Failure(ConnectionLost()))
        nextTurn(clock)
        self.assertEqual(
            [p.idleTicks for p, _ in connections].count(1), 2 * SWEEP_CHUNK
        )
        nextTurn(clock)
        ticks = [p.idleTicks for p, _ in connections[1:]]
        self.assertEqual(set(ticks), {1})
        self.assertEqual(gone.idleTicks, 0)
        clock.pump([100 / IDLE_SWEEPS] * (IDLE_SWEEPS + 1))
        self.assertTrue(all(t.disconnected for _, t in connections[1:]))
        factory.doStop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_idleCloseIsLoggedAsAClose(self) -> None:
        """
        An idle connection's close is logged once, as a C{connection_closed}
        event giving the reason, its age and its bytes; not as a refusal
        (issue 13: it was logged as C{refused ... (idle-timeout)}).
        """
        events = captureEvents(self)
        factory, metrics, clock = makeFactory(ConnectionLimits(idleTimeout=100))
        protocol, transport = connect(factory)
        protocol.dataReceived(b"hi")
        clock.pump([1] * (100 + 100 // IDLE_SWEEPS + 1))
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual([e for e in events if e.get("event") == "refused"], [])
        [closed] = [e for e in events if e.get("event") == "connection_closed"]
        self.assertEqual(closed["reason"], "idle-timeout")
        self.assertEqual(closed["bytesIn"], 2)
        self.assertGreater(closed["duration"], 100)

    def test_activityResetsIdleness(self) -> None:
        """
        Data received restarts the idle period.
        """
        factory, _, clock = makeFactory(ConnectionLimits(idleTimeout=100))
        protocol, transport = connect(factory)
        for _ in range(5):
            clock.pump([1] * 90)
            protocol.dataReceived(b"x")
        self.assertFalse(transport.disconnected)
        clock.pump([1] * 111)
        self.assertTrue(transport.disconnected)

    def test_zeroDisablesTimeout(self) -> None:
        """
        C{idleTimeout=0} never closes a connection for idleness.
        """
        factory, _, clock = makeFactory(ConnectionLimits(idleTimeout=0))
        protocol, transport = connect(factory)
        clock.advance(10**6)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])


class DrainTests(SynchronousTestCase):
    """
    Shutdown closes gracefully, then aborts after the drain deadline.
    """

    def test_drainAbortsAfterDeadline(self) -> None:
        """
        Connections that do not finish closing within C{drain} seconds are
        aborted; the returned Deferred fires once they are gone.
        """
        factory, _, clock = makeFactory(ConnectionLimits(drain=5))
        protocol, transport = connect(factory)
        assertDrained(self, clock, protocol, transport, factory.drain(), 5)
        self.assertEqual(protocol.closeReason, "shutdown-deadline")

    def test_drainWithoutConnections(self) -> None:
        """
        Draining an idle service is immediate.
        """
        factory, _, _ = makeFactory()
        self.successResultOf(factory.drain())


class PeerTests(SynchronousTestCase):
    """
    The echo keeps no address object of its own for its peer once the
    transport gives the same one.
    """

    def test_transportsPeer(self) -> None:
        """
        When the transport's peer is the address the connection was built
        for, that one is dropped and C{peer} asks the transport, before and
        after the connection is lost; the per-peer count is given back.
        """
        factory, metrics, clock = makeFactory(ConnectionLimits(maxPerPeer=5))
        built = peer("127.0.0.7", 7)
        protocol, transport = connect(factory, built)
        self.assertIsNone(protocol._peer)
        self.assertEqual(protocol.peer, built)
        self.assertEqual(factory.perPeer, {"127.0.0.7": 1})
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(protocol.peer, built)
        self.assertEqual(factory.perPeer, {})

    def test_otherPeer(self) -> None:
        """
        When the transport says another peer than the one the connection
        was built for, the one it was built for is kept, and is the one the
        per-peer count gives back.
        """
        factory, metrics, clock = makeFactory(ConnectionLimits(maxPerPeer=5))
        built = peer("127.0.0.8", 8)
        protocol = factory.buildProtocol(built)
        assert isinstance(protocol, Echo)
        self.assertIs(protocol.peer, built)
        protocol.makeConnection(
            StringTransport(hostAddress=HOST, peerAddress=peer("127.0.0.9", 9))
        )
        self.assertIs(protocol.peer, built)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.perPeer, {})

    def test_noTransport(self) -> None:
        """
        A protocol not built for an address and not connected has no peer.
        """
        self.assertIsNone(Echo().peer)


class SlotsTests(SynchronousTestCase):
    """
    The echo protocol keeps its state in slots (L{SlottedLimitedProtocol}).
    """

    def test_noInstanceDictionary(self) -> None:
        """
        A connected echo protocol has no instance dictionary, and provides
        what Twisted's transports ask of a protocol.
        """
        from twisted.internet.interfaces import (
            IHalfCloseableProtocol,
            ILoggingContext,
            IProtocol,
        )
        from zope.interface.verify import verifyObject

        factory, metrics, clock = makeFactory()
        protocol, transport = connect(factory)
        self.assertFalse(hasattr(protocol, "__dict__"))
        for interface in (IProtocol, ILoggingContext, IHalfCloseableProtocol):
            self.assertTrue(verifyObject(interface, protocol))
        self.assertEqual(protocol.logPrefix(), "Echo")
        self.assertEqual(protocol.connected, 1)
        self.assertIs(protocol.transport, transport)
        self.assertEqual(
            (protocol.bytesIn, protocol.idleTicks, protocol.closeReason), (0, 0, None)
        )

    def test_fresh(self) -> None:
        """
        An echo protocol not yet connected has Twisted's C{Protocol}
        defaults.
        """
        protocol = Echo()
        self.assertEqual((protocol.connected, protocol.transport), (0, None))
        self.assertEqual((protocol.bytesIn, protocol.written), (0, 0))
        self.assertEqual(protocol.bytesOut, 0)


class LoggingTests(SynchronousTestCase):
    """
    One structured event per finished connection.
    """

    def test_connectionClosedEvent(self) -> None:
        """
        A finished connection logs peer, local address, duration, bytes in
        and out, and the reason.
        """
        events = captureEvents(self)
        factory, metrics, clock = makeFactory()
        protocol, transport = connect(factory, peer(port=5555))
        protocol.dataReceived(b"hello")
        clock.advance(2.5)
        protocol.connectionLost(Failure(ConnectionDone()))
        [event] = [e for e in events if e.get("event") == "connection_closed"]
        self.assertEqual(event["peer"], "127.0.0.1:5555")
        self.assertEqual(event["local"], "127.0.0.1:8007")
        self.assertEqual(event["duration"], 2.5)
        self.assertEqual(event["bytesIn"], 5)
        self.assertEqual(event["bytesOut"], 5)
        self.assertEqual(event["reason"], "closed-by-peer")
        self.assertEqual(event["service"], "tcp-echo")
        self.assertEqual(
            metrics.value("netdemo_received_bytes_total", service="tcp-echo"), 5
        )
        self.assertEqual(
            metrics.value("netdemo_connections_total", service="tcp-echo"), 1
        )
        self.assertEqual(
            metrics.value("netdemo_connections_current", service="tcp-echo"), 0
        )

    def test_refusalsRateLimited(self) -> None:
        """
        A flood of refusals is counted in full but logged at a bounded rate.
        """
        events = captureEvents(self)
        factory, metrics, clock = makeFactory(ConnectionLimits(maxConnections=1))
        connect(factory)
        for i in range(100):
            factory.buildProtocol(peer(port=i + 2))
        clock.advance(11)
        factory.buildProtocol(peer(port=200))
        refused = [e for e in events if e.get("event") == "refused"]
        self.assertEqual(len(refused), 2)
        self.assertEqual(refused[1]["suppressed"], 99)
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="tcp-echo", reason="max-connections"
            ),
            101,
        )
