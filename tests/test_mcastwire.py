"""
Tests for L{netdemo.mcastwire}: the multicast wire format and the
membership socket options, with plain function calls.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo.mcastwire import (
    BEACON,
    IP_MULTICAST_ALL,
    IPV6_MULTICAST_ALL,
    MAX_BEACON,
    MAX_INTERVAL,
    MIN_INTERVAL,
    NAME_CHARACTERS,
    RTT_ANSWER,
    RTT_PROBE,
    BadBeacon,
    Beacon,
    Membership,
    answerTo,
    clampInterval,
    decodeBeacon,
    interfaceMismatch,
    isOwnToken,
    needsInterface,
    probeDatagram,
    rttAnswer,
    rttAnswerToken,
    rttProbe,
    rttToken,
    safeName,
)

#: The beacon of C{docs/multicast.md}.
DOCUMENTED = (
    b'NDBEACON {"v":1,"id":"5f0c2a9e13b7","host":"web1",'
    b'"services":["tcp","udp","multicast"],"seq":42,"time":1763775000.25,'
    b'"interval":5.0}'
)


#: Instance ids and service names: 0 to 64 of the name characters.
NAMES = st.text(alphabet=sorted(NAME_CHARACTERS), max_size=64)


def body(**changes: object) -> bytes:
    """
    The documented beacon with some keys changed (C{None} removes one).
    """
    fields = json.loads(DOCUMENTED[len(BEACON) :])
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return BEACON + json.dumps(fields).encode()


class ProbeTests(SynchronousTestCase):
    """
    Probes and their answers.
    """

    def test_classicProbes(self) -> None:
        """
        C{Notify...} is answered with C{Acknowledge}, C{Client: Ping...}
        with C{Server: Pong}; anything else is no probe.
        """
        self.assertEqual(answerTo(b"Notify 0001"), b"Acknowledge")
        self.assertEqual(answerTo(b"Notify"), b"Acknowledge")
        self.assertEqual(answerTo(b"Client: Ping"), b"Server: Pong")
        for other in (b"", b"hello", b"NDPONG x:1", b"notify 0001", BEACON):
            self.assertIsNone(answerTo(other), other)

    def test_clientProbe(self) -> None:
        """
        C{netdemo mcast probe}'s probe is a C{Notify} probe at least as long
        as its answer, with the sequence number in it.
        """
        probe = probeDatagram(7)
        self.assertEqual(probe, b"Notify 0007 netdemo-mcast-probe")
        answer = answerTo(probe)
        assert answer is not None
        self.assertLessEqual(len(answer), len(probe))

    @given(
        st.text(alphabet="0123456789abcdef", min_size=1, max_size=12), st.integers(0)
    )
    def test_roundTripProbe(self, instance: str, sequence: int) -> None:
        """
        A round-trip probe is answered with the same token, so the answer is
        exactly as long; the sender knows its own probes by the token.
        """
        token = rttToken(instance, sequence)
        probe = rttProbe(token)
        self.assertTrue(probe.startswith(RTT_PROBE))
        answer = answerTo(probe)
        self.assertEqual(answer, rttAnswer(token))
        assert answer is not None
        self.assertEqual(len(answer), len(probe))
        self.assertEqual(rttAnswerToken(answer), token)
        self.assertIsNone(rttAnswerToken(probe))
        self.assertTrue(isOwnToken(probe, instance))
        self.assertFalse(isOwnToken(probe, instance + "0"))
        self.assertFalse(isOwnToken(answer, instance))
        self.assertTrue(answer.startswith(RTT_ANSWER))


class BeaconTests(SynchronousTestCase):
    """
    Beacons: encoded as documented, decoded with every field checked.
    """

    def test_documented(self) -> None:
        """
        The documented beacon decodes; encoding it again gives the same
        bytes (keys in that order, no spaces).
        """
        beacon = decodeBeacon(DOCUMENTED)
        self.assertEqual(
            beacon,
            Beacon(
                instance="5f0c2a9e13b7",
                host="web1",
                services=("tcp", "udp", "multicast"),
                seq=42,
                time=1763775000.25,
                interval=5.0,
            ),
        )
        self.assertEqual(beacon.encode(), DOCUMENTED)

    def test_goodbye(self) -> None:
        """
        A goodbye carries C{"bye":true}; other beacons carry no C{bye}.
        """
        goodbye = Beacon("a", "h", (), 1, 2.0, 5.0, bye=True).encode()
        self.assertTrue(goodbye.endswith(b',"bye":true}'))
        self.assertTrue(decodeBeacon(goodbye).bye)
        self.assertNotIn(b"bye", Beacon("a", "h", (), 1, 2.0, 5.0).encode())

    def test_optionalAndUnknown(self) -> None:
        """
        Host, services, interval and bye may be missing (defaults: empty,
        none, 0, not leaving); unknown keys are ignored; integers are
        numbers too.
        """
        beacon = decodeBeacon(
            body(host=None, services=None, interval=None, v=2, future=[1], time=7)
        )
        self.assertEqual(
            (beacon.host, beacon.services, beacon.interval, beacon.bye, beacon.time),
            ("", (), 0.0, False, 7.0),
        )

    def test_refused(self) -> None:
        """
        Every field is checked for type, length and range: what a sender
        controls ends up in timers, metric labels and log lines.
        """
        bad = [
            b"NDBEACON ",
            b"NDBEACON {",
            b"NDBEACON [1, 2]",
            b"NDBEACON \xff\xfe",
            b'NDBEACON {"id": "a", "seq": 1, "time": 1e999}',
            b'NDBEACON {"id": "a", "seq": 1, "time": NaN}',
            b'NDBEACON {"id": "a", "seq": 1, "time": 1, "interval": Infinity}',
            b"NDBEACON " + b'{"id": "a", "seq": 1, "time": 1' + b"0" * 400 + b"}",
            b"not a beacon",
            body(id=None),
            body(id=""),
            body(id=5),
            body(id="x" * 65),
            body(id="a:b"),
            body(id="a b"),
            body(id="\u202eab"),
            body(seq=None),
            body(seq=-1),
            body(seq=2**63),
            body(seq=1.5),
            body(seq=True),
            body(seq="42"),
            body(time=None),
            body(time="now"),
            body(time=False),
            body(interval=-1),
            body(interval="5"),
            body(host=7),
            body(host="h" * 256),
            body(services="tcp"),
            body(services=["tcp", 1]),
            body(services=["s"] * 17),
            body(services=["s" * 65]),
            body(services=[""]),
            body(services=["\x1b[2J"]),
            body(bye=1),
        ]
        for datagram in bad:
            with self.assertRaises(BadBeacon, msg=datagram):
                decodeBeacon(datagram)

    def test_limits(self) -> None:
        """
        The longest accepted values are accepted.
        """
        beacon = decodeBeacon(
            body(id="x" * 64, host="h" * 255, services=["s" * 64] * 16, seq=2**63 - 1)
        )
        self.assertEqual(len(beacon.services), 16)

    @given(
        NAMES.filter(bool),
        st.text(alphabet=sorted(NAME_CHARACTERS), max_size=255),
        st.lists(NAMES.filter(bool), max_size=16),
        st.integers(0, 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=0, allow_infinity=False),
        st.booleans(),
    )
    def test_roundTrip(
        self,
        instance: str,
        host: str,
        services: list[str],
        seq: int,
        sent: float,
        interval: float,
        bye: bool,
    ) -> None:
        """
        Whatever an instance encodes within the limits decodes to the same
        beacon.
        """
        beacon = Beacon(instance, host, tuple(services), seq, sent, interval, bye)
        decoded = decodeBeacon(beacon.encode())
        self.assertEqual(decoded, beacon)
        self.assertTrue(math.isfinite(decoded.interval))

    @given(st.text(max_size=255))
    def test_hostSanitised(self, host: str) -> None:
        """
        Any host name decodes to as many characters, each either the same
        or C{?} in place of anything outside the name characters (controls,
        spaces, quotes, bidi overrides, non-ASCII): fit for a log line, a
        metric label, a page or a terminal.
        """
        decoded = decodeBeacon(Beacon("a", host, (), 1, 2.0, 5.0).encode()).host
        self.assertEqual(len(decoded), len(host))
        for original, shown in zip(host, decoded, strict=True):
            self.assertIn(shown, (original, "?"))
            self.assertIn(shown, NAME_CHARACTERS | {"?"})
        self.assertEqual(safeName("web-1.example_2"), "web-1.example_2")
        self.assertEqual(safeName("a\x1b[31m\u202eb c"), "a??31m?b?c")

    @settings(max_examples=300)
    @given(st.binary(max_size=MAX_BEACON + 100))
    def test_anyBytes(self, data: bytes) -> None:
        """
        Whatever follows C{NDBEACON }, decoding returns a beacon or raises
        L{BadBeacon}, nothing else.
        """
        with contextlib.suppress(BadBeacon):
            decodeBeacon(BEACON + data)

    def test_deepAndLong(self) -> None:
        """
        Deeply nested JSON (Python's parser raises C{RecursionError}, which
        is no C{ValueError}), a datagram longer than L{MAX_BEACON}, and the
        services of the issue-11 report are refused as bad beacons.
        """
        for datagram in (
            BEACON + b"[" * 3000,
            BEACON + b'{"a":' * 2000,
            body(host="h" * 255, pad="x" * MAX_BEACON),
            body(services=5),
        ):
            with self.assertRaises(BadBeacon, msg=datagram[:40]):
                decodeBeacon(datagram)

    def test_interval(self) -> None:
        """
        A receiver clamps an announced interval into the documented range;
        0 (none announced) stays 0.
        """
        self.assertEqual(clampInterval(0), 0)
        self.assertEqual(clampInterval(1e-9), MIN_INTERVAL)
        self.assertEqual(clampInterval(1e12), MAX_INTERVAL)
        self.assertEqual(clampInterval(5.0), 5.0)
        self.assertEqual((MIN_INTERVAL, MAX_INTERVAL), (0.1, 60.0))


class MembershipTests(SynchronousTestCase):
    """
    The socket options of a group membership.
    """

    def test_ipv4Address(self) -> None:
        """
        An IPv4 group on an interface address: the join and the outgoing
        interface are the same C{ip_mreqn} (group, address, index 0), the
        interface first.
        """
        m = Membership("239.9.9.9", "127.0.0.1")
        mreqn = (
            socket.inet_aton("239.9.9.9")
            + socket.inet_aton("127.0.0.1")
            + struct.pack("@i", 0)
        )
        ip = socket.IPPROTO_IP
        self.assertEqual(
            m.joinOptions(),
            [
                (ip, socket.IP_MULTICAST_IF, mreqn),
                (ip, socket.IP_ADD_MEMBERSHIP, mreqn),
            ],
        )

    def test_ipv4NameAndIndex(self) -> None:
        """
        An interface name or index joins by index on any address; no
        interface joins by route and leaves the outgoing interface alone.
        """
        index = socket.if_nametoindex("lo")
        group = socket.inet_aton("239.9.9.9")
        for interface in ("lo", str(index)):
            m = Membership("239.9.9.9", interface)
            self.assertEqual(m.interfaceIndex(), index)
            self.assertEqual(
                m.join()[2], group + bytes(4) + struct.pack("@i", index), interface
            )
        [(_, option, value)] = Membership("239.9.9.9").joinOptions()
        self.assertEqual(
            (option, value), (socket.IP_ADD_MEMBERSHIP, group + bytes(4) + bytes(4))
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 group joins with C{IPV6_JOIN_GROUP} (group, index) and
        sends by the interface's index.
        """
        index = socket.if_nametoindex("lo")
        m = Membership("ff02::1:3", "lo")
        v6 = socket.IPPROTO_IPV6
        self.assertEqual(
            m.joinOptions(),
            [
                (v6, socket.IPV6_MULTICAST_IF, struct.pack("@i", index)),
                (
                    v6,
                    socket.IPV6_JOIN_GROUP,
                    socket.inet_pton(socket.AF_INET6, "ff02::1:3")
                    + struct.pack("@i", index),
                ),
            ],
        )

    def test_sending(self) -> None:
        """
        TTL or hop limit, loop, and multicast-all off, per family.
        """
        v4, v6 = Membership("239.1.1.1"), Membership("ff05::1")
        ip, ip6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6
        self.assertEqual(v4.hops(4), (ip, socket.IP_MULTICAST_TTL, 4))
        self.assertEqual(v6.hops(4), (ip6, socket.IPV6_MULTICAST_HOPS, 4))
        self.assertEqual(v4.loop(False), (ip, socket.IP_MULTICAST_LOOP, 0))
        self.assertEqual(v6.loop(True), (ip6, socket.IPV6_MULTICAST_LOOP, 1))
        self.assertEqual(v4.ownGroupsOnly(), (ip, IP_MULTICAST_ALL, 0))
        self.assertEqual(v6.ownGroupsOnly(), (ip6, IPV6_MULTICAST_ALL, 0))

    def test_noSuchInterface(self) -> None:
        """
        An interface name that is not there (yet) is an C{OSError} when the
        options are made, so that the caller can retry or refuse.
        """
        m = Membership("239.9.9.9", "netdemo-absent0")
        self.assertRaises(OSError, m.interfaceIndex)
        self.assertRaises(OSError, m.joinOptions)

    def test_realSocket(self) -> None:
        """
        The kernel takes every option as made, on a wildcard-bound socket,
        for a group on the loopback interface named by address, name or
        index.
        """
        for interface in ("127.0.0.1", "lo", str(socket.if_nametoindex("lo"))):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("", 0))
                m = Membership("239.255.80.99", interface)
                options = [m.hops(1), m.loop(True), m.ownGroupsOnly(), *m.joinOptions()]
                for option in options:
                    s.setsockopt(*option)

    def test_interfaceRules(self) -> None:
        """
        IPv6 groups need a name or index; IPv4 groups take an IPv4 address,
        a name or an index.  Link- and interface-local IPv6 groups need an
        interface; other groups do not.
        """
        self.assertTrue(interfaceMismatch(True, "::1"))
        self.assertTrue(interfaceMismatch(True, "127.0.0.1"))
        self.assertTrue(interfaceMismatch(False, "::1"))
        for ipv6, interface in ((True, "eth0"), (True, "2"), (False, "127.0.0.1")):
            self.assertFalse(interfaceMismatch(ipv6, interface))
        self.assertFalse(interfaceMismatch(False, "eth0"))
        for group in ("ff02::1", "ff01::1", "ff12::80:9", "ff32::1"):
            self.assertTrue(needsInterface(group), group)
        for group in ("ff05::1", "ff0e::1", "239.255.80.1", "224.0.0.1"):
            self.assertFalse(needsInterface(group), group)
