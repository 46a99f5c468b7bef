"""
Tests for L{netdemo.multicast}: parsing, socket options and join retry with
a fake datagram reactor, the probe and beacon rules, the peer table's
timing with a clock, and real multicast pinned to 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as realReactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo import multicast
from netdemo.guard import INITIAL_ALLOWANCE, REPLY_FLOOR, ReflectionGuard
from netdemo.limits import DatagramLimits
from netdemo.mcastwire import (
    BEACON,
    IP_MULTICAST_ALL,
    IPV6_MULTICAST_ALL,
    MAX_INTERVAL,
    RTT_ANSWER,
    RTT_PROBE,
    Membership,
)
from netdemo.metrics import MemoryMetrics
from netdemo.multicast import (
    DEFAULT_MAX_PEERS,
    LABEL_HOST,
    PEER_LOG_BURST,
    PROBE_BURST,
    PROBE_GAP,
    SWEEP,
    MulticastGroup,
    MulticastResponder,
    MulticastService,
    buildMulticastService,
    parseMulticastGroup,
)
from netdemo.tap import Options, makeService
from tests.datagramhelpers import FakeDatagramReactor, FakeDatagramTransport
from tests.support import captureEvents, waitUntil


def responderOn(
    spec: MulticastGroup,
    interval: float = 1.0,
    instance: str = "me",
    limits: DatagramLimits | None = None,
    maxPeers: int = DEFAULT_MAX_PEERS,
) -> tuple[MulticastResponder, FakeDatagramReactor, MemoryMetrics]:
    """
    A started responder on a fake reactor.
    """
    reactor = FakeDatagramReactor()
    metrics = MemoryMetrics()
    service = buildMulticastService(
        [spec],
        limits or DatagramLimits(),
        interval,
        ["udp"],
        metrics,
        reactor,
        instance,
        maxPeers,
    )
    service.startService()
    [(_, responder, *_)] = reactor.multicast
    return responder, reactor, metrics


def beacon(instance: str, seq: int, sent: float, **extra: Any) -> bytes:
    """
    A beacon from another instance, with a 1-second interval.
    """
    body = {
        "v": 1,
        "id": instance,
        "host": "h",
        "services": ["udp"],
        "seq": seq,
        "time": sent,
        "interval": 1.0,
        **extra,
    }
    return BEACON + json.dumps(body).encode()


class ParseTests(SynchronousTestCase):
    """
    C{--multicast} values.
    """

    def test_forms(self) -> None:
        """
        GROUP:PORT with optional interface, ttl and loop; IPv6 in brackets.
        """
        self.assertEqual(
            parseMulticastGroup("224.0.0.1:8001"), MulticastGroup("224.0.0.1", 8001)
        )
        self.assertEqual(
            parseMulticastGroup("239.1.2.3:9,interface=eth0,ttl=4,loop=no"),
            MulticastGroup("239.1.2.3", 9, "eth0", 4, False),
        )
        self.assertEqual(
            parseMulticastGroup("[ff02::1:3]:5000,interface=lo"),
            MulticastGroup("ff02::1:3", 5000, "lo"),
        )
        self.assertEqual(
            parseMulticastGroup("[ff05::9]:5000"), MulticastGroup("ff05::9", 5000)
        )

    def test_errors(self) -> None:
        """
        Each mistake is a one-line usage error naming the value.
        """
        for value in (
            "10.0.0.1:8001",
            "224.0.0.1",
            "224.0.0.1:0",
            "224.0.0.1:8001,ttl=300",
            "224.0.0.1:8001,loop=maybe",
            "224.0.0.1:8001,color=red",
            "[ff02::1]:8001",
            "[ff05::1]:8001,interface=::1",
            "224.0.0.1:8001,interface=::1",
            "ff05::1:8001",
        ):
            with self.assertRaises(usage.UsageError, msg=value) as e:
                Options().parseOptions(["--multicast", value])
            self.assertIn(repr(value), str(e.exception))

    def test_documentedExample(self) -> None:
        """
        C{--tcp 8007 --multicast 224.0.0.1:8001} parses as written and
        builds a multicast child listening with 64 KiB reads on the wildcard.
        """
        options = Options()
        options.parseOptions(["--tcp", "8007", "--multicast", "224.0.0.1:8001"])
        reactor = FakeDatagramReactor()
        top = makeService(options, reactor)
        self.assertIsNotNone(top.getServiceNamed("multicast"))
        top.getServiceNamed("multicast").startService()
        [(port, _, interface, size, multiple)] = reactor.multicast
        self.assertEqual((port, interface, size, multiple), (8001, "", 65535, True))

    def test_interfaceIndex(self) -> None:
        """
        An IPv4 group's interface may be an index: it joins by index, not
        on an address made of the digits.
        """
        spec = parseMulticastGroup("239.9.9.9:7000,interface=1")
        self.assertEqual(spec.membership.interfaceIndex(), 1)
        request = spec.membership.join()[2]
        assert isinstance(request, bytes)
        self.assertEqual(request[4:8], bytes(4))


class SocketOptionTests(SynchronousTestCase):
    """
    What the responder sets on its socket.
    """

    def test_ipv4(self) -> None:
        """
        TTL 1, loop on, multicast-all off, the outgoing interface and the
        join on the chosen address.
        """
        responder, _, _ = responderOn(
            parseMulticastGroup("239.9.9.9:7000,interface=127.0.0.1")
        )
        sock = responder.transport.socket  # type: ignore[union-attr]
        ip = socket.IPPROTO_IP
        self.assertEqual(sock.option(ip, socket.IP_MULTICAST_TTL), 1)
        self.assertEqual(sock.option(ip, socket.IP_MULTICAST_LOOP), 1)
        self.assertEqual(sock.option(ip, IP_MULTICAST_ALL), 0)
        mreqn = (
            socket.inet_aton("239.9.9.9")
            + socket.inet_aton("127.0.0.1")
            + struct.pack("@i", 0)
        )
        self.assertEqual(sock.option(ip, socket.IP_ADD_MEMBERSHIP), mreqn)
        self.assertEqual(sock.option(ip, socket.IP_MULTICAST_IF), mreqn)
        self.assertTrue(responder.joined)

    def test_ttlAndLoop(self) -> None:
        """
        A TTL above 1 and loop off only when asked.
        """
        responder, _, _ = responderOn(
            parseMulticastGroup("239.9.9.9:7000,ttl=8,loop=no")
        )
        sock = responder.transport.socket  # type: ignore[union-attr]
        self.assertEqual(sock.option(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL), 8)
        self.assertEqual(sock.option(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP), 0)

    def test_ipv6(self) -> None:
        """
        IPv6 groups are joined with C{IPV6_JOIN_GROUP} and the interface
        index, and the hop limit is set with C{IPV6_MULTICAST_HOPS}.
        """
        responder, reactor, _ = responderOn(
            parseMulticastGroup("[ff02::1:3]:7000,interface=lo")
        )
        self.assertEqual(reactor.multicast[0][2], "::")
        sock = responder.transport.socket  # type: ignore[union-attr]
        v6 = socket.IPPROTO_IPV6
        index = socket.if_nametoindex("lo")
        self.assertEqual(sock.option(v6, socket.IPV6_MULTICAST_HOPS), 1)
        self.assertEqual(sock.option(v6, IPV6_MULTICAST_ALL), 0)
        self.assertEqual(
            sock.option(v6, socket.IPV6_JOIN_GROUP),
            socket.inet_pton(socket.AF_INET6, "ff02::1:3") + struct.pack("@i", index),
        )
        self.assertEqual(
            sock.option(v6, socket.IPV6_MULTICAST_IF), struct.pack("@i", index)
        )

    def test_joinRetried(self) -> None:
        """
        A join that fails is logged and retried with back-off until it
        works; nothing raises.
        """
        events = captureEvents(self)
        spec = parseMulticastGroup("239.9.9.9:7000,interface=netdemo-absent0")
        responder, reactor, _ = responderOn(spec)
        self.assertFalse(responder.joined)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        reactor.advance(1)
        reactor.advance(2)
        self.assertFalse(responder.joined)
        failed = [e for e in events if e.get("event") == "multicast_join_failed"]
        self.assertEqual([e["delay"] for e in failed], [1.0, 2.0, 4.0])
        # The interface appears: now the join goes through.
        responder.spec = parseMulticastGroup("239.9.9.9:7000,interface=lo")
        reactor.advance(4)
        self.assertTrue(responder.joined)

    def test_joinFailureOnce(self) -> None:
        """
        A join refused once by the kernel (address not there yet) is retried.
        """
        reactor = FakeDatagramReactor()
        spec = parseMulticastGroup("239.9.9.9:7000")
        guard = ReflectionGuard("multicast", DatagramLimits(), MemoryMetrics(), reactor)
        responder = MulticastResponder(spec, guard, "me", [], 0, reactor)
        transport = FakeDatagramTransport()
        transport.socket.failures.append(
            (socket.IP_ADD_MEMBERSHIP, OSError(19, "No such device"))
        )
        responder.makeConnection(transport)  # type: ignore[arg-type]
        self.assertFalse(responder.joined)
        reactor.advance(1)
        self.assertTrue(responder.joined)
        responder.doStop()


class ResponderTests(SynchronousTestCase):
    """
    Probes, beacons and the peer table, with a fake transport.
    """

    spec = parseMulticastGroup("239.9.9.9:7000,interface=127.0.0.1")

    def test_probeAnsweredByUnicast(self) -> None:
        """
        A probe is answered to the sender's own address, never to the
        group, and never with more bytes than the probe.
        """
        responder, _, metrics = responderOn(self.spec, interval=0)
        t = responder.transport
        responder.datagramReceived(b"Notify 0001", ("192.0.2.5", 40000))
        responder.datagramReceived(b"Client: Ping", ("192.0.2.6", 40001))
        self.assertEqual(
            t.written,  # type: ignore[union-attr]
            [
                (b"Acknowledge", ("192.0.2.5", 40000)),
                (b"Server: Pong", ("192.0.2.6", 40001)),
            ],
        )

    def test_linkLocalReplyScoped(self) -> None:
        """
        A probe from a link-local IPv6 address is answered with the group's
        interface as the scope, which Twisted drops from source addresses.
        """
        spec = parseMulticastGroup("[ff12::80:9]:7000,interface=lo")
        responder, _, _ = responderOn(spec, interval=0)
        responder.datagramReceived(b"Notify 0001", ("fe80::1", 40000))
        index = socket.if_nametoindex("lo")
        self.assertEqual(
            responder.transport.written,  # type: ignore[union-attr]
            [(b"Acknowledge", ("fe80::1", 40000, 0, index))],
        )

    def test_bareNotifyAnswered(self) -> None:
        """
        The classic bare 6-byte C{Notify} gets the 11-byte C{Acknowledge}
        by unicast: within the 12-byte floor of the amplification rule.
        """
        responder, _, metrics = responderOn(self.spec, interval=0)
        responder.datagramReceived(b"Notify", ("192.0.2.5", 40000))
        responder.datagramReceived(b"Client: Ping", ("192.0.2.5", 40001))
        self.assertEqual(
            responder.transport.written,  # type: ignore[union-attr]
            [
                (b"Acknowledge", ("192.0.2.5", 40000)),
                (b"Server: Pong", ("192.0.2.5", 40001)),
            ],
        )
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="multicast", reason="probe-too-short"
            ),
            0,
        )

    def test_longAnswerRefused(self) -> None:
        """
        An answer longer than both its probe and the 12-byte floor would
        amplify: refused and counted (no answer of today's is such; the
        check stands for any that would be).
        """
        responder, _, metrics = responderOn(self.spec, interval=0)
        self.patch(multicast, "answerTo", lambda datagram: b"x" * 13)
        responder.datagramReceived(b"Notify", ("192.0.2.5", 40000))
        self.assertEqual(responder.transport.written, [])  # type: ignore[union-attr]
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="multicast", reason="probe-too-short"
            ),
            1,
        )

    def test_guarded(self) -> None:
        """
        Probes obey the UDP echo rules: low source ports and multicast
        sources are refused; other datagrams are not answered.
        """
        responder, _, metrics = responderOn(self.spec, interval=0)
        responder.datagramReceived(b"Notify 0001", ("192.0.2.5", 123))
        responder.datagramReceived(b"Notify 0001", ("239.1.1.1", 40000))
        responder.datagramReceived(b"hello there", ("192.0.2.5", 40000))
        self.assertEqual(responder.transport.written, [])  # type: ignore[union-attr]
        for reason in ("source-port", "source-multicast", "not-a-probe"):
            self.assertEqual(
                metrics.value(
                    "netdemo_refused_total", service="multicast", reason=reason
                ),
                1,
            )

    def test_badBeacon(self) -> None:
        """
        A beacon that does not decode is refused and counted, and nothing of
        it is stored.
        """
        responder, _, metrics = responderOn(self.spec, interval=0)
        responder.datagramReceived(
            beacon("other", 0, 0.0, interval=float("nan")), ("192.0.2.5", 7000)
        )
        responder.datagramReceived(beacon("x" * 65, 0, 0.0), ("192.0.2.5", 7000))
        self.assertEqual(responder.peers, {})
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="multicast", reason="bad-beacon"
            ),
            2,
        )

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=40), st.integers(1024, 65535))
    def test_replyNeverLarger(self, datagram: bytes, port: int) -> None:
        """
        Whatever arrives (the bare C{Notify} included), no reply is longer
        than C{max(len(datagram), 12)}, at most one reply answers one
        datagram, and every reply goes to the sender.
        """
        responder, _, _ = responderOn(self.spec, interval=0)
        for prefix in (b"", b"Notify", b"Client: Ping", b"NDPING "):
            data = prefix + datagram
            before = len(responder.transport.written)  # type: ignore[union-attr]
            responder.datagramReceived(data, ("192.0.2.5", port))
            replies = responder.transport.written[before:]  # type: ignore[union-attr]
            self.assertLessEqual(len(replies), 1)
            for reply, addr in replies:
                self.assertLessEqual(len(reply), max(len(data), REPLY_FLOOR))
                self.assertEqual(addr, ("192.0.2.5", port))

    def test_beacons(self) -> None:
        """
        Beacons go to the group with the instance id and an increasing
        sequence number; the responder's own are ignored.
        """
        responder, reactor, _ = responderOn(self.spec, interval=1.0)
        reactor.advance(1)
        written = responder.transport.written  # type: ignore[union-attr]
        self.assertEqual([addr for _, addr in written], [("239.9.9.9", 7000)] * 2)
        bodies = [json.loads(d[len(BEACON) :]) for d, _ in written]
        self.assertEqual([(b["id"], b["seq"]) for b in bodies], [("me", 0), ("me", 1)])
        for data, _ in written:
            responder.datagramReceived(data, ("127.0.0.1", 7000))
        self.assertEqual(responder.peers, {})

    def test_peerTable(self) -> None:
        """
        Peers are added, their loss, duplicates and reordering counted, and
        a beacon is never answered.
        """
        responder, reactor, metrics = responderOn(self.spec, interval=0)
        for seq in (0, 1, 3, 3, 2, 6):
            responder.datagramReceived(
                beacon("other", seq, 100.0 + seq), ("192.0.2.7", 7000)
            )
        self.assertEqual(responder.transport.written, [])  # type: ignore[union-attr]
        peer = responder.peers["other"]
        self.assertEqual(
            (peer.received, peer.duplicates, peer.reordered, peer.lost), (5, 1, 1, 2)
        )
        self.assertEqual(
            metrics.value(
                "netdemo_multicast_peer_lost_total", service="multicast", peer="h/other"
            ),
            2,
        )
        self.assertEqual(
            metrics.value("netdemo_multicast_peers", service="multicast"), 1
        )

    def test_peerRoundTrip(self) -> None:
        """
        Each announce sends every known peer a unicast round-trip probe; the
        peer answers it with the same token (never longer), and the answer
        gives the peer's RTT, shown in the metrics.  Unknown or late answers
        are ignored, and an answer is never answered.
        """
        a, reactor, metrics = responderOn(self.spec, interval=1.0)
        b, _, _ = responderOn(self.spec, interval=1.0, instance="b-id")
        a.datagramReceived(beacon("b-id", 0, 0.0), ("192.0.2.8", 7000))
        a.transport.written.clear()  # type: ignore[union-attr]
        a.announce()
        reactor.advance(0)  # the probes follow once what is waiting was read
        probes = [
            (data, addr)
            for data, addr in a.transport.written  # type: ignore[union-attr]
            if not data.startswith(BEACON)
        ]
        [(probe, target)] = probes
        self.assertTrue(probe.startswith(RTT_PROBE))
        self.assertEqual(target, ("192.0.2.8", a.groupPort))
        b.transport.written.clear()  # type: ignore[union-attr]
        b.datagramReceived(probe, ("192.0.2.7", 7000))
        [(answer, back)] = b.transport.written  # type: ignore[union-attr]
        self.assertEqual(back, ("192.0.2.7", 7000))
        self.assertTrue(answer.startswith(RTT_ANSWER))
        self.assertEqual(len(answer), len(probe))
        reactor.advance(0.25)
        a.datagramReceived(answer, ("192.0.2.8", 7000))
        peer = a.peers["b-id"]
        self.assertEqual((peer.rttProbes, peer.rttAnswers), (1, 1))
        self.assertEqual(peer.rtt, 0.25)
        self.assertEqual(
            metrics.value(
                "netdemo_multicast_peer_rtt_seconds", service="multicast", peer="h/b-id"
            ),
            0.25,
        )
        # An instance does not answer its own probe (instances on one host
        # share the port, so the kernel may hand it back).
        a.transport.written.clear()  # type: ignore[union-attr]
        a.datagramReceived(probe, ("192.0.2.7", a.groupPort))
        self.assertEqual(a.transport.written, [])  # type: ignore[union-attr]
        # The same answer again, or a stranger's, changes nothing and is
        # not answered.
        a.transport.written.clear()  # type: ignore[union-attr]
        a.datagramReceived(answer, ("192.0.2.8", 7000))
        a.datagramReceived(RTT_ANSWER + b"x:1", ("192.0.2.9", 7000))
        self.assertEqual(peer.rttAnswers, 1)
        self.assertEqual(a.transport.written, [])  # type: ignore[union-attr]

    def test_answerReadBeforeTheNextProbe(self) -> None:
        """
        An answer waiting unread when the next announce is due (the process
        stood still) still counts: the next probe replaces the pending one
        only after what is waiting was read.
        """
        a, reactor, _ = responderOn(self.spec, interval=1.0)
        a.datagramReceived(beacon("b-id", 0, 0.0), ("192.0.2.8", 7000))
        reactor.advance(0)  # the first announce's probe goes to b, at 0
        written = a.transport.written  # type: ignore[union-attr]
        [probe] = [d for d, _ in written if d.startswith(RTT_PROBE)]
        reactor.rightNow += 1.5  # the process stood still
        a.announce()  # the overdue announce runs before anything is read
        a.datagramReceived(RTT_ANSWER + probe[len(RTT_PROBE) :], ("192.0.2.8", 7000))
        reactor.advance(0)
        peer = a.peers["b-id"]
        self.assertEqual((peer.rttProbes, peer.rttAnswers, peer.rtt), (2, 1, 1.5))

    def test_expiryAndGoodbye(self) -> None:
        """
        A peer silent for three of its intervals is forgotten; a goodbye
        forgets at once.
        """
        responder, reactor, _ = responderOn(self.spec, interval=1.0)
        responder.datagramReceived(beacon("a", 0, 0.0), ("192.0.2.7", 7000))
        responder.datagramReceived(beacon("b", 0, 0.0), ("192.0.2.8", 7000))
        responder.datagramReceived(beacon("b", 1, 0.0, bye=True), ("192.0.2.8", 7000))
        self.assertEqual(list(responder.peers), ["a"])
        reactor.advance(3)
        self.assertEqual(list(responder.peers), ["a"])
        reactor.advance(1)
        self.assertEqual(responder.peers, {})

    def test_noExpiryWhileBeaconsWait(self) -> None:
        """
        A sweep that finds a peer silent for three intervals forgets it only
        after the datagrams waiting were read: when the process stood still,
        the peer's beacons are sitting in the socket, and it stays.
        """
        events = captureEvents(self)
        responder, reactor, _ = responderOn(self.spec, interval=1.0)
        responder.datagramReceived(beacon("a", 0, 0.0), ("192.0.2.7", 7000))
        reactor.rightNow += 10  # the process stood still for 10 s
        responder.sweep()  # the overdue sweep runs before any reading
        responder.datagramReceived(beacon("a", 1, 10.0), ("192.0.2.7", 7000))
        reactor.advance(0)
        self.assertEqual(list(responder.peers), ["a"])
        self.assertEqual(responder.peers["a"].received, 2)
        self.assertFalse([e for e in events if e.get("event") == "multicast_peer_left"])

    def test_expiryWithoutBeacons(self) -> None:
        """
        With beacons off, the peer table is swept every L{SWEEP} seconds,
        and a peer that announced no interval expires after three of those.
        """
        responder, reactor, _ = responderOn(self.spec, interval=0)
        responder.datagramReceived(
            beacon("quiet", 0, 0.0, interval=0), ("192.0.2.7", 7000)
        )
        reactor.advance(3 * SWEEP)
        self.assertEqual(list(responder.peers), ["quiet"])
        reactor.advance(SWEEP)
        self.assertEqual(responder.peers, {})

    def test_goodbyeOnStop(self) -> None:
        """
        Stopping the service sends a goodbye beacon to the group, then
        closes the socket.
        """
        reactor = FakeDatagramReactor()
        service = buildMulticastService(
            [self.spec], DatagramLimits(), 1.0, [], MemoryMetrics(), reactor, "me"
        )
        service.startService()
        service.stopService()
        data, addr = reactor.transports[0].written[-1]
        self.assertEqual(addr, ("239.9.9.9", 7000))
        self.assertTrue(json.loads(data[len(BEACON) :])["bye"])
        self.assertTrue(reactor.transports[0].stopped)


#: Streams of forged beacons: instance number, source address, announced
#: interval, and the seconds before each.
FORGED = st.lists(
    st.tuples(
        st.integers(0, 30),
        st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7"]),
        st.floats(0, 1e13),
        st.floats(0, 0.7),
    ),
    max_size=80,
)


def changes(metrics: MemoryMetrics, change: str) -> float:
    """
    The peer table changes of one kind counted so far.
    """
    return metrics.value(
        "netdemo_multicast_peer_changes_total", service="multicast", change=change
    )


def refusedOf(metrics: MemoryMetrics, reason: str) -> float:
    """
    The multicast refusals of C{reason} counted so far.
    """
    return metrics.value("netdemo_refused_total", service="multicast", reason=reason)


def probesTo(responder: MulticastResponder) -> list[tuple[str, int]]:
    """
    The addresses of the round-trip probes the responder sent so far.
    """
    written = responder.transport.written  # type: ignore[union-attr]
    return [addr for data, addr in written if data.startswith(RTT_PROBE)]


class ForgedBeaconTests(SynchronousTestCase):
    """
    Beacons are forgeable: whatever arrives, the peer table, the probes it
    causes, the metric series and the log lines stay bounded (issue 11,
    item 4).
    """

    spec = parseMulticastGroup("239.9.9.9:7000,interface=127.0.0.1")

    def test_tableCapped(self) -> None:
        """
        The table holds at most C{maxPeers} peers; a new peer in a full
        table evicts the one silent longest, and the eviction is counted.
        """
        responder, reactor, metrics = responderOn(self.spec, maxPeers=4)
        responder.datagramReceived(beacon("steady", 0, 0.0), ("192.0.2.1", 7000))
        for i in range(20):
            reactor.advance(0.01)
            responder.datagramReceived(beacon(f"fake{i}", 0, 0.0), ("10.0.0.9", 7000))
            responder.datagramReceived(
                beacon("steady", i + 1, 0.0), ("192.0.2.1", 7000)
            )
        self.assertEqual(
            list(responder.peers), ["fake17", "fake18", "fake19", "steady"]
        )
        self.assertEqual(changes(metrics, "evicted"), 17)
        self.assertEqual(changes(metrics, "joined"), 21)
        self.assertEqual(responder.peers["steady"].received, 21)
        self.assertEqual(
            metrics.value("netdemo_multicast_peers", service="multicast"), 4
        )

    def test_defaultCap(self) -> None:
        """
        The default cap is L{DEFAULT_MAX_PEERS}, 64; 5,000 forged peers leave
        that many.
        """
        responder, reactor, metrics = responderOn(self.spec)
        for i in range(5000):
            responder.beaconReceived(beacon(f"f{i}", 0, 0.0), f"10.{i % 250}.0.1")
        self.assertEqual(len(responder.peers), DEFAULT_MAX_PEERS)
        self.assertEqual(DEFAULT_MAX_PEERS, 64)
        self.assertEqual(changes(metrics, "evicted"), 5000 - 64)

    def test_intervalClamped(self) -> None:
        """
        A peer announcing an interval of 1e12 s expires after three times
        the longest accepted interval, not never; one announcing 1e-9 s is
        swept as if it said 0.1 s.
        """
        responder, reactor, _ = responderOn(self.spec, interval=1.0)
        responder.datagramReceived(
            beacon("slow", 0, 0.0, interval=1e12), ("192.0.2.7", 7000)
        )
        responder.datagramReceived(
            beacon("fast", 0, 0.0, interval=1e-9), ("192.0.2.8", 7000)
        )
        self.assertEqual(responder.peers["slow"].interval, MAX_INTERVAL)
        self.assertEqual(responder.peers["fast"].interval, 0.1)
        reactor.advance(1)
        self.assertEqual(list(responder.peers), ["slow"])
        reactor.advance(3 * MAX_INTERVAL - 1)
        self.assertEqual(list(responder.peers), ["slow"])
        reactor.advance(1)
        self.assertEqual(responder.peers, {})

    def test_beaconsGuarded(self) -> None:
        """
        Beacons pass the reflection guard before they are parsed: low source
        ports, multicast sources and a flood from one network are refused
        and counted, and never reach the peer table.
        """
        responder, _, metrics = responderOn(self.spec)
        responder.datagramReceived(beacon("low", 0, 0.0), ("192.0.2.1", 53))
        responder.datagramReceived(beacon("group", 0, 0.0), ("239.1.1.1", 7000))
        for i in range(100):
            responder.datagramReceived(beacon(f"n{i}", 0, 0.0), (f"10.1.1.{i}", 7000))
        self.assertEqual(len(responder.peers), INITIAL_ALLOWANCE)
        self.assertEqual(responder.beaconsIn, INITIAL_ALLOWANCE)
        self.assertEqual(refusedOf(metrics, "source-port"), 1)
        self.assertEqual(refusedOf(metrics, "source-multicast"), 1)
        self.assertEqual(refusedOf(metrics, "prefix-rate"), 100 - INITIAL_ALLOWANCE)

    def test_malformedCountedNeverATraceback(self) -> None:
        """
        Malformed beacons (the issue's C{"services":5}, deeply nested JSON,
        a bad id) are counted as C{bad-beacon} and logged at a bounded rate
        with what is wrong; nothing raises, nothing is stored.
        """
        events = captureEvents(self)
        responder, _, metrics = responderOn(self.spec)
        bad = [
            beacon("a", 0, 0.0, services=5),
            BEACON + b"[" * 3000,
            beacon("a:1", 0, 0.0),
            beacon("a", 0, 0.0, host=["x"]),
        ]
        for i, datagram in enumerate(bad * 5):
            responder.datagramReceived(datagram, (f"10.{i}.0.1", 7000))
        self.assertEqual(responder.peers, {})
        self.assertEqual(refusedOf(metrics, "bad-beacon"), 20)
        logged = [e for e in events if e.get("reason") == "bad-beacon"]
        self.assertEqual(len(logged), 1)
        self.assertIn("services", logged[0]["detail"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_probeRatePerAddress(self) -> None:
        """
        Peers that share an address (forged beacons from one victim) cost
        that address one probe per round, and rounds come at most one per
        L{PROBE_GAP} on average, however short the announce interval: over
        10 s at a 0.1 s interval, 40 fake peers at one address get it 10
        probes (and a real peer elsewhere as many), the peers taking turns.
        """
        responder, reactor, _ = responderOn(self.spec, interval=0.1)
        for i in range(40):
            responder.datagramReceived(
                beacon(f"v{i}", 0, 0.0, interval=60), ("192.0.2.66", 7000)
            )
            reactor.advance(0.01)
        responder.datagramReceived(
            beacon("real", 0, 0.0, interval=60), ("198.51.100.9", 7000)
        )
        responder.transport.written.clear()  # type: ignore[union-attr]
        for _ in range(100):
            reactor.advance(0.1)
        probes = probesTo(responder)
        victim = [a for a in probes if a[0] == "192.0.2.66"]
        self.assertEqual(len(victim), 10)
        self.assertEqual(len([a for a in probes if a[0] == "198.51.100.9"]), 10)
        # Taking turns: no fake peer was probed twice while others waited.
        fakes = [p for p in responder.peers.values() if p.instance != "real"]
        self.assertEqual({p.rttProbes for p in fakes}, {0, 1})
        self.assertEqual((PROBE_GAP, PROBE_BURST), (1.0, 2))

    def test_probesGuarded(self) -> None:
        """
        Round-trip probes pass the guard too: with the budget spent, none
        is sent, and the refusals are counted.
        """
        limits = DatagramLimits(maxReplyRate=2)
        responder, reactor, metrics = responderOn(self.spec, limits=limits)
        responder.datagramReceived(beacon("a", 0, 0.0), ("192.0.2.1", 7000))
        responder.datagramReceived(beacon("b", 0, 0.0), ("192.0.2.2", 7000))
        reactor.advance(0)
        self.assertEqual(probesTo(responder), [])
        self.assertEqual(refusedOf(metrics, "global-rate"), 2)

    def test_labelsBounded(self) -> None:
        """
        Per-peer series exist for the peers in the table only, labelled with
        the host name sanitised and cut to L{LABEL_HOST} characters; the log
        events carry the sanitised name too.
        """
        events = captureEvents(self)
        responder, reactor, metrics = responderOn(self.spec, maxPeers=8)
        host = "\x1b]0;evil\x07\u202e" + "h" * 240
        for i in range(30):
            responder.beaconReceived(beacon(f"id{i}", 0, 0.0, host=host), f"10.{i}.0.1")
        peers = {
            dict(s.labels)["peer"]
            for s in metrics.samples()
            if s.name.startswith("netdemo_multicast_peer_") and "peer" in dict(s.labels)
        }
        self.assertEqual(len(peers), 8)
        for label in peers:
            name, _, instance = label.rpartition("/")
            self.assertEqual(len(name), LABEL_HOST)
            self.assertTrue(name.startswith("??0?evil??hhh"), name)
        joined = [e for e in events if e.get("event") == "multicast_peer_joined"]
        self.assertTrue(joined)
        for event in joined:
            self.assertTrue(event["hostname"].startswith("??0?evil??hhh"))

    def test_peerEventsBudget(self) -> None:
        """
        Peer events are logged up to L{PEER_LOG_BURST} at once, then one a
        second; the next one logged is preceded by a count of those that
        were not.  All are counted in the metrics.
        """
        events = captureEvents(self)
        responder, reactor, metrics = responderOn(self.spec, maxPeers=1000)
        for i in range(100):
            responder.beaconReceived(beacon(f"p{i}", 0, 0.0), f"10.{i}.0.1")
        joined = [e for e in events if e.get("event") == "multicast_peer_joined"]
        self.assertEqual(len(joined), PEER_LOG_BURST)
        reactor.advance(1)
        responder.beaconReceived(beacon("late", 0, 0.0), "10.200.0.1")
        [held] = [
            e for e in events if e.get("event") == "multicast_peer_events_suppressed"
        ]
        self.assertEqual(held["suppressed"], 100 - PEER_LOG_BURST)
        self.assertEqual(events[-1]["instance"], "late")
        self.assertEqual(changes(metrics, "joined"), 101)

    @settings(max_examples=100, deadline=None)
    @given(
        FORGED,
        st.integers(1, 6),
        st.sampled_from([0.1, 0.5, 5.0]),
    )
    def test_anyBeacons(
        self,
        beacons: list[tuple[int, str, float, float]],
        maxPeers: int,
        interval: float,
    ) -> None:
        """
        Whatever beacons arrive (ids, addresses, intervals, times), the
        table never holds more than C{maxPeers}, every peer's interval is in
        the documented range, and one address gets at most
        C{PROBE_BURST + T / PROBE_GAP} probes in any T seconds.
        """
        responder, reactor, _ = responderOn(
            self.spec, interval=interval, maxPeers=maxPeers
        )
        sent: dict[str, list[float]] = {}
        seen = 0
        for instance, address, announced, wait in beacons:
            reactor.advance(wait)
            responder.datagramReceived(
                beacon(f"i{instance}", 0, 0.0, interval=announced), (address, 7000)
            )
            self.assertLessEqual(len(responder.peers), maxPeers)
            for peer in responder.peers.values():
                self.assertTrue(peer.interval == 0 or 0.1 <= peer.interval <= 60)
            for host, _ in probesTo(responder)[seen:]:
                sent.setdefault(host, []).append(reactor.seconds())
            seen = len(probesTo(responder))
        for times in sent.values():
            for i, start in enumerate(times):
                for j in range(i, len(times)):
                    allowed = PROBE_BURST + (times[j] - start) / PROBE_GAP
                    self.assertLessEqual(j - i + 1, allowed + 1e-9)


class ListenerTests(SynchronousTestCase):
    """
    What the service says it listens on.
    """

    def test_logAndMetricAgree(self) -> None:
        """
        Each group is one C{listening} event and one
        C{netdemo_listener_info} series with the same address: the group and
        the port it listens to (not the wildcard the socket is bound to);
        the event's description is the option value.  Both go to 0 at stop.
        """
        events = captureEvents(self)
        reactor = FakeDatagramReactor()
        metrics = MemoryMetrics()
        specs = [
            parseMulticastGroup("239.9.9.9:7000,interface=127.0.0.1,ttl=2"),
            parseMulticastGroup("[ff12::80:9]:7001,interface=lo"),
            MulticastGroup("239.9.9.10", 0, "127.0.0.1"),
        ]
        service = buildMulticastService(
            specs, DatagramLimits(), 1.0, [], metrics, reactor, "me"
        )
        self.assertIsInstance(service, MulticastService)
        service.startService()
        listening = [e for e in events if e.get("event") == "listening"]
        expected = ["239.9.9.9:7000", "[ff12::80:9]:7001", "239.9.9.10:40000"]
        self.assertEqual([e["address"] for e in listening], expected)
        self.assertEqual(
            [e["description"] for e in listening], [str(spec) for spec in specs]
        )
        for address in expected:
            info = dict(service="multicast", address=address)
            self.assertEqual(metrics.value("netdemo_listener_info", **info), 1)
        self.assertTrue(self.successResultOf(service.whenListening()))
        service.stopService()
        for address in expected:
            info = dict(service="multicast", address=address)
            self.assertEqual(metrics.value("netdemo_listener_info", **info), 0)

    def test_joinInTheListeningLine(self) -> None:
        """
        The first join is told in the C{listening} line, with the interface
        actually used (name and address) and the options in their own
        syntax, not in a line of its own (issue 13: C{joined ... (ttl 1, loop
        True)}, then the listening line).
        """
        events = captureEvents(self)
        service = buildMulticastService(
            [parseMulticastGroup("239.9.9.9:7000,interface=127.0.0.1,ttl=2")],
            DatagramLimits(),
            1.0,
            [],
            MemoryMetrics(),
            FakeDatagramReactor(),
            "me",
        )
        service.startService()
        self.addCleanup(service.stopService)
        [listening] = [e for e in events if e.get("event") == "listening"]
        self.assertEqual(
            listening["detail"], "joined on lo (127.0.0.1), ttl=2, loop=yes"
        )
        self.assertEqual(
            [e for e in events if e.get("event") == "multicast_joined"], []
        )

    def test_rejoinToldApart(self) -> None:
        """
        A join after failed ones is its own C{multicast_joined} line, naming
        the interface.
        """
        events = captureEvents(self)
        responder, _, _ = responderOn(
            parseMulticastGroup("239.9.9.9:7000,interface=127.0.0.1")
        )
        responder.joined = False
        responder.join()
        [joined] = [e for e in events if e.get("event") == "multicast_joined"]
        self.assertEqual(joined["interface"], "lo (127.0.0.1)")
        self.assertEqual(joined["loop"], "yes")


class InterfaceTests(SynchronousTestCase):
    """
    The interface a group is joined on, as people read it, and the check
    that a named one exists.
    """

    def test_described(self) -> None:
        """
        By address, by name and by index: the name and the address.
        """
        index = socket.if_nametoindex("lo")
        for interface in ("127.0.0.1", "lo", str(index)):
            membership = Membership("239.9.9.9", interface)
            self.assertEqual(membership.describeInterface(7000), "lo (127.0.0.1)")
        self.assertEqual(Membership("ff12::1", "lo").describeInterface(7000), "lo")

    def test_check(self) -> None:
        """
        A name or index no interface has raises L{OSError}; an address is
        not checked (it may come later, from DHCP).
        """
        Membership("239.9.9.9", "lo").checkInterface()
        Membership("239.9.9.9", "192.0.2.77").checkInterface()
        self.assertRaises(OSError, Membership("239.9.9.9", "nosuch0").checkInterface)
        self.assertRaises(OSError, Membership("239.9.9.9", "987654").checkInterface)

    def test_options(self) -> None:
        """
        C{--multicast ...,interface=NAME} for a name no interface has is a
        usage error naming it (before: C{cannot join ... retrying} forever,
        while systemd was told READY).
        """
        e = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--multicast", "239.9.9.9:7000,interface=nosuch0"],
        )
        self.assertIn("no interface 'nosuch0'", str(e))


class _Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


class LoopbackTests(TestCase):
    """
    Real multicast on loopback: the wildcard bound, the group joined and
    the outgoing interface pinned on 127.0.0.1, so nothing leaves the host.
    """

    group = "239.255.80.77"

    def start(self, port: int, instance: str) -> tuple[Any, MulticastResponder]:
        spec = parseMulticastGroup(f"{self.group}:{port or 1},interface=127.0.0.1")
        if not port:
            spec = MulticastGroup(spec.group, 0, spec.interface)
        service = buildMulticastService(
            [spec],
            DatagramLimits(),
            0.2,
            ["udp"],
            MemoryMetrics(),
            realReactor,
            instance,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service.ports[0], service.responders[0]

    @inlineCallbacks
    def test_discoveryAndProbe(self) -> Any:
        """
        Two instances on one port find each other; a probe to the group is
        answered by unicast from 127.0.0.1 by both.
        """
        port, first = self.start(0, "first")
        number = port.getHost().port
        _, second = self.start(number, "second")
        yield waitUntil(lambda: "second" in first.peers and "first" in second.peers)
        client = _Collect()
        cport = realReactor.listenUDP(0, client, "127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(cport.stopListening)
        cport.getHandle().setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
        )
        cport.write(b"Notify 0001", (self.group, number))
        yield waitUntil(lambda: len(client.received) >= 2)
        self.assertEqual(client.received, [(b"Acknowledge", ("127.0.0.1", number))] * 2)

    @inlineCallbacks
    def test_ownGroupOnly(self) -> Any:
        """
        A datagram to another group joined by another socket on the same
        port does not reach the responder (multicast-all is off).
        """
        port, responder = self.start(0, "only")
        number = port.getHost().port
        seen: list[bytes] = []
        original = responder.datagramReceived

        def record(datagram: bytes, addr: Any) -> None:
            seen.append(datagram)
            original(datagram, addr)

        responder.datagramReceived = record  # type: ignore[method-assign]
        other = _Collect()
        oport = realReactor.listenMulticast(  # type: ignore[attr-defined]
            number, other, "", 65535, listenMultiple=True
        )
        self.addCleanup(oport.stopListening)
        yield oport.joinGroup("239.255.80.78", "127.0.0.1")
        yield waitUntil(lambda: responder.joined)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
            )
            s.sendto(b"Notify 0002 other group", ("239.255.80.78", number))
            s.sendto(b"Notify 0003 my group", (self.group, number))
        yield waitUntil(lambda: b"Notify 0003 my group" in seen and other.received)
        self.assertEqual(other.received[0][0], b"Notify 0002 other group")
        self.assertNotIn(b"Notify 0002 other group", seen)
