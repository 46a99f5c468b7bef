# -*- test-case-name: tests.test_multicast -*-
"""
The multicast responder: join a group, answer probes by unicast, announce
this instance and keep a table of the other instances heard.

Datagrams on the group (C{docs/multicast.md} documents the formats):

  - B{probe}: a datagram that starts with C{Notify} and is at least 11
    bytes long (C{Notify} and a token or padding) is answered with
    C{Acknowledge}; the classic C{Client: Ping} gets C{Server: Pong}.  The
    answer goes by unicast to the sender, never to the group, is never
    larger than the probe, and is subject to the same L{ReflectionGuard} as
    UDP echo;
  - B{beacon}: C{NDBEACON } followed by a JSON object (instance id,
    hostname, services, sequence number, send time, interval, and C{bye} on
    shutdown), sent to the group every C{--announce-interval} seconds.
    Beacons are never answered.

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
import os
import socket
from collections.abc import Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel

from netdemo.datagram import MAX_PACKET_SIZE, AfterReading, DatagramService
from netdemo.guard import ReflectionGuard
from netdemo.limits import DatagramLimits
from netdemo.mcastwire import (
    BEACON,
    BadBeacon,
    Beacon,
    Membership,
    answerTo,
    decodeBeacon,
    interfaceMismatch,
    isOwnToken,
    needsInterface,
    rttAnswerToken,
    rttProbe,
    rttToken,
)
from netdemo.metrics import IMetrics, Sample, sampleOf

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

    @property
    def lost(self) -> int:
        """
        Beacons between the first and the newest heard that never arrived.
        """
        return max(0, self.highest - self.firstSeq + 1 - self.received)


class MulticastResponder(DatagramProtocol):
    """
    Join one group; answer probes; send and receive beacons.

    @ivar joined: Whether the group is joined now.
    @ivar peers: Instance id to L{Peer}.
    """

    _log = Logger()

    def __init__(
        self,
        spec: MulticastGroup,
        guard: ReflectionGuard,
        instance: str,
        services: list[str],
        announceInterval: float,
        clock: Any,
    ) -> None:
        self.spec = spec
        self.guard = guard
        self.instance = instance
        self.services = services
        self.announceInterval = announceInterval
        self.clock = clock
        self.hostname = socket.gethostname()
        self.joined = False
        self.peers: dict[str, Peer] = {}
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
        self.join()

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
        self._event(
            LogLevel.info,
            "joined {group} (ttl {ttl}, loop {loop})",
            "multicast_joined",
            ttl=self.spec.ttl,
            loop=self.spec.loop,
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
        Send each known peer a unicast round-trip probe; an answer updates
        its RTT.  A probe left unanswered is replaced by the next one (it
        counts in C{rttProbes} but not in C{rttAnswers}).
        """
        now = self.clock.seconds()
        for peer in self.peers.values():
            self.rttSequence += 1
            token = rttToken(self.instance, self.rttSequence)
            peer.pending = (token, now)
            peer.rttProbes += 1
            data = rttProbe(token)
            try:
                self.transport.write(  # type: ignore[union-attr]
                    data, self._unicast(peer.address, self.groupPort)
                )
            except Exception:
                self.guard.refuse("send-failed", peer.address, self.groupPort)
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
        now = self.clock.seconds()
        for peer in self.peers.values():
            if peer.pending is not None and peer.pending[0] == token:
                sample = max(0.0, now - peer.pending[1])
                peer.pending = None
                peer.rttAnswers += 1
                peer.rttLast = sample
                peer.rtt = (
                    sample if peer.rtt is None else peer.rtt + (sample - peer.rtt) / 8
                )
                return
        # Late (replaced by a newer probe), or not ours: ignore it.

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
            self.beaconReceived(datagram, host)
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
        if len(reply) > size:
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

    def beaconReceived(self, datagram: bytes, host: str) -> None:
        """
        Update the peer table from a beacon.
        """
        try:
            beacon = decodeBeacon(datagram)
        except BadBeacon:
            self.guard.refuse("bad-beacon", host, 0)
            return
        instance = beacon.instance
        if instance == self.instance:
            return
        self.beaconsIn += 1
        now = self.clock.seconds()
        peer = self.peers.get(instance)
        if beacon.bye:
            if peer is not None:
                self._forget(peer, "goodbye")
            return
        seq = beacon.seq
        if peer is None:
            peer = Peer(
                instance=instance,
                address=host,
                hostname=beacon.host,
                services=list(beacon.services),
                interval=beacon.interval,
                firstSeq=seq,
                highest=seq,
                lastHeard=now,
                transit=now - beacon.time,
            )
            peer.seen[seq] = None
            self.peers[instance] = peer
            self._event(
                LogLevel.info,
                "peer {instance} ({hostname}, {address}) appeared on {group}",
                "multicast_peer_joined",
                instance=instance,
                hostname=peer.hostname,
                address=host,
            )
            return
        peer.lastHeard = now
        peer.address = host
        peer.interval = beacon.interval
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
        self.peers.pop(peer.instance, None)
        self._event(
            LogLevel.info,
            "peer {instance} ({hostname}, {address}) left {group} "
            "({reason}); {received} beacons, {lost} lost, {duplicates} "
            "duplicated, {reordered} reordered, jitter {jitter:.6f} s, "
            "rtt {rttText}",
            "multicast_peer_left",
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

    def collect(self) -> list[Sample]:
        """
        Per-peer samples, for L{IMetrics.addCollector}; the round-trip time
        once one was measured.
        """
        service = self.guard.serviceName
        samples = []
        for peer in self.peers.values():
            name = f"{peer.hostname}/{peer.instance}"
            for metric, attribute in _PEER_SERIES:
                value = getattr(peer, attribute)
                if value is not None:
                    samples.append(sampleOf(metric, value, service=service, peer=name))
        return samples


class MulticastService(DatagramService):
    """
    The multicast responder's sockets: one per group, bound to the wildcard
    address and the group's port (a socket bound to the interface's address
    receives no multicast), shared with other listeners on the port.  Each
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
            port = self.reactor.listenMulticast(
                spec.port,
                responder,
                "::" if spec.ipv6 else "",
                MAX_PACKET_SIZE,
                listenMultiple=True,
            )
            where = str(MulticastGroup(spec.group, port.getHost().port))
            self.listened(port, responder, where, str(spec))

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
    """
    guard = ReflectionGuard(SERVICE_NAME, limits, metrics, reactor)
    instance = instance or newInstanceId()
    responders = [
        MulticastResponder(spec, guard, instance, services, announceInterval, reactor)
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
