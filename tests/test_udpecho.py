"""
Tests for L{netdemo.udpecho}: the reflection guard with a fake datagram
transport, the options, and the real echo over loopback with C{socat},
C{nc -u} and a connected client to 127.0.0.2.
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
import subprocess
from ipaddress import ip_address
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.datagram import ListenAddress, parseListenAddress
from netdemo.guard import (
    INITIAL_ALLOWANCE,
    ReflectionGuard,
    networkOf,
)
from netdemo.limits import DatagramLimits
from netdemo.metrics import MemoryMetrics
from netdemo.tap import DEFAULTS, Options, makeService
from netdemo.throttle import TokenBucket
from netdemo.udpecho import UDPEcho, buildUDPEchoService
from tests.datagramhelpers import FakeDatagramReactor, FakeDatagramTransport
from tests.support import (
    PATIENCE,
    Daemon,
    ExternalServer,
    captureEvents,
    poll,
    requireTool,
    splitAddress,
    twistdPath,
)


def echoWith(limits: DatagramLimits) -> tuple[UDPEcho, FakeDatagramTransport, Any]:
    """
    A L{UDPEcho} on a fake transport, its metrics and clock.
    """
    reactor = FakeDatagramReactor()
    metrics = MemoryMetrics()
    echo = UDPEcho(ReflectionGuard("udp-echo", limits, metrics, reactor))
    transport = FakeDatagramTransport()
    echo.makeConnection(transport)  # type: ignore[arg-type]
    echo.metrics = metrics  # type: ignore[attr-defined]
    echo.reactor = reactor  # type: ignore[attr-defined]
    return echo, transport, metrics


def refused(metrics: MemoryMetrics, reason: str) -> float:
    """
    The refusals of C{reason} counted so far.
    """
    return metrics.value("netdemo_refused_total", service="udp-echo", reason=reason)


class ReflectionGuardTests(SynchronousTestCase):
    """
    Every refusal rule, with a fake datagram transport.
    """

    def test_echo(self) -> None:
        """
        An acceptable datagram comes back byte for byte to its sender, and
        the datagram and byte totals count it.
        """
        echo, transport, metrics = echoWith(DatagramLimits())
        echo.datagramReceived(b"\x00hello\xff", ("192.0.2.1", 5000))
        self.assertEqual(transport.written, [(b"\x00hello\xff", ("192.0.2.1", 5000))])
        self.assertEqual(
            (echo.datagramsIn, echo.datagramsOut, echo.bytesOut), (1, 1, 7)
        )

    def test_cap(self) -> None:
        """
        A datagram of exactly the cap is answered; one byte more is refused,
        never truncated.
        """
        echo, transport, metrics = echoWith(DatagramLimits(maxDatagram=100))
        echo.datagramReceived(b"a" * 100, ("192.0.2.1", 5000))
        echo.datagramReceived(b"a" * 101, ("192.0.2.1", 5000))
        self.assertEqual([len(d) for d, _ in transport.written], [100])
        self.assertEqual(refused(metrics, "too-large"), 1)

    def test_portFloor(self) -> None:
        """
        Source ports below the floor (echo, chargen, DNS...) are never
        answered; the floor itself is.
        """
        echo, transport, metrics = echoWith(DatagramLimits(portFloor=1024))
        for port in (7, 19, 53, 1023):
            echo.datagramReceived(b"x", ("192.0.2.1", port))
        echo.datagramReceived(b"x", ("192.0.2.1", 1024))
        self.assertEqual([a for _, a in transport.written], [("192.0.2.1", 1024)])
        self.assertEqual(refused(metrics, "source-port"), 4)

    def test_lowerFloor(self) -> None:
        """
        The floor is a setting: 0 answers every port.
        """
        echo, transport, metrics = echoWith(DatagramLimits(portFloor=0))
        echo.datagramReceived(b"x", ("192.0.2.1", 7))
        self.assertEqual(len(transport.written), 1)

    def test_badSources(self) -> None:
        """
        Multicast, broadcast, unspecified and IPv4-mapped multicast sources
        are refused, each under its own reason.
        """
        echo, transport, metrics = echoWith(DatagramLimits())
        for host in ("224.0.0.1", "239.1.2.3", "ff02::1", "::ffff:224.0.0.5"):
            echo.datagramReceived(b"x", (host, 5000))
        echo.datagramReceived(b"x", ("255.255.255.255", 5000))
        echo.datagramReceived(b"x", ("0.0.0.0", 5000))
        echo.datagramReceived(b"x", ("::", 5000))
        self.assertEqual(transport.written, [])
        self.assertEqual(refused(metrics, "source-multicast"), 4)
        self.assertEqual(refused(metrics, "source-broadcast"), 1)
        self.assertEqual(refused(metrics, "source-unspecified"), 2)

    def test_allowList(self) -> None:
        """
        With allow-lists, only sources inside one of them are answered.
        """
        allow = (
            ipaddress.ip_network("192.0.2.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        )
        echo, transport, metrics = echoWith(DatagramLimits(allow=allow))
        echo.datagramReceived(b"a", ("192.0.2.9", 5000))
        echo.datagramReceived(b"b", ("2001:db8::1", 5000))
        echo.datagramReceived(b"c", ("198.51.100.1", 5000))
        echo.datagramReceived(b"d", ("2001:db9::1", 5000))
        self.assertEqual([d for d, _ in transport.written], [b"a", b"b"])
        self.assertEqual(refused(metrics, "not-allowed"), 2)

    def test_rate(self) -> None:
        """
        A new source network gets its initial allowance (C{burst} when that
        is lower than L{INITIAL_ALLOWANCE}) at once, then C{rate} a second;
        other networks are not affected.
        """
        echo, transport, metrics = echoWith(DatagramLimits(rate=10, burst=5))
        clock = echo.reactor  # type: ignore[attr-defined]
        for _ in range(8):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 5)
        self.assertEqual(refused(metrics, "prefix-rate"), 3)
        echo.datagramReceived(b"x", ("198.51.100.2", 5000))
        self.assertEqual(len(transport.written), 6)
        clock.advance(0.3)
        for _ in range(5):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 9)
        self.assertEqual(refused(metrics, "prefix-rate"), 5)

    def test_burstEarned(self) -> None:
        """
        A new network starts with L{INITIAL_ALLOWANCE} (at the default
        rate), not a full burst; it earns the rest of the burst at C{rate}.
        """
        echo, transport, metrics = echoWith(DatagramLimits(rate=100, burst=50))
        clock = echo.reactor  # type: ignore[attr-defined]
        for _ in range(50):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), INITIAL_ALLOWANCE)
        clock.advance(10)
        for _ in range(60):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), INITIAL_ALLOWANCE + 50)
        self.assertEqual(INITIAL_ALLOWANCE, 10)

    def test_initialScalesWithRate(self) -> None:
        """
        A network's initial allowance is what it would earn in 10 ms at
        C{rate} when that is more than L{INITIAL_ALLOWANCE}, and never more
        than C{burst}: a raised rate is not starved on its first read.
        """
        for rate, burst, expected in [(1e5, 5000, 1000), (1e8, 5000, 5000)]:
            limits = DatagramLimits(rate=rate, burst=burst, maxReplyRate=0)
            echo, transport, metrics = echoWith(limits)
            for _ in range(6000):
                echo.datagramReceived(b"x", ("192.0.2.1", 5000))
            self.assertEqual(len(transport.written), expected)

    def test_oneBucketPerNetwork(self) -> None:
        """
        Every address of a /24 (IPv4) or a /64 (IPv6) draws on one bucket:
        forging 256 addresses of one network gets no more than one address
        would.  IPv4-mapped IPv6 sources count as their IPv4 network.
        """
        echo, transport, metrics = echoWith(DatagramLimits(rate=1, burst=100))
        for i in range(256):
            echo.datagramReceived(b"x", (f"192.0.2.{i}", 5000))
        echo.datagramReceived(b"x", ("::ffff:192.0.2.77", 5000))
        self.assertEqual(len(transport.written), INITIAL_ALLOWANCE)
        for i in range(256):
            echo.datagramReceived(b"x", (f"2001:db8:0:1::{i:x}", 5000))
        echo.datagramReceived(b"x", ("2001:db8:0:2::1", 5000))
        self.assertEqual(len(transport.written), 2 * INITIAL_ALLOWANCE + 1)
        self.assertEqual(refused(metrics, "prefix-rate"), 257 - 10 + 256 - 10)
        self.assertEqual(len(echo.guard.networks), 3)

    def test_rateOff(self) -> None:
        """
        A rate of 0 turns the per-network limit off (the service's budget
        still applies).
        """
        echo, transport, metrics = echoWith(DatagramLimits(rate=0, burst=1))
        for _ in range(50):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 50)

    def test_boundedTable(self) -> None:
        """
        The table keeps at most C{maxSources} sources and evicts the least
        recently used.  Eviction cannot refill a bucket: an evicted source
        comes back with the small initial allowance, never a full burst, and
        a network's bucket lives while one of its addresses is in the table.
        """
        limits = DatagramLimits(rate=0.001, burst=1000, maxSources=2)
        echo, transport, metrics = echoWith(limits)
        guard = echo.guard
        a, b, c = ("192.0.2.1", 5000), ("198.51.100.2", 5000), ("203.0.113.3", 5000)
        for _ in range(20):
            echo.datagramReceived(b"x", a)  # 10 answered, then refused
        echo.datagramReceived(b"x", b)
        echo.datagramReceived(b"x", a)  # refused, and a is now most recent
        echo.datagramReceived(b"x", c)  # evicts b
        self.assertEqual(list(guard.sources), ["192.0.2.1", "203.0.113.3"])
        networks = {networkOf(ip_address(host)) for host in (a[0], c[0])}
        self.assertEqual(set(guard.networks), networks)
        echo.datagramReceived(b"x", a)  # still remembered: refused
        for _ in range(20):
            echo.datagramReceived(b"x", b)  # forgotten: the initial allowance only
        self.assertEqual(len(transport.written), 10 + 1 + 1 + INITIAL_ALLOWANCE)
        self.assertEqual(len(guard.sources), 2)
        self.assertEqual(len(guard.networks), 2)
        # Another address of a network in the table shares its (empty)
        # bucket: refused.
        echo.datagramReceived(b"x", ("198.51.100.3", 5000))
        self.assertEqual(len(transport.written), 22)
        self.assertEqual(len(guard.networks), 1)

    def test_replyBudget(self) -> None:
        """
        Whatever the sources, the service sends at most C{maxReplyRate}
        datagrams a second after a burst of one second's worth; the rest
        are refused as C{global-rate}.
        """
        limits = DatagramLimits(maxReplyRate=100, maxSources=50)
        echo, transport, metrics = echoWith(limits)
        clock = echo.reactor  # type: ignore[attr-defined]
        for i in range(1000):
            echo.datagramReceived(b"x", (f"10.{i // 200}.{i % 200}.1", 5000))
        self.assertEqual(len(transport.written), 100)
        self.assertEqual(refused(metrics, "global-rate"), 900)
        clock.advance(0.5)
        for i in range(1000):
            echo.datagramReceived(b"x", (f"10.9.{i % 200}.{i // 200 + 2}", 5000))
        self.assertEqual(len(transport.written), 150)

    def test_replyBytes(self) -> None:
        """
        The byte budget refuses replies past C{maxReplyBytes} a second
        (C{global-bytes}); its burst is at least one largest datagram, so
        any datagram under the cap can be answered eventually.
        """
        limits = DatagramLimits(maxReplyBytes=1000, maxDatagram=1500)
        echo, transport, metrics = echoWith(limits)
        clock = echo.reactor  # type: ignore[attr-defined]
        for _ in range(5):
            echo.datagramReceived(b"y" * 400, ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 3)  # 1500 bytes of burst
        self.assertEqual(refused(metrics, "global-bytes"), 2)
        clock.advance(1.5)
        echo.datagramReceived(b"y" * 1500, ("198.51.100.1", 5000))
        self.assertEqual(len(transport.written), 4)

    def test_budgetOff(self) -> None:
        """
        A budget of 0 datagrams and 0 bytes a second is no budget.
        """
        limits = DatagramLimits(maxReplyRate=0, maxReplyBytes=0, rate=0)
        echo, transport, metrics = echoWith(limits)
        for _ in range(5000):
            echo.datagramReceived(b"z" * 1000, ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 5000)

    def test_tokenBucket(self) -> None:
        """
        L{TokenBucket} (probe rounds, log lines) earns C{rate} a second up to
        C{burst}; a clock that steps back neither adds nor takes tokens,
        and earning goes on from the new time.
        """
        bucket = TokenBucket(rate=2, burst=3, now=100.0, tokens=5)
        self.assertEqual([bucket.take(100.0) for _ in range(4)], [True] * 3 + [False])
        self.assertTrue(bucket.take(100.5))
        self.assertFalse(bucket.take(10.0))
        self.assertTrue(bucket.take(10.5))

    def test_clockStepsBack(self) -> None:
        """
        A clock that steps back (an NTP step) takes no tokens away: what a
        network has earned stays usable, not owed for an hour.
        """
        echo, transport, metrics = echoWith(DatagramLimits(rate=10, burst=10))
        clock = echo.reactor  # type: ignore[attr-defined]
        for _ in range(10):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        clock.advance(1)
        echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        clock.rightNow -= 3600
        for _ in range(10):
            echo.datagramReceived(b"x", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 20)
        self.assertEqual(refused(metrics, "prefix-rate"), 1)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 70000),
                st.integers(0, 1500),
                st.floats(0, 0.05),
            ),
            max_size=200,
        ),
        st.integers(1, 40),
        st.integers(1, 6000),
        st.integers(1, 30),
    )
    def test_budgetNeverExceeded(
        self,
        datagrams: list[tuple[int, int, float]],
        rate: int,
        volume: int,
        maxSources: int,
    ) -> None:
        """
        Over any sequence of sources (from few networks or many, more than
        the table holds, so that they rotate through it), sizes and times,
        the replies of every stretch of time stay within the budget: one
        second's worth at once (for bytes, at least one largest datagram),
        then C{maxReplyRate} datagrams and C{maxReplyBytes} bytes a second.
        """
        limits = DatagramLimits(
            maxReplyRate=rate,
            maxReplyBytes=volume,
            maxDatagram=1500,
            maxSources=maxSources,
        )
        echo, transport, metrics = echoWith(limits)
        clock = echo.reactor  # type: ignore[attr-defined]
        replies: list[tuple[float, int]] = []
        for source, size, wait in datagrams:
            clock.advance(wait)
            host = f"10.{source % 7}.{source // 256 % 256}.{source % 256}"
            before = len(transport.written)
            echo.datagramReceived(b"q" * size, (host, 5000))
            if len(transport.written) > before:
                replies.append((clock.seconds(), size))
        sent = [0]
        for _, size in replies:
            sent.append(sent[-1] + size)
        burst = max(volume, 1500)
        for i, (start, _) in enumerate(replies):
            for j in range(i, len(replies)):
                span = replies[j][0] - start
                self.assertLessEqual(j - i + 1, rate + rate * span + 1e-6)
                self.assertLessEqual(
                    sent[j + 1] - sent[i], burst + volume * span + 1e-6
                )

    def test_refusalsLoggedAtBoundedRate(self) -> None:
        """
        A flood of refusals is one warning event per reason per interval,
        with a stable C{event} key, while every refusal is counted.
        """
        events = captureEvents(self)
        echo, transport, metrics = echoWith(DatagramLimits())
        for _ in range(100):
            echo.datagramReceived(b"x", ("192.0.2.1", 53))
        mine = [e for e in events if e.get("event") == "refused"]
        self.assertEqual(len(mine), 1)
        self.assertEqual(mine[0]["reason"], "source-port")
        self.assertEqual(mine[0]["peer"], "192.0.2.1:53")
        self.assertEqual(refused(metrics, "source-port"), 100)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.binary(max_size=300),
                st.sampled_from(
                    ["192.0.2.1", "192.0.2.2", "224.0.0.1", "0.0.0.0", "2001:db8::1"]
                ),
                st.integers(0, 65535),
                st.floats(0, 2),
            ),
            max_size=60,
        ),
        st.integers(0, 300),
    )
    def test_neverLarger(
        self, datagrams: list[tuple[bytes, str, int, float]], cap: int
    ) -> None:
        """
        Whatever arrives, every reply is a datagram that was received from
        that address, so never longer than its request.
        """
        echo, transport, metrics = echoWith(
            DatagramLimits(maxDatagram=cap, rate=5, burst=3, maxSources=2)
        )
        clock = echo.reactor  # type: ignore[attr-defined]
        for data, host, port, wait in datagrams:
            clock.advance(wait)
            before = len(transport.written)
            echo.datagramReceived(data, (host, port))
            for reply, addr in transport.written[before:]:
                self.assertEqual(addr, (host, port))
                self.assertLessEqual(len(reply), len(data))
                self.assertEqual(reply, data)
            self.assertLessEqual(len(transport.written) - before, 1)


class ParseTests(SynchronousTestCase):
    """
    C{--udp} values and the other datagram options.
    """

    def test_listenAddresses(self) -> None:
        """
        A bare port, an IPv4 address and port, and a bracketed IPv6 address.
        """
        self.assertEqual(parseListenAddress("9000"), ListenAddress("", 9000))
        self.assertEqual(
            parseListenAddress("127.0.0.1:9000"), ListenAddress("127.0.0.1", 9000)
        )
        self.assertEqual(parseListenAddress("[::1]:9000"), ListenAddress("::1", 9000))
        self.assertEqual(str(ListenAddress("::1", 9000)), "[::1]:9000")

    def test_badListenAddresses(self) -> None:
        """
        Bad values are one-line usage errors naming the value.
        """
        for value in ("x", "::1:9000", "[::1]9000", "1.2.3.4:70000", "foo:9"):
            options = Options()
            with self.assertRaises(usage.UsageError) as e:
                options.parseOptions(["--udp", value])
            self.assertIn(repr(value), str(e.exception))
            self.assertIn("--udp", str(e.exception))

    def test_systemdNames(self) -> None:
        """
        C{--udp systemd:NAME} names an inherited socket; an empty or odd name
        is a usage error.
        """
        options = Options()
        options.parseOptions(["--udp", "systemd:udp-echo"])
        self.assertEqual(options["udp"], [ListenAddress("", 0, "udp-echo")])
        self.assertEqual(str(options["udp"][0]), "systemd:udp-echo")
        for value in ("systemd:", "systemd:a b"):
            with self.assertRaises(usage.UsageError) as e:
                Options().parseOptions(["--udp", value])
            self.assertIn(repr(value), str(e.exception))

    def test_options(self) -> None:
        """
        The settings reach L{DatagramLimits}.
        """
        options = Options()
        options.parseOptions(
            [
                "--udp",
                "9000",
                "--udp",
                "[::1]:9001",
                "--udp-max-datagram",
                "1000",
                "--udp-port-floor",
                "0",
                "--udp-rate",
                "5",
                "--udp-burst",
                "7",
                "--udp-max-sources",
                "3",
                "--udp-allow",
                "10.0.0.0/8",
                "--udp-allow",
                "2001:db8::/32",
                "--udp-max-reply-rate",
                "500/s",
                "--udp-max-reply-bytes",
                "1MiB/s",
            ]
        )
        self.assertEqual(
            options["udp"], [ListenAddress("", 9000), ListenAddress("::1", 9001)]
        )
        self.assertEqual(
            options.datagramLimits(),
            DatagramLimits(
                maxDatagram=1000,
                portFloor=0,
                rate=5.0,
                burst=7,
                maxSources=3,
                allow=(
                    ipaddress.ip_network("10.0.0.0/8"),
                    ipaddress.ip_network("2001:db8::/32"),
                ),
                maxReplyRate=500.0,
                maxReplyBytes=float(1 << 20),
            ),
        )
        self.assertEqual(options["multicast"], [])

    def test_budgetOptions(self) -> None:
        """
        The reply budget takes C{N} or C{N/s}, sizes for bytes, and 0 for no
        limit; its defaults are 2000 datagrams and 2 MB a second.
        """
        limits = Options()
        limits.parseOptions([])
        self.assertEqual(
            (
                limits.datagramLimits().maxReplyRate,
                limits.datagramLimits().maxReplyBytes,
            ),
            (2000.0, 2_000_000.0),
        )
        for rate, volume, expected in [
            ("0", "0", (0.0, 0.0)),
            ("2000", "2000000", (2000.0, 2_000_000.0)),
            ("150.5/s", "64KiB/s", (150.5, 65536.0)),
            (" 7/S ", "2MB", (7.0, 2_000_000.0)),
        ]:
            options = Options()
            options.parseOptions(
                ["--udp-max-reply-rate", rate, "--udp-max-reply-bytes", volume]
            )
            got = options.datagramLimits()
            self.assertEqual((got.maxReplyRate, got.maxReplyBytes), expected)

    def test_badDatagramOptions(self) -> None:
        """
        Bad values of the datagram bounds are one-line usage errors naming
        the option and the value.
        """
        for option, value in [
            ("--udp-max-reply-rate", "-1"),
            ("--udp-max-reply-rate", "fast"),
            ("--udp-max-reply-rate", "inf"),
            ("--udp-max-reply-rate", "nan"),
            ("--udp-max-reply-bytes", "-5MB/s"),
            ("--udp-max-reply-bytes", "lots"),
            ("--multicast-max-peers", "0"),
            ("--multicast-max-peers", "many"),
            ("--announce-interval", "0.01"),
            ("--announce-interval", "61"),
            ("--announce-interval", "1e12"),
            ("--announce-interval", "nan"),
        ]:
            with self.assertRaises(usage.UsageError, msg=(option, value)) as e:
                Options().parseOptions([option, value])
            message = str(e.exception)
            self.assertNotIn("\n", message)
            self.assertIn(option, message)
            self.assertIn(repr(value), message)

    def test_multicastPortBelowFloor(self) -> None:
        """
        A multicast group on a port below the source port floor is refused:
        the other instances would refuse its beacons and probes.  Lowering
        the floor allows it.
        """
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--multicast", "224.0.0.1:500"])
        self.assertIn("--udp-port-floor", str(e.exception))
        options = Options()
        options.parseOptions(
            ["--multicast", "224.0.0.1:500", "--udp-port-floor", "500"]
        )
        self.assertEqual(options["multicast"][0].port, 500)

    def test_multicastOptions(self) -> None:
        """
        C{--multicast-max-peers} and C{--announce-interval} reach the
        responders; the defaults are 64 and 5 s.
        """
        options = Options()
        options.parseOptions(["--multicast", "239.9.9.9:7000"])
        self.assertEqual(
            (options["multicast-max-peers"], options["announce-interval"]), (64, 5.0)
        )
        options = Options()
        options.parseOptions(
            [
                "--multicast",
                "239.9.9.9:7000",
                "--multicast-max-peers",
                "3",
                "--announce-interval",
                "0",
            ]
        )
        reactor = FakeDatagramReactor()
        top = makeService(options, reactor)
        top.getServiceNamed("multicast").startService()
        [responder] = top.getServiceNamed("multicast").responders
        self.assertEqual((responder.maxPeers, responder.announceInterval), (3, 0.0))
        top.getServiceNamed("multicast").stopService()

    def test_badAllow(self) -> None:
        """
        A bad network is a usage error naming it.
        """
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--udp-allow", "10.0.0.0/33"])
        self.assertIn("'10.0.0.0/33'", str(e.exception))

    def test_defaults(self) -> None:
        """
        With no service option, UDP echo listens on 127.0.0.1:8009 and the
        multicast responder joins an administratively scoped group on
        127.0.0.1.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["udp"], [ListenAddress("127.0.0.1", 8009)])
        [group] = options["multicast"]
        self.assertTrue(
            ipaddress.ip_address(group.group) in ipaddress.ip_network("239.0.0.0/8")
        )
        self.assertEqual(
            (group.port, group.interface, group.ttl), (8001, "127.0.0.1", 1)
        )
        self.assertIn("udp", DEFAULTS)

    def test_makeServiceShape(self) -> None:
        """
        L{makeService} builds a C{udp-echo} child that listens with whole
        64 KiB reads on every address of a bare port.
        """
        options = Options()
        options.parseOptions(["--udp", "9000", "--udp", "127.0.0.1:9001"])
        reactor = FakeDatagramReactor()
        top = makeService(options, reactor)
        service = top.getServiceNamed("udp-echo")
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(
            [(p, i, size) for p, _, i, size in reactor.udp],
            [(9000, "0.0.0.0", 65535), (9000, "::", 65535), (9001, "127.0.0.1", 65535)],
        )
        self.assertEqual(len(service.ports), 3)

    def test_listenerInfo(self) -> None:
        """
        Each bound socket is a C{netdemo_listener_info} series for the status
        page: 1 while listening, 0 once stopped.
        """
        reactor = FakeDatagramReactor()
        metrics = MemoryMetrics()
        service = buildUDPEchoService(
            [ListenAddress("127.0.0.1", 9001)], DatagramLimits(), metrics, reactor
        )
        service.startService()
        info = dict(service="udp-echo", address="127.0.0.1:9001")
        self.assertEqual(metrics.value("netdemo_listener_info", **info), 1)
        service.stopService()
        self.assertEqual(metrics.value("netdemo_listener_info", **info), 0)


def roundTrip(
    data: bytes, address: str, family: int = socket.AF_INET, timeout: float = 1.0
) -> bytes | None:
    """
    Send C{data} from a connected socket and return the reply, or L{None}
    after C{timeout} seconds.
    """
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(splitAddress(address))
        s.settimeout(timeout)
        s.send(data)
        try:
            return s.recv(70000)
        except TimeoutError:
            return None


class LoopbackTests(SynchronousTestCase):
    """
    The real daemon over loopback, with real clients.
    """

    cap = 2000
    daemon: Daemon
    ipv4: str
    wildcard: str
    wildcard6: str
    ipv6: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = Daemon(
            "--udp",
            "127.0.0.1:0",
            "--udp",
            "0",
            "--udp",
            "[::1]:0",
            "--udp-max-datagram",
            str(cls.cap),
        )
        try:
            cls.daemon.waitListening(4)
            cls.ipv4, cls.wildcard, cls.wildcard6, cls.ipv6 = cls.daemon.addresses(
                "udp-echo"
            )
        except BaseException:
            cls.daemon.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.close()

    def test_socat(self) -> None:
        """
        C{socat} gets back exactly what it sent for 1 and 1472 bytes and the
        cap.
        """
        socat = requireTool("socat", "socat")
        host, port = splitAddress(self.ipv4)
        for size in (1, 1472, self.cap):
            data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            result = subprocess.run(
                [socat, "-t", "2", "-b", "70000", "-", f"UDP:{host}:{port}"],
                input=data,
                capture_output=True,
                timeout=20,
            )
            self.assertEqual(result.stdout, data, f"size {size}")

    def test_nc(self) -> None:
        """
        C{nc -u} gets back exactly what it sent, over IPv4 and IPv6.
        """
        nc = requireTool("nc", "netcat-openbsd")
        for address, flag in ((self.ipv4, "-4"), (self.ipv6, "-6")):
            host, port = splitAddress(address)
            data = b"n" * 1472
            result = subprocess.run(
                [nc, flag, "-u", "-w", "2", host, str(port)],
                input=data,
                capture_output=True,
                timeout=20,
            )
            self.assertEqual(result.stdout, data, address)

    def test_emptyAndOverCap(self) -> None:
        """
        An empty datagram gets an empty reply; one byte over the cap gets
        none, and the refusal is logged with its reason.
        """
        self.assertEqual(roundTrip(b"", self.ipv4), b"")
        self.assertIsNone(roundTrip(b"y" * (self.cap + 1), self.ipv4))
        self.daemon.waitFor(r"refused a datagram from 127\.0\.0\.1:\d+ \(too-large\)")

    def test_connectedToSecondaryAddress(self) -> None:
        """
        A connected client to 127.0.0.2 gets its reply while the service
        listens on the wildcard: the reply leaves from 127.0.0.2.  The same
        for IPv6 on the wildcard's IPv6 socket.
        """
        _, port = splitAddress(self.wildcard)
        self.assertEqual(roundTrip(b"second", f"127.0.0.2:{port}"), b"second")
        self.assertEqual(roundTrip(b"first", f"127.0.0.1:{port}"), b"first")
        _, port6 = splitAddress(self.wildcard6)
        self.assertEqual(roundTrip(b"six", f"[::1]:{port6}", socket.AF_INET6), b"six")

    def test_broadcastDestination(self) -> None:
        """
        A datagram sent to a broadcast address (127.255.255.255 on
        loopback) is not answered by the wildcard socket.
        """
        _, port = splitAddress(self.wildcard)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.bind(("127.0.0.1", 0))
            s.settimeout(1.0)
            s.sendto(b"everyone", ("127.255.255.255", port))
            with self.assertRaises(TimeoutError):
                s.recvfrom(100)
        self.daemon.waitFor(r"\(destination-not-unicast\)")

    def test_lowSourcePort(self) -> None:
        """
        A datagram from a source port below 1024 gets no answer (we run as
        root, so the test can bind one).
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # Any free port below 1024: a fixed one may be taken by another
            # run of the suite on the same machine.
            for port in random.sample(range(600, 1024), 50):
                try:
                    s.bind(("127.0.0.1", port))
                except PermissionError:
                    self.skipTest("binding a port below 1024 needs root")
                except OSError:
                    continue
                break
            else:
                self.fail("no free UDP port below 1024 in 50 tries")
            s.settimeout(1.0)
            s.sendto(b"loop", splitAddress(self.ipv4))
            with self.assertRaises(TimeoutError):
                s.recvfrom(100)
        self.daemon.waitFor(rf"127\.0\.0\.1:{port} \(source-port\)")


class BusyPortTests(SynchronousTestCase):
    """
    A UDP port that is taken fails start-up.
    """

    def test_busy(self) -> None:
        """
        The daemon exits with status 1 and says why, instead of running
        without its UDP listener.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # This test's own socket holds the port while the daemon tries.
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            daemon = Daemon("--udp", f"127.0.0.1:{port}")
            self.addCleanup(daemon.close)
            self.assertEqual(daemon.process.wait(30), 1)
        text = daemon.log()
        self.assertNotIn("Traceback", text)
        [line] = [line for line in text.splitlines() if "cannot start" in line]
        self.assertIn(f"127.0.0.1:{port}", line)
        self.assertIn("Address already in use", line)


class SocketActivationTests(SynchronousTestCase):
    """
    C{--udp systemd:NAME} under C{systemd-socket-activate --datagram}.
    """

    def test_adoptedWildcard(self) -> None:
        """
        The daemon adopts the wildcard-bound socket systemd passes (made
        non-blocking, so it also stops on SIGTERM), answers the datagram
        that started it, and replies from the right address to a connected
        client of 127.0.0.2.
        """
        activate = requireTool("systemd-socket-activate", "systemd")

        def command(port: int) -> list[str]:
            return [
                activate,
                "--datagram",
                f"--listen=0.0.0.0:{port}",
                "--fdname=echo",
                twistdPath(),
                "-n",
                "--pidfile=",
                "--logfile=-",
                "netdemo",
                "--udp",
                "systemd:echo",
            ]

        # systemd-socket-activate binds the port itself (it takes no port 0)
        # and says so, or that it is in use: then another port is tried.
        activator = ExternalServer(
            command, r"Listening on", r"Address already in use", "socket-activate"
        )
        self.addCleanup(activator.close)
        port = activator.start()
        process = activator.process
        assert process is not None
        # This datagram starts the daemon: give it time.
        first = roundTrip(b"first", f"127.0.0.1:{port}", timeout=30)
        self.assertEqual(first, b"first")
        [address] = poll(
            lambda: re.findall(r"udp-echo: listening on (\S+) ", activator.output()),
            "the udp-echo listening event",
        )
        self.assertEqual(address, f"0.0.0.0:{port}")
        self.assertEqual(roundTrip(b"second", f"127.0.0.2:{port}"), b"second")
        activator.stop()
        self.assertIn(process.returncode, (0, -15))


class BuilderTests(SynchronousTestCase):
    """
    L{buildUDPEchoService} with a real reactor port.
    """

    def echoOn(
        self, limits: DatagramLimits, requests: list[bytes], s: socket.socket
    ) -> MemoryMetrics:
        """
        Start UDP echo on 127.0.0.1 with the real reactor, send it
        C{requests} from C{s}, and have its port read them in one batch.

        @return: Its metrics.
        """
        from twisted.internet import reactor

        metrics = MemoryMetrics()
        service = buildUDPEchoService(
            [ListenAddress("127.0.0.1", 0)], limits, metrics, reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = service.ports[0]
        s.connect(("127.0.0.1", port.getHost().port))  # type: ignore[attr-defined]
        for request in requests:
            s.send(request)
        port.doRead()  # type: ignore[attr-defined]
        return metrics

    def test_metricsFromRealPort(self) -> None:
        """
        The totals of the packet-information port reach the metrics.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            metrics = self.echoOn(DatagramLimits(), [b"12345"] * 3, s)
            s.settimeout(1)
            self.assertEqual([s.recv(10) for _ in range(3)], [b"12345"] * 3)
        self.assertEqual(
            metrics.value("netdemo_datagrams_received_total", service="udp-echo"), 3
        )
        self.assertEqual(
            metrics.value("netdemo_sent_bytes_total", service="udp-echo"), 15
        )

    def test_budgetPerBatch(self) -> None:
        """
        The packet-information port takes the reply budget once per batch:
        within one read of 20 requests, 5 are answered at 5 a second, and a
        byte budget stops the replies that would not fit; the rest are
        refused and counted.
        """
        requests = [b"%030d" % i for i in range(20)]
        for limits, answered, reason in [
            (DatagramLimits(maxReplyRate=5), 5, "global-rate"),
            (DatagramLimits(maxReplyBytes=100, maxDatagram=50), 3, "global-bytes"),
        ]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                metrics = self.echoOn(limits, requests, s)
            self.assertEqual(
                metrics.value("netdemo_datagrams_sent_total", service="udp-echo"),
                answered,
            )
            self.assertEqual(refused(metrics, reason), 20 - answered)


class _RecordingSocket:
    """
    A socket that records which call sent each reply (C{sendto} or
    C{sendmsg}) and is the wrapped socket otherwise.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendto(self, *args: Any) -> int:
        self.calls.append("sendto")
        return self._sock.sendto(*args)

    def sendmsg(self, *args: Any) -> int:
        self.calls.append("sendmsg")
        return self._sock.sendmsg(*args)


class PlainSendTests(SynchronousTestCase):
    """
    A wildcard IPv4 port replies with a plain C{sendto} when the kernel
    would choose the address the client sent to anyway, and with
    C{sendmsg} and the packet information otherwise.
    """

    def setUp(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import Clock

        service = buildUDPEchoService(
            [ListenAddress("0.0.0.0", 0)], DatagramLimits(), MemoryMetrics(), reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        # A PacketInfoPort (the list is typed with its interface).
        self.port: Any = cast(Any, service.ports[0])
        self.clock = Clock()
        self.clock.advance(1000)
        self.port.protocol.guard.clock = self.clock
        self.recording = _RecordingSocket(self.port.socket)
        self.port.socket = self.recording
        self.addCleanup(setattr, self.port, "socket", self.recording._sock)

    def ask(self, server: str, data: bytes) -> bytes:
        """
        Send C{data} from 127.0.0.1 to C{server} on the port, connected (so
        only a reply from C{server} arrives), let the port read it, and
        return the reply.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.connect((server, self.port.getHost().port))
            s.send(data)
            self.port.doRead()
            s.settimeout(PATIENCE)
            return s.recv(100)

    def test_sameSource(self) -> None:
        """
        A client that sent to the address the kernel replies from gets its
        replies through C{sendto} once it was checked; one that sent to
        another address (127.0.0.2) gets them from there through
        C{sendmsg}, every time.
        """
        self.assertEqual(self.ask("127.0.0.1", b"a"), b"a")
        self.assertEqual(self.ask("127.0.0.1", b"b"), b"b")
        self.assertEqual(self.recording.calls, ["sendto", "sendto"])
        self.assertEqual(list(self.port._sameSource), ["127.0.0.1"])
        self.assertEqual(self.ask("127.0.0.2", b"c"), b"c")
        self.assertEqual(self.ask("127.0.0.2", b"d"), b"d")
        self.assertEqual(self.recording.calls[2:], ["sendmsg", "sendmsg"])
        self.assertEqual(len(self.port._otherSource), 1)

    def test_forgotten(self) -> None:
        """
        What was learnt of the kernel's choice is forgotten after
        C{SAME_SOURCE_SECONDS} (a route or an address may have changed), and
        when the clock steps back.
        """
        from netdemo.udpecho import SAME_SOURCE_SECONDS

        self.assertEqual(self.ask("127.0.0.1", b"a"), b"a")
        self.assertEqual(self.ask("127.0.0.2", b"b"), b"b")
        self.clock.advance(SAME_SOURCE_SECONDS / 2)
        self.port.doRead()
        self.assertEqual(list(self.port._sameSource), ["127.0.0.1"])
        self.clock.advance(SAME_SOURCE_SECONDS / 2)
        self.port.doRead()
        self.assertEqual(self.port._sameSource, {})
        self.assertEqual(self.port._otherSource, set())
        self.assertEqual(self.ask("127.0.0.1", b"c"), b"c")
        self.clock.rightNow -= 5
        self.port.doRead()
        self.assertEqual(self.port._sameSource, {})

    def test_broadcastStillRefused(self) -> None:
        """
        A client whose replies go through C{sendto} is still refused when it
        sends to a broadcast address.
        """
        self.assertEqual(self.ask("127.0.0.1", b"a"), b"a")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.bind(("127.0.0.1", 0))
            s.sendto(b"everyone", ("127.255.255.255", self.port.getHost().port))
            self.port.doRead()
        self.assertEqual(self.recording.calls, ["sendto"])
        self.assertEqual(
            refused(self.port.protocol.guard.metrics, "destination-not-unicast"), 1
        )
