"""
Tests for L{netdemo.udppeer}: the connected-UDP prober with a fake
datagram reactor, and against the real UDP echo over loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as realReactor
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.datagram import ListenAddress
from netdemo.limits import DatagramLimits
from netdemo.metrics import MemoryMetrics
from netdemo.tap import Options
from netdemo.udpecho import buildUDPEchoService
from netdemo.udppeer import (
    PeerTarget,
    UDPPeerProber,
    buildUDPPeerService,
    parsePeerTarget,
)
from tests.datagramhelpers import FakeDatagramReactor
from tests.support import waitUntil


def started(
    target: str = "127.0.0.1:7",
) -> tuple[UDPPeerProber, FakeDatagramReactor, MemoryMetrics, Any]:
    """
    A started peer service on a fake reactor, and its prober.
    """
    reactor = FakeDatagramReactor()
    metrics = MemoryMetrics()
    service = buildUDPPeerService([parsePeerTarget(target)], 1.0, metrics, reactor)
    service.startService()
    [(_, prober, interface, size)] = reactor.udp
    return prober, reactor, metrics, service


class ParseTests(SynchronousTestCase):
    """
    C{--udp-peer} values.
    """

    def test_forms(self) -> None:
        """
        A name or IPv4 address and port, or a bracketed IPv6 address.
        """
        self.assertEqual(
            parsePeerTarget("peer.example:7"), PeerTarget("peer.example", 7)
        )
        self.assertEqual(parsePeerTarget("[::1]:9000"), PeerTarget("::1", 9000))
        options = Options()
        options.parseOptions(
            ["--udp-peer", "10.0.0.2:8009", "--udp-peer-interval", "0.5"]
        )
        self.assertEqual(options["udp-peer"], [PeerTarget("10.0.0.2", 8009)])
        self.assertEqual(options["udp-peer-interval"], 0.5)

    def test_errors(self) -> None:
        """
        Bad values are one-line usage errors naming them.
        """
        for value in ("peer", "::1:7", "peer:0", "[::1]7", "[nope]:7", "peer:x"):
            with self.assertRaises(usage.UsageError, msg=value) as e:
                Options().parseOptions(["--udp-peer", value])
            self.assertIn(repr(value), str(e.exception))


class ProberTests(SynchronousTestCase):
    """
    Counting with a fake transport and clock.
    """

    def test_connectAndProbe(self) -> None:
        """
        The socket is connected to the peer, listens with 64 KiB reads, and
        sends one 32-byte probe per interval with increasing sequence
        numbers.
        """
        prober, reactor, _, _ = started()
        self.assertEqual(reactor.udp[0][2:], ("", 65535))
        self.assertEqual(prober.transport.connected, ("127.0.0.1", 7))  # type: ignore[union-attr]
        reactor.advance(1)
        reactor.advance(1)
        written = prober.transport.written  # type: ignore[union-attr]
        self.assertEqual([len(d) for d, _ in written], [32, 32, 32])
        self.assertEqual(len({d for d, _ in written}), 3)
        self.assertEqual(prober.counts["sent"], 3)

    def test_statistics(self) -> None:
        """
        Replies give the RTT statistics; a second reply is a duplicate, an
        older reply after a newer one is reordered, an unanswered probe is
        lost after the timeout, a late reply is not received twice, and a
        refusal is counted.
        """
        prober, reactor, metrics, _ = started()
        reactor.advance(1)  # probes 0 and 1 sent, at 0 and 1
        p0, p1 = [d for d, _ in prober.transport.written]  # type: ignore[union-attr]
        reactor.advance(0.5)
        prober.datagramReceived(p1, None)  # rtt 0.5
        prober.datagramReceived(p0, None)  # rtt 1.5, reordered
        prober.datagramReceived(p0, None)  # duplicate
        prober.datagramReceived(b"junk", None)
        prober.connectionRefused()
        reactor.advance(0.5)  # probe 2 at 2
        reactor.pump([1, 1, 1])  # probes 3, 4, 5; probe 2 times out
        c = prober.counts
        self.assertEqual(
            (c["sent"], c["received"], c["reordered"], c["duplicate"], c["refused"]),
            (6, 2, 1, 1, 1),
        )
        self.assertEqual(c["lost"], 1)
        self.assertAlmostEqual(prober.rttMin, 0.5)
        self.assertAlmostEqual(prober.rttMax, 1.5)
        self.assertAlmostEqual(prober.rttAvg, 1.0)
        self.assertAlmostEqual(prober.rttMdev, 0.5)
        self.assertEqual(
            metrics.value(
                "netdemo_udp_peer_probes_total",
                service="udp-peer",
                peer="127.0.0.1:7",
                outcome="reordered",
            ),
            1,
        )
        self.assertAlmostEqual(
            metrics.value(
                "netdemo_udp_peer_rtt_seconds",
                service="udp-peer",
                peer="127.0.0.1:7",
                stat="max",
            ),
            1.5,
        )

    def test_lossJudgedAfterReading(self) -> None:
        """
        A probe is counted lost only once the replies waiting were read:
        when the process stood still past the timeout, a reply sitting in
        the socket still counts as received.
        """
        prober, reactor, _, _ = started()
        [(p0, _)] = prober.transport.written  # type: ignore[union-attr]
        reactor.rightNow += 10  # the process stood still
        prober.tick()  # the overdue tick runs before any reading
        prober.datagramReceived(p0, None)
        reactor.advance(0)
        self.assertEqual((prober.counts["received"], prober.counts["lost"]), (1, 0))
        self.assertAlmostEqual(prober.rttMax, 10)
        unanswered = len(prober.outstanding)
        self.assertGreater(unanswered, 0)
        reactor.advance(prober.timeout)  # and those are not answered
        self.assertEqual(prober.counts["lost"], unanswered)

    def test_timeout(self) -> None:
        """
        The timeout is three intervals, at least 2 seconds: a probe is lost
        at the first tick that many seconds after it was sent.
        """
        prober, reactor, _, _ = started()
        self.assertEqual(prober.timeout, 3.0)
        reactor.pump([1, 1])
        self.assertEqual(prober.counts["lost"], 0)
        reactor.advance(1)
        self.assertEqual(prober.counts["lost"], 1)
        fast = UDPPeerProber(PeerTarget("h", 7), "127.0.0.1", 0.1, reactor)
        self.assertEqual(fast.timeout, 2.0)

    def test_otherInstanceIgnored(self) -> None:
        """
        A reply to another prober's probe (same bytes but another instance
        id) is not counted.
        """
        prober, reactor, _, _ = started()
        [(probe, _)] = prober.transport.written  # type: ignore[union-attr]
        other = probe[:24] + bytes(8 - 1) + bytes([probe[31] ^ 1])
        prober.datagramReceived(other, None)
        self.assertEqual(prober.counts["received"], 0)

    def test_nameResolvedOnceAndRetried(self) -> None:
        """
        A name is resolved at start; one that does not resolve is logged and
        retried, without stopping anything.
        """
        _, reactor, _, service = started("localhost:7")
        self.assertEqual(reactor.udp[0][1].transport.connected, ("127.0.0.1", 7))
        reactor2 = FakeDatagramReactor()
        service2 = buildUDPPeerService(
            [parsePeerTarget("no-such-host.invalid:7")], 1.0, MemoryMetrics(), reactor2
        )
        service2.startService()
        self.assertEqual(reactor2.udp, [])
        self.assertEqual(len(reactor2.getDelayedCalls()), 1)
        service2.stopService()
        self.assertEqual([c for c in reactor2.getDelayedCalls() if c.active()], [])


class LoopbackTests(TestCase):
    """
    The prober against the real UDP echo on loopback.
    """

    @inlineCallbacks
    def test_zeroLossThenLoss(self) -> Any:
        """
        Against a running echo nothing is lost; once the echo stops, the
        probes are counted lost.
        """
        echo = buildUDPEchoService(
            [ListenAddress("127.0.0.1", 0)],
            DatagramLimits(),
            MemoryMetrics(),
            realReactor,
        )
        echo.startService()
        self.addCleanup(echo.stopService)
        port = echo.ports[0].getHost().port  # type: ignore[attr-defined]
        peer = buildUDPPeerService(
            [PeerTarget("127.0.0.1", port)], 0.05, MemoryMetrics(), realReactor
        )
        peer.startService()
        self.addCleanup(peer.stopService)
        link = peer.getServiceNamed(f"udp-peer 127.0.0.1:{port}")
        yield link.resolved
        prober = link.prober
        yield waitUntil(lambda: prober.counts["received"] >= 5, "five replies")
        self.assertEqual(prober.counts["lost"], 0)
        self.assertGreater(prober.rttMax, 0)
        yield echo.stopService()
        yield waitUntil(lambda: prober.counts["lost"] >= 2, "two losses")
        self.assertGreaterEqual(prober.counts["sent"], 5 + 2 + 2)
