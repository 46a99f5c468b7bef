# -*- test-case-name: tests.test_multicast -*-
"""
The multicast responder: join a group, answer probes by unicast, announce
this instance and keep a table of the other instances heard.

Datagrams on the group (C{docs/multicast.md} documents the formats):

  - B{probe}: a datagram that starts with C{Notify} (the bare 6-byte
    C{Notify} of the classic tutorial included) is answered with
    C{Acknowledge}; the classic C{Client: Ping} gets C{Server: Pong}.  The
    answer goes by unicast to the sender, never to the group, is never
    longer than C{max(len(probe), REPLY_FLOOR)} (12) bytes
    (L{replyAllowed}), and is subject to the same L{ReflectionGuard} as UDP
    echo;
  - B{beacon}: C{NDBEACON } followed by a JSON object (instance id,
    hostname, services, sequence number, send time, interval, and C{bye} on
    shutdown), sent to the group every C{--announce-interval} seconds.
    Beacons are never answered.

Beacons are forgeable, and each peer they create costs a round-trip probe
to its (forgeable) address every interval, metric series and log lines, so
everything about them is bounded: a beacon passes the same
L{ReflectionGuard} as a probe (source port floor, source address checks,
the per-network bucket, the service's budget) before it is parsed; every
field is checked (L{decodeBeacon}) and the announced interval clamped
(L{clampInterval}); the peer table holds at most C{maxPeers} peers per
group (C{--multicast-max-peers}), evicting the one silent longest; one
address gets at most C{PROBE_BURST + T / PROBE_GAP} round-trip probes in
any T seconds, each through the guard too; per-peer metric series exist only
for the peers in the table, labelled with a sanitised host name of at most
L{LABEL_HOST} characters; peer events are logged within a budget
(L{PEER_LOG_BURST}, then L{PEER_LOG_RATE} a second) and counted in
C{netdemo_multicast_peer_changes_total}.

The formats and the membership socket options are L{netdemo.mcastwire}'s,
shared with C{netdemo mcast}.  Joins are done with C{setsockopt} for both
families, with C{IP_MULTICAST_ALL} / C{IPV6_MULTICAST_ALL} turned off so
the socket sees its own groups only, a TTL (hop limit) of 1 unless asked,
and a join that fails (interface or address not there yet) is logged and
retried with back-off; it never stops the daemon.

Silence is judged after reading: a peer expires, and a round-trip probe is
replaced by the next, only once the reactor has read the datagrams waiting
(L{AfterReading}), so a process that stood still for a while (a loaded
host) does not forget peers whose beacons are sitting unread.

Each group is one socket of one L{MulticastService}, bound to the wildcard
address and the group's port; it logs and labels its listener with the
group and port it listens to (C{239.255.80.1:8001}), not the wildcard
address, and the option value as the description.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import socket
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel

from netdemo.datagram import MAX_PACKET_SIZE, AfterReading, DatagramService
from netdemo.guard import ReflectionGuard, replyAllowed
from netdemo.internals import listenMulticastSharing
from netdemo.limits import DatagramLimits
from netdemo.mcastwire import (
    BEACON,
    BadBeacon,
    Beacon,
    Membership,
    answerTo,
    clampInterval,
    decodeBeacon,
    interfaceMismatch,
    isOwnToken,
    needsInterface,
    rttAnswerToken,
    rttProbe,
    rttToken,
)
from netdemo.metrics import IMetrics, Sample, sampleOf
from netdemo.throttle import TokenBucket

__all__ = [
    "MulticastGroup",
    "MulticastResponder",
    "MulticastService",
    "Peer",
    "buildMulticastService",
    "parseMulticastGroup",
]

SERVICE_NAME = "multicast"

#: Seconds between join attempts: doubles from the first to the last.
JOIN_RETRY = (1.0, 30.0)

#: Sequence numbers remembered per peer for duplicate detection.
HISTORY = 256

#: Seconds between sweeps of the peer table when no beacons are sent.
SWEEP = 5.0

#: Peers kept per group by default (C{--multicast-max-peers}).  Every peer
#: costs a round-trip probe per interval and six metric series, and every
#: instance probes every other, so a group of N instances carries N * (N -
#: 1) probes per interval: 64 is more instances than a demo or a lab
#: segment runs, and keeps the per-peer series of one group near 50 KB of
#: C{/metrics}.
DEFAULT_MAX_PEERS = 64

#: Round-trip probe rounds: one per announce interval, at most one per
#: L{PROBE_GAP} seconds on average after a burst of L{PROBE_BURST} (a token
#: bucket, so that a timer firing a little early does not skip a round), and
#: one probe per address per round.  A forged beacon can point the probes at
#: any address: it gets at most C{PROBE_BURST + T / PROBE_GAP} of them in
#: any T seconds, whatever the number of forged peers.
PROBE_GAP = 1.0
PROBE_BURST = 2

#: The longest host name in a metric label or on the status page.
LABEL_HOST = 64

#: Peer events (appeared, left) logged at once, then per second; the rest
#: are counted in C{netdemo_multicast_peer_changes_total} and summed up in
#: a C{multicast_peer_events_suppressed} event.
PEER_LOG_BURST = 20
PEER_LOG_RATE = 1.0

#: The service totals: metric name and responder attribute.
_TOTALS = (
    ("netdemo_datagrams_received_total", "datagramsIn"),
    ("netdemo_datagrams_sent_total", "datagramsOut"),
    ("netdemo_received_bytes_total", "bytesIn"),
    ("netdemo_sent_bytes_total", "bytesOut"),
)

#: The per-peer series: metric name and L{Peer} attribute.
_PEER_SERIES = (
    ("netdemo_multicast_peer_received_total", "received"),
    ("netdemo_multicast_peer_lost_total", "lost"),
    ("netdemo_multicast_peer_jitter_seconds", "jitter"),
    ("netdemo_multicast_peer_rtt_probes_total", "rttProbes"),
    ("netdemo_multicast_peer_rtt_answers_total", "rttAnswers"),
    ("netdemo_multicast_peer_rtt_seconds", "rtt"),
    ("netdemo_multicast_peer_last_heard_timestamp_seconds", "lastHeard"),
)


@frozen
class MulticastGroup:
    """
    One C{--multicast GROUP:PORT[,interface=..][,ttl=N][,loop=yes|no]}.

    @ivar interface: An IPv4 address, an interface name or an index; C{""}
        lets the kernel choose by route.
    """

    group: str
    port: int
    interface: str = ""
    ttl: int = 1
    loop: bool = True

    @property
    def ipv6(self) -> bool:
        """
        Whether the group is an IPv6 one.
        """
        return ":" in self.group

    @property
    def membership(self) -> Membership:
        """
        The group on the interface, for the socket options.
        """
        return Membership(self.group, self.interface)

    def __str__(self) -> str:
        where = (
            f"[{self.group}]:{self.port}" if self.ipv6 else f"{self.group}:{self.port}"
        )
        if self.interface:
            where += f",interface={self.interface}"
        return where


def parseMulticastGroup(value: str) -> MulticastGroup:
    """
    Parse C{GROUP:PORT[,interface=ADDR|NAME][,ttl=N][,loop=yes|no]}.

    @raise ValueError: Naming the value and what is wrong with it.
    """
    head, *options = value.strip().split(",")
    if head.startswith("["):
        end = head.find("]")
        if end < 0 or head[end + 1 : end + 2] != ":":
            raise ValueError(f"{value!r} is not [GROUP]:PORT")
        groupText, portText = head[1:end], head[end + 2 :]
    else:
        groupText, sep, portText = head.rpartition(":")
        if not sep or ":" in groupText:
            raise ValueError(f"{value!r} is not GROUP:PORT (IPv6 as [GROUP]:PORT)")
    try:
        group = ipaddress.ip_address(groupText)
    except ValueError:
        raise ValueError(f"{value!r}: {groupText!r} is not an IP address") from None
    if not group.is_multicast:
        raise ValueError(f"{value!r}: {groupText} is not a multicast group")
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise ValueError(f"{value!r}: port {portText!r} is not between 1 and 65535")
    settings: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip()
        text = text.strip()
        if key == "interface" and sep and text:
            settings["interface"] = text
        elif key == "ttl" and text.isdigit() and 0 <= int(text) <= 255:
            settings["ttl"] = int(text)
        elif key == "loop" and text in ("yes", "no"):
            settings["loop"] = text == "yes"
        else:
            raise ValueError(
                f"{value!r}: {option!r} is not interface=ADDR|NAME, ttl=0..255 "
                "or loop=yes|no"
            )
    interface = settings.get("interface", "")
    ipv6 = group.version == 6
    if interfaceMismatch(ipv6, interface):
        if ipv6:
            raise ValueError(
                f"{value!r}: an IPv6 group needs an interface name, not an address"
            )
        raise ValueError(f"{value!r}: an IPv4 group needs an IPv4 interface")
    if not interface and needsInterface(str(group)):
        raise ValueError(f"{value!r}: a link-local IPv6 group needs interface=NAME")
    return MulticastGroup(str(group), int(portText), **settings)


@define
class Peer:
    """
    Another netdemo instance heard on a group.

    @ivar jitter: Smoothed variation of the beacons' one-way delay, in
        seconds (RFC 3550, section 6.4.1); clock offsets cancel out.
    @ivar rtt: Smoothed round-trip time of the unicast probes sent to the
        peer once per announce interval (1/8 weight per sample, as TCP's
        SRTT), in seconds; L{None} until one was answered.
    @ivar rttLast: The latest round-trip sample.
    @ivar pending: The token and send time of the probe not answered yet.
    @ivar probedAt: When its address was last probed (by this peer's turn).
    """

    instance: str
    address: str
    hostname: str
    services: list[str]
    interval: float
    firstSeq: int
    highest: int
    lastHeard: float
    received: int = 1
    duplicates: int = 0
    reordered: int = 0
    jitter: float = 0.0
    transit: float = 0.0
    seen: dict[int, None] = field(factory=dict)
    rtt: float | None = None
    rttLast: float | None = None
    rttProbes: int = 0
    rttAnswers: int = 0
    pending: tuple[bytes, float] | None = None
    probedAt: float = -math.inf

    @property
    def lost(self) -> int:
        """
        Beacons between the first and the newest heard that never arrived.
        """
        return max(0, self.highest - self.firstSeq + 1 - self.received)

    @property
    def label(self) -> str:
        """
        The peer's metric label and name on the status page:
        C{HOSTNAME/ID}, the host name cut to L{LABEL_HOST} characters (both
        are checked and sanitised when the beacon is decoded).
        """
        return f"{self.hostname[:LABEL_HOST]}/{self.instance}"


class MulticastResponder(DatagramProtocol):
    """
    Join one group; answer probes; send and receive beacons.

    @ivar joined: Whether the group is joined now.
    @ivar peers: Instance id to L{Peer}, the one silent longest first; at
        most C{maxPeers}.
    """

    #: No C{Starting ...}/C{Stopping ...} lines: netdemo logs its own.
    noisy = False

    _log = Logger()

    def __init__(
        self,
        spec: MulticastGroup,
        guard: ReflectionGuard,
        instance: str,
        services: list[str],
        announceInterval: float,
        clock: Any,
        maxPeers: int = DEFAULT_MAX_PEERS,
    ) -> None:
        self.spec = spec
        self.guard = guard
        self.instance = instance
        self.services = services
        self.announceInterval = announceInterval
        self.clock = clock
        self.maxPeers = max(maxPeers, 1)
        self.hostname = socket.gethostname()
        self.joined = False
        self.joinedOn = ""
        self._tellJoin = True
        self.peers: OrderedDict[str, Peer] = OrderedDict()
        self._probes: dict[bytes, Peer] = {}
        self._rounds = TokenBucket(
            1 / PROBE_GAP, PROBE_BURST, clock.seconds(), PROBE_BURST
        )
        self._peerLog = TokenBucket(
            PEER_LOG_RATE, PEER_LOG_BURST, clock.seconds(), PEER_LOG_BURST
        )
        self._peerLogHeld = 0
        self.sequence = 0
        self.groupPort = spec.port
        self.datagramsIn = self.bytesIn = self.datagramsOut = self.bytesOut = 0
        self.beaconsIn = 0
        self.rttSequence = 0
        self._delay = JOIN_RETRY[0]
        self._retry: Any = None
        self._announcer: LoopingCall | None = None
        self._sweeper: LoopingCall | None = None
        self._later = AfterReading(clock)
        self._joinedWaiters: list[Deferred[None]] = []

    # Group membership

    def startProtocol(self) -> None:
        # Port 0 (tests): beacons go to the port actually bound.
        self.groupPort = self.spec.port or self.transport.getHost().port  # type: ignore[union-attr]
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        membership = self.spec.membership
        sock.setsockopt(*membership.hops(self.spec.ttl))
        sock.setsockopt(*membership.loop(self.spec.loop))
        try:
            sock.setsockopt(*membership.ownGroupsOnly())
        except OSError as e:
            self._event(
                LogLevel.warn,
                "cannot turn off multicast-all on {group} ({error}): "
                "other groups on this port may be seen",
                "multicast_all_unsupported",
                error=str(e),
            )
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(self.announceInterval or SWEEP, now=False)
        # The first join is told in the service's "listening" line
        # (joinDetail); later ones, after failures, in their own.
        self._tellJoin = False
        self.join()
        self._tellJoin = True
        if not self.spec.interface and len(socket.if_nameindex()) > 1:
            self._event(
                LogLevel.warn,
                "{group} names no interface, so the kernel chose {interface}; "
                "name one with interface=NAME or interface=ADDRESS",
                "multicast_interface_unnamed",
                interface=self.spec.membership.describeInterface(self.groupPort),
            )

    def join(self) -> None:
        """
        Set the outgoing interface and join the group; on failure, log and
        try again later.
        """
        self._retry = None
        if self.transport is None:
            return
        sock = self.transport.getHandle()  # type: ignore[attr-defined]
        try:
            for option in self.spec.membership.joinOptions():
                sock.setsockopt(*option)
        except OSError as e:
            self._joinLater(e)
            return
        self.joined = True
        self._delay = JOIN_RETRY[0]
        self.joinedOn = self.spec.membership.describeInterface(self.groupPort)
        if self._tellJoin:
            self._event(
                LogLevel.info,
                "joined {group} on {interface}, ttl={ttl}, loop={loop}",
                "multicast_joined",
                interface=self.joinedOn,
                ttl=self.spec.ttl,
                loop="yes" if self.spec.loop else "no",
            )
        if self.announceInterval:
            self._announcer = LoopingCall(self.announce)
            self._announcer.clock = self.clock
            self._announcer.start(self.announceInterval, now=True)
        waiters, self._joinedWaiters = self._joinedWaiters, []
        for d in waiters:
            d.callback(None)

    def _joinLater(self, error: OSError) -> None:
        """
        Log a failed join; try again after a delay that doubles each time,
        up to C{JOIN_RETRY[1]}.
        """
        self._event(
            LogLevel.error,
            "cannot join {group} ({error}); retrying in {delay} s",
            "multicast_join_failed",
            error=str(error),
            delay=self._delay,
        )
        self._retry = self.clock.callLater(self._delay, self.join)
        self._delay = min(self._delay * 2, JOIN_RETRY[1])

    def joinDetail(self) -> str:
        """
        The state of the membership, for the service's C{listening} line:
        C{joined on lo (127.0.0.1), ttl=1, loop=yes}.
        """
        loop = "yes" if self.spec.loop else "no"
        if not self.joined:
            return f"not joined yet (retrying), ttl={self.spec.ttl}, loop={loop}"
        return f"joined on {self.joinedOn}, ttl={self.spec.ttl}, loop={loop}"

    def whenJoined(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once the group is joined.
        """
        d: Deferred[None] = Deferred()
        if self.joined:
            d.callback(None)
        else:
            self._joinedWaiters.append(d)
        return d

    def stopProtocol(self) -> None:
        for loop in (self._announcer, self._sweeper):
            if loop is not None and loop.running:
                loop.stop()
        self._announcer = self._sweeper = None
        self._later.cancel()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self.joined = False

    def _event(self, level: LogLevel, text: str, event: str, **fields: Any) -> None:
        """
        Log C{event} about this group: C{text} after C{"{service}: "}, with
        the C{service} and C{group} fields.
        """
        self._log.emit(
            level,
            "{service}: " + text,
            event=event,
            service=self.guard.serviceName,
            group=str(self.spec),
            **fields,
        )

    # Beacons

    def beacon(self, bye: bool = False) -> bytes:
        """
        The next beacon datagram.
        """
        beacon = Beacon(
            instance=self.instance,
            host=self.hostname,
            services=tuple(self.services),
            seq=self.sequence,
            time=self.clock.seconds(),
            interval=self.announceInterval,
            bye=bye,
        )
        self.sequence += 1
        return beacon.encode()

    def announce(self, bye: bool = False) -> None:
        """
        Send a beacon to the group; then, once what is waiting was read,
        probe the peers' round trips.
        """
        if not self.joined or self.transport is None:
            return
        data = self.beacon(bye)
        try:
            self.transport.write(data, (self.spec.group, self.groupPort))
        except Exception as e:
            self._event(
                LogLevel.warn,
                "cannot send a beacon to {group}: {error}",
                "multicast_send_failed",
                error=str(e),
            )
            return
        self.datagramsOut += 1
        self.bytesOut += len(data)
        if not bye:
            # An answer to the previous probe may be waiting unread.
            self._later.call("probe", self.probePeers)

    def probePeers(self) -> None:
        """
        Send the known peers a unicast round-trip probe each; an answer
        updates the RTT.  A probe left unanswered is replaced by the next
        one (it counts in C{rttProbes} but not in C{rttAnswers}).

        Rounds are limited to one per L{PROBE_GAP} seconds on average
        (L{PROBE_BURST} at once), and a round probes each address once:
        peers sharing an address (forged beacons, or instances on one host)
        take turns, the one probed longest ago first.  Each probe passes the
        reflection guard, as a reply would.
        """
        now = self.clock.seconds()
        if not self.peers or not self._rounds.take(now):
            return
        guard = self.guard
        port = self.groupPort
        probed: set[str] = set()
        for peer in sorted(self.peers.values(), key=_probedAt):
            address = peer.address
            if address in probed:
                continue
            probed.add(address)
            peer.probedAt = now
            self.rttSequence += 1
            token = rttToken(self.instance, self.rttSequence)
            data = rttProbe(token)
            if not guard.admit(address, port, len(data), now):
                continue
            if peer.pending is not None:
                self._probes.pop(peer.pending[0], None)
            peer.pending = (token, now)
            self._probes[token] = peer
            peer.rttProbes += 1
            try:
                self.transport.write(  # type: ignore[union-attr]
                    data, self._unicast(address, port)
                )
            except Exception:
                guard.refuse("send-failed", address, port)
                continue
            self.datagramsOut += 1
            self.bytesOut += len(data)

    def _unicast(self, host: str, port: int) -> tuple[Any, ...]:
        """
        The address to send a unicast datagram to C{host}: a link-local IPv6
        address gets the scope of the group's interface back (Twisted drops
        the scope of IPv6 sources).
        """
        if self.spec.ipv6 and host.lower().startswith("fe80:"):
            with contextlib.suppress(OSError):
                return (host, port, 0, self.spec.membership.interfaceIndex())
        return (host, port)

    def rttAnswered(self, token: bytes) -> None:
        """
        Match the token of an answer to a round-trip probe of ours.
        """
        peer = self._probes.pop(token, None)
        if peer is None or peer.pending is None:
            # Late (replaced by a newer probe), or not ours: ignore it.
            return
        sample = max(0.0, self.clock.seconds() - peer.pending[1])
        peer.pending = None
        peer.rttAnswers += 1
        peer.rttLast = sample
        peer.rtt = sample if peer.rtt is None else peer.rtt + (sample - peer.rtt) / 8

    def goodbye(self) -> None:
        """
        Tell the group this instance is leaving.
        """
        if self.announceInterval:
            self.announce(bye=True)

    # Receiving

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        size = len(datagram)
        self.datagramsIn += 1
        self.bytesIn += size
        host, port = addr[0], addr[1]
        if datagram.startswith(BEACON):
            # Guarded before it is parsed: a flood of forged beacons costs
            # a bucket update each, not a JSON parse and a peer.
            if self.guard.admit(host, port, size, self.clock.seconds()):
                self.beaconReceived(datagram, host, port)
            return
        token = rttAnswerToken(datagram)
        if token is not None:
            self.rttAnswered(token)
            return
        if isOwnToken(datagram, self.instance):
            # Our own probe, handed back to us because instances on one
            # host share the port: the round trip to a peer on this host
            # cannot be told apart, so it is not measured.
            return
        reply = answerTo(datagram)
        if reply is None:
            self.guard.refuse("not-a-probe", host, port)
            return
        if not replyAllowed(size, len(reply)):
            self.guard.refuse("probe-too-short", host, port)
            return
        if not self.guard.admit(host, port, size, self.clock.seconds()):
            return
        # addr is the sender's own (unicast: the guard refuses multicast
        # sources) address: never the group.  A link-local reply needs the
        # scope back to leave by the interface the probe came in on.
        if len(addr) < 4:
            addr = self._unicast(host, port)
        try:
            self.transport.write(reply, addr)  # type: ignore[union-attr]
        except Exception:
            self.guard.refuse("send-failed", host, port)
            return
        self.datagramsOut += 1
        self.bytesOut += len(reply)

    def beaconReceived(self, datagram: bytes, host: str, port: int = 0) -> None:
        """
        Update the peer table from a beacon the guard admitted.  A new peer
        in a full table evicts the one silent longest.
        """
        try:
            beacon = decodeBeacon(datagram)
        except BadBeacon as e:
            self.guard.refuse("bad-beacon", host, port, detail=str(e))
            return
        instance = beacon.instance
        if instance == self.instance:
            return
        self.beaconsIn += 1
        now = self.clock.seconds()
        peers = self.peers
        peer = peers.get(instance)
        if beacon.bye:
            if peer is not None:
                self._forget(peer, "goodbye")
            return
        seq = beacon.seq
        if peer is None:
            while len(peers) >= self.maxPeers:
                self._forget(next(iter(peers.values())), "evicted")
            peer = Peer(
                instance=instance,
                address=host,
                hostname=beacon.host,
                services=list(beacon.services),
                interval=clampInterval(beacon.interval),
                firstSeq=seq,
                highest=seq,
                lastHeard=now,
                transit=now - beacon.time,
            )
            peer.seen[seq] = None
            peers[instance] = peer
            self._peerEvent(
                LogLevel.info,
                "peer {instance} ({hostname}, {address}) appeared on {group}",
                "multicast_peer_joined",
                "joined",
                instance=instance,
                hostname=peer.hostname,
                address=host,
            )
            return
        peers.move_to_end(instance)
        peer.lastHeard = now
        peer.address = host
        peer.interval = clampInterval(beacon.interval)
        if seq in peer.seen:
            peer.duplicates += 1
            return
        peer.seen[seq] = None
        if len(peer.seen) > HISTORY:
            del peer.seen[next(iter(peer.seen))]
        peer.received += 1
        if seq < peer.highest:
            peer.reordered += 1
        else:
            peer.highest = seq
        if seq < peer.firstSeq:
            peer.firstSeq = seq
        transit = now - beacon.time
        peer.jitter += (abs(transit - peer.transit) - peer.jitter) / 16
        peer.transit = transit

    def sweep(self) -> None:
        """
        Forget the peers not heard for three of their intervals, judged
        once the beacons waiting now have been read.
        """
        self._later.call("expire", self.expire, self.clock.seconds())

    def expire(self, asOf: float) -> None:
        """
        Forget the peers not heard for three of their intervals at C{asOf}.
        """
        for peer in list(self.peers.values()):
            interval = peer.interval or self.announceInterval or SWEEP
            if asOf - peer.lastHeard > 3 * interval:
                self._forget(peer, "expired")

    def _forget(self, peer: Peer, reason: str) -> None:
        """
        Remove C{peer} from the table, for C{reason} (C{goodbye},
        C{expired}, C{evicted}), count and log it.
        """
        self.peers.pop(peer.instance, None)
        if peer.pending is not None:
            self._probes.pop(peer.pending[0], None)
        self._peerEvent(
            LogLevel.info,
            "peer {instance} ({hostname}, {address}) left {group} "
            "({reason}); {received} beacons, {lost} lost, {duplicates} "
            "duplicated, {reordered} reordered, jitter {jitter:.6f} s, "
            "rtt {rttText}",
            "multicast_peer_left",
            reason,
            instance=peer.instance,
            hostname=peer.hostname,
            address=peer.address,
            reason=reason,
            received=peer.received,
            lost=peer.lost,
            duplicates=peer.duplicates,
            reordered=peer.reordered,
            jitter=peer.jitter,
            rtt=peer.rtt,
            rttText="-" if peer.rtt is None else f"{peer.rtt * 1000:.3f} ms",
            rttProbes=peer.rttProbes,
            rttAnswers=peer.rttAnswers,
        )

    def _peerEvent(
        self, level: LogLevel, text: str, event: str, change: str, **fields: Any
    ) -> None:
        """
        Count a change of the peer table in
        C{netdemo_multicast_peer_changes_total} and log it within the peer
        log budget; once the budget allows again, a
        C{multicast_peer_events_suppressed} event says how many were not
        logged.
        """
        self.guard.metrics.inc(
            "netdemo_multicast_peer_changes_total",
            service=self.guard.serviceName,
            change=change,
        )
        if not self._peerLog.take(self.clock.seconds()):
            self._peerLogHeld += 1
            return
        if self._peerLogHeld:
            self._event(
                LogLevel.warn,
                "{suppressed} peer events on {group} not logged: the peer table "
                "changes faster than {rate} a second",
                "multicast_peer_events_suppressed",
                suppressed=self._peerLogHeld,
                rate=PEER_LOG_RATE,
            )
            self._peerLogHeld = 0
        self._event(level, text, event, **fields)

    def collect(self) -> list[Sample]:
        """
        Per-peer samples, for L{IMetrics.addCollector}: only the peers in
        the table, so at most C{maxPeers} of each series; the round-trip
        time once one was measured.
        """
        service = self.guard.serviceName
        samples = []
        for peer in self.peers.values():
            name = peer.label
            for metric, attribute in _PEER_SERIES:
                value = getattr(peer, attribute)
                if value is not None:
                    samples.append(sampleOf(metric, value, service=service, peer=name))
            samples.append(
                sampleOf(
                    "netdemo_multicast_peer_info",
                    1,
                    service=service,
                    peer=name,
                    address=peer.address,
                )
            )
        return samples


def _probedAt(peer: Peer) -> float:
    """
    The sort key of a probe round: the peer probed longest ago first.
    """
    return peer.probedAt


class MulticastService(DatagramService):
    """
    The multicast responder's sockets: one per group, bound to the wildcard
    address and the group's port (a socket bound to the interface's address
    receives no multicast), shared with other listeners on the port through
    C{SO_REUSEADDR} alone (L{listenMulticastSharing}: a program that binds
    the port later gets the unicast answers sent to it).  Each
    is reported as the group and port it listens to.  At stop, every
    responder says goodbye before its socket closes.

    @ivar responders: One per group.
    """

    def __init__(
        self,
        responders: Iterable[MulticastResponder],
        reactor: Any,
        metrics: IMetrics | None = None,
    ) -> None:
        super().__init__(SERVICE_NAME, reactor, metrics)
        self.responders = list(responders)

    def listenAll(self) -> None:
        for responder in self.responders:
            spec = responder.spec
            port = listenMulticastSharing(
                self.reactor,
                spec.port,
                responder,
                "::" if spec.ipv6 else "",
                MAX_PACKET_SIZE,
            )
            where = str(MulticastGroup(spec.group, port.getHost().port))
            self.listened(port, responder, where, str(spec), responder.joinDetail())

    def stopping(self) -> None:
        for responder in self.responders:
            responder.goodbye()


def newInstanceId() -> str:
    """
    A random id for this run of the daemon.
    """
    return os.urandom(6).hex()


def buildMulticastService(
    groups: Iterable[MulticastGroup],
    limits: DatagramLimits,
    announceInterval: float,
    services: list[str],
    metrics: IMetrics,
    reactor: Any,
    instance: str | None = None,
    maxPeers: int = DEFAULT_MAX_PEERS,
) -> MulticastService:
    """
    Build the multicast responder: one socket per group, one guard for all.

    @param groups: The groups to join.
    @param limits: The reflection-safety settings (shared with UDP echo's
        defaults).
    @param announceInterval: Seconds between beacons; 0 for none.
    @param services: The names of the services this instance runs, for the
        beacons.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    @param instance: This instance's id; random when L{None}.
    @param maxPeers: The most peers kept per group.
    """
    guard = ReflectionGuard(SERVICE_NAME, limits, metrics, reactor)
    instance = instance or newInstanceId()
    responders = [
        MulticastResponder(
            spec, guard, instance, services, announceInterval, reactor, maxPeers
        )
        for spec in groups
    ]

    def collect() -> list[Sample]:
        peers = len({i for r in responders for i in r.peers})
        samples = [sampleOf("netdemo_multicast_peers", peers, service=SERVICE_NAME)]
        for metric, attribute in _TOTALS:
            total = sum(getattr(r, attribute) for r in responders)
            samples.append(sampleOf(metric, total, service=SERVICE_NAME))
        for r in responders:
            samples += r.collect()
        return samples

    metrics.addCollector(collect)
    return MulticastService(responders, reactor, metrics)
