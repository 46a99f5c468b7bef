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

Joins are done with C{setsockopt} for both families (Twisted 26.10 packs an
IPv6 join wrongly and does not set the IPv6 hop limit), with
C{IP_MULTICAST_ALL} / C{IPV6_MULTICAST_ALL} turned off so the socket sees
its own groups only, a TTL (hop limit) of 1 unless asked, and a join that
fails (interface or address not there yet) is logged and retried with
back-off; it never stops the daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netdemo.datagram import MAX_PACKET_SIZE
from netdemo.guard import ReflectionGuard
from netdemo.limits import DatagramLimits
from netdemo.listening import exitOnBindFailure
from netdemo.logs import formatAddress
from netdemo.metrics import IMetrics, Sample, sampleOf

__all__ = [
    "MulticastGroup",
    "MulticastResponder",
    "Peer",
    "buildMulticastService",
    "parseMulticastGroup",
]

SERVICE_NAME = "multicast"

#: Linux values missing from Python 3.11's C{socket} module.
IP_MULTICAST_ALL: int = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL: int = getattr(socket, "IPV6_MULTICAST_ALL", 29)

BEACON = b"NDBEACON "
PROBES = {b"Notify": b"Acknowledge", b"Client: Ping": b"Server: Pong"}

#: The round-trip probe instances send each other by unicast once per
#: announce interval, and its answer: the token comes back unchanged, so the
#: answer is exactly as long as the probe.
RTT_PROBE = b"NDPING "
RTT_ANSWER = b"NDPONG "

#: Seconds between join attempts: doubles from the first to the last.
JOIN_RETRY = (1.0, 30.0)

#: Sequence numbers remembered per peer for duplicate detection.
HISTORY = 256


@frozen
class MulticastGroup:
    """
    One C{--multicast GROUP:PORT[,interface=..][,ttl=N][,loop=yes|no]}.

    @ivar interface: An IPv4 address or an interface name; C{""} lets the
        kernel choose by route.
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
    if isinstance(group, ipaddress.IPv6Address):
        if interface:
            try:
                ipaddress.ip_address(interface)
            except ValueError:
                pass
            else:
                raise ValueError(
                    f"{value!r}: an IPv6 group needs an interface name, not an address"
                )
        elif group.is_link_local or (int(group) >> 112) & 0xF in (1, 2):
            raise ValueError(f"{value!r}: a link-local IPv6 group needs interface=NAME")
    elif interface:
        try:
            ipaddress.IPv6Address(interface)
        except ValueError:
            pass
        else:
            raise ValueError(f"{value!r}: an IPv4 group needs an IPv4 interface")
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
        self._joinedWaiters: list[Deferred[None]] = []

    # Group membership

    def startProtocol(self) -> None:
        # Port 0 (tests): beacons go to the port actually bound.
        self.groupPort = self.spec.port or self.transport.getHost().port  # type: ignore[union-attr]
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        if self.spec.ipv6:
            level = socket.IPPROTO_IPV6
            sock.setsockopt(level, socket.IPV6_MULTICAST_HOPS, self.spec.ttl)
            sock.setsockopt(level, socket.IPV6_MULTICAST_LOOP, int(self.spec.loop))
            allOption = IPV6_MULTICAST_ALL
        else:
            level = socket.IPPROTO_IP
            sock.setsockopt(level, socket.IP_MULTICAST_TTL, self.spec.ttl)
            sock.setsockopt(level, socket.IP_MULTICAST_LOOP, int(self.spec.loop))
            allOption = IP_MULTICAST_ALL
        try:
            sock.setsockopt(level, allOption, 0)
        except OSError as e:
            self._log.warn(
                "{service}: cannot turn off multicast-all on {group} ({error}): "
                "other groups on this port may be seen",
                event="multicast_all_unsupported",
                service=self.guard.serviceName,
                group=str(self.spec),
                error=str(e),
            )
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(self.announceInterval or 5.0, now=False)
        self.join()

    def _interfaceIndex(self) -> int:
        interface = self.spec.interface
        if not interface:
            return 0
        if interface.isdigit():
            return int(interface)
        return socket.if_nametoindex(interface)

    def _membership(self) -> tuple[int, int, bytes, int, bytes]:
        """
        The join option and value, and the outgoing-interface option and
        value, for this group.
        """
        spec = self.spec
        if spec.ipv6:
            index = self._interfaceIndex()
            group = socket.inet_pton(socket.AF_INET6, spec.group)
            return (
                socket.IPPROTO_IPV6,
                socket.IPV6_JOIN_GROUP,
                group + struct.pack("@i", index),
                socket.IPV6_MULTICAST_IF,
                struct.pack("@i", index),
            )
        group = socket.inet_aton(spec.group)
        try:
            address = socket.inet_aton(spec.interface) if spec.interface else b"\0" * 4
            index = 0
        except OSError:
            address = b"\0" * 4
            index = self._interfaceIndex()
        mreqn = address + struct.pack("@i", index)
        return (
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            group + mreqn,
            socket.IP_MULTICAST_IF,
            group + mreqn,
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
            level, joinOption, joinValue, ifOption, ifValue = self._membership()
            if self.spec.interface:
                sock.setsockopt(level, ifOption, ifValue)
            sock.setsockopt(level, joinOption, joinValue)
        except OSError as e:
            self._log.error(
                "{service}: cannot join {group} ({error}); retrying in {delay} s",
                event="multicast_join_failed",
                service=self.guard.serviceName,
                group=str(self.spec),
                error=str(e),
                delay=self._delay,
            )
            self._retry = self.clock.callLater(self._delay, self.join)
            self._delay = min(self._delay * 2, JOIN_RETRY[1])
            return
        self.joined = True
        self._delay = JOIN_RETRY[0]
        self._log.info(
            "{service}: joined {group} (ttl {ttl}, loop {loop})",
            event="multicast_joined",
            service=self.guard.serviceName,
            group=str(self.spec),
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
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self.joined = False

    # Beacons

    def beacon(self, bye: bool = False) -> bytes:
        """
        The next beacon datagram.
        """
        body = {
            "v": 1,
            "id": self.instance,
            "host": self.hostname,
            "services": self.services,
            "seq": self.sequence,
            "time": self.clock.seconds(),
            "interval": self.announceInterval,
        }
        if bye:
            body["bye"] = True
        self.sequence += 1
        return BEACON + json.dumps(body, separators=(",", ":")).encode()

    def announce(self, bye: bool = False) -> None:
        """
        Send a beacon to the group.
        """
        if not self.joined or self.transport is None:
            return
        data = self.beacon(bye)
        try:
            self.transport.write(data, (self.spec.group, self.groupPort))
        except Exception as e:
            self._log.warn(
                "{service}: cannot send a beacon to {group}: {error}",
                event="multicast_send_failed",
                service=self.guard.serviceName,
                group=str(self.spec),
                error=str(e),
            )
            return
        self.datagramsOut += 1
        self.bytesOut += len(data)
        if not bye:
            self.probePeers()

    def probePeers(self) -> None:
        """
        Send each known peer a unicast round-trip probe; an answer updates
        its RTT.  A probe left unanswered is replaced by the next one (it
        counts in C{rttProbes} but not in C{rttAnswers}).
        """
        now = self.clock.seconds()
        for peer in self.peers.values():
            self.rttSequence += 1
            token = b"%s:%d" % (self.instance.encode(), self.rttSequence)
            peer.pending = (token, now)
            peer.rttProbes += 1
            data = RTT_PROBE + token
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
                return (host, port, 0, self._interfaceIndex())
        return (host, port)

    def rttAnswered(self, datagram: bytes, host: str) -> None:
        """
        Match an answer to a round-trip probe of ours.
        """
        token = datagram[len(RTT_ANSWER) :]
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
        if datagram.startswith(RTT_ANSWER):
            self.rttAnswered(datagram, host)
            return
        reply = None
        if datagram.startswith(RTT_PROBE):
            token = datagram[len(RTT_PROBE) :]
            if token.startswith(self.instance.encode() + b":"):
                # Our own probe, handed back to us because instances on one
                # host share the port: the round trip to a peer on this
                # host cannot be told apart, so it is not measured.
                return
            reply = RTT_ANSWER + token
        else:
            for probe, answer in PROBES.items():
                if datagram.startswith(probe):
                    reply = answer
                    break
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
            body = json.loads(datagram[len(BEACON) :])
            instance = str(body["id"])
            seq = int(body["seq"])
            sentAt = float(body["time"])
            interval = float(body.get("interval") or 0)
        except (ValueError, KeyError, TypeError):
            self.guard.refuse("bad-beacon", host, 0)
            return
        if instance == self.instance:
            return
        self.beaconsIn += 1
        now = self.clock.seconds()
        peer = self.peers.get(instance)
        if body.get("bye"):
            if peer is not None:
                self._forget(peer, "goodbye")
            return
        if peer is None:
            peer = Peer(
                instance=instance,
                address=host,
                hostname=str(body.get("host", "")),
                services=[str(s) for s in body.get("services", [])][:16],
                interval=interval,
                firstSeq=seq,
                highest=seq,
                lastHeard=now,
                transit=now - sentAt,
            )
            peer.seen[seq] = None
            self.peers[instance] = peer
            self._log.info(
                "{service}: peer {instance} ({hostname}, {address}) appeared on "
                "{group}",
                event="multicast_peer_joined",
                service=self.guard.serviceName,
                instance=instance,
                hostname=peer.hostname,
                address=host,
                group=str(self.spec),
            )
            return
        peer.lastHeard = now
        peer.address = host
        peer.interval = interval
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
        transit = now - sentAt
        peer.jitter += (abs(transit - peer.transit) - peer.jitter) / 16
        peer.transit = transit

    def sweep(self) -> None:
        """
        Forget the peers not heard for three of their intervals.
        """
        now = self.clock.seconds()
        for peer in list(self.peers.values()):
            interval = peer.interval or self.announceInterval or 5.0
            if now - peer.lastHeard > 3 * interval:
                self._forget(peer, "expired")

    def _forget(self, peer: Peer, reason: str) -> None:
        self.peers.pop(peer.instance, None)
        self._log.info(
            "{service}: peer {instance} ({hostname}, {address}) left {group} "
            "({reason}); {received} beacons, {lost} lost, {duplicates} "
            "duplicated, {reordered} reordered, jitter {jitter:.6f} s, "
            "rtt {rttText}",
            event="multicast_peer_left",
            service=self.guard.serviceName,
            instance=peer.instance,
            hostname=peer.hostname,
            address=peer.address,
            group=str(self.spec),
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
        Per-peer samples, for L{IMetrics.addCollector}.
        """
        service = self.guard.serviceName
        samples = []
        for peer in self.peers.values():
            name = f"{peer.hostname}/{peer.instance}"
            samples += [
                sampleOf(
                    "netdemo_multicast_peer_received_total",
                    peer.received,
                    service=service,
                    peer=name,
                ),
                sampleOf(
                    "netdemo_multicast_peer_lost_total",
                    peer.lost,
                    service=service,
                    peer=name,
                ),
                sampleOf(
                    "netdemo_multicast_peer_jitter_seconds",
                    peer.jitter,
                    service=service,
                    peer=name,
                ),
                sampleOf(
                    "netdemo_multicast_peer_rtt_probes_total",
                    peer.rttProbes,
                    service=service,
                    peer=name,
                ),
                sampleOf(
                    "netdemo_multicast_peer_rtt_answers_total",
                    peer.rttAnswers,
                    service=service,
                    peer=name,
                ),
            ]
            if peer.rtt is not None:
                samples.append(
                    sampleOf(
                        "netdemo_multicast_peer_rtt_seconds",
                        peer.rtt,
                        service=service,
                        peer=name,
                    )
                )
        return samples


class _GroupListener(Service):
    """
    One responder on one group: listen at start (bind failures stop
    start-up), say goodbye and stop listening at the end.
    """

    def __init__(
        self, responder: MulticastResponder, reactor: Any, metrics: IMetrics
    ) -> None:
        self.setName(f"{SERVICE_NAME} {responder.spec}")
        self.metrics = metrics
        self.responder = responder
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        exitOnBindFailure(self._listen)
        super().privilegedStartService()

    def startService(self) -> None:
        exitOnBindFailure(self._listen)
        super().startService()

    def _listen(self) -> None:
        if self.port is not None:
            return
        spec = self.responder.spec
        # Bind the wildcard, not the group nor the interface address: a
        # socket bound to 127.0.0.1 receives no multicast at all.
        self.port = self.reactor.listenMulticast(
            spec.port,
            self.responder,
            "::" if spec.ipv6 else "",
            MAX_PACKET_SIZE,
            listenMultiple=True,
        )
        port: Any = self.port
        self.responder._log.info(
            "{service}: listening on {address} ({description})",
            event="listening",
            service=SERVICE_NAME,
            address=formatAddress(port.getHost()),
            description=str(spec),
        )
        self.metrics.set(
            "netdemo_listener_info", 1, service=SERVICE_NAME, address=str(spec)
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port: Any = self.port
        self.port = None
        if port is None:
            return None
        self.responder.goodbye()
        self.metrics.set(
            "netdemo_listener_info",
            0,
            service=SERVICE_NAME,
            address=str(self.responder.spec),
        )
        stopped: Deferred[None] = maybeDeferred(port.stopListening)
        return stopped


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
) -> MultiService:
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
    top = MultiService()
    top.setName(SERVICE_NAME)
    responders: list[MulticastResponder] = []
    for spec in groups:
        responder = MulticastResponder(
            spec, guard, instance, services, announceInterval, reactor
        )
        responders.append(responder)
        _GroupListener(responder, reactor, metrics).setServiceParent(top)

    def collect() -> list[Sample]:
        samples = [
            sampleOf(
                "netdemo_multicast_peers",
                len({i for r in responders for i in r.peers}),
                service=SERVICE_NAME,
            ),
            sampleOf(
                "netdemo_datagrams_received_total",
                sum(r.datagramsIn for r in responders),
                service=SERVICE_NAME,
            ),
            sampleOf(
                "netdemo_datagrams_sent_total",
                sum(r.datagramsOut for r in responders),
                service=SERVICE_NAME,
            ),
            sampleOf(
                "netdemo_received_bytes_total",
                sum(r.bytesIn for r in responders),
                service=SERVICE_NAME,
            ),
            sampleOf(
                "netdemo_sent_bytes_total",
                sum(r.bytesOut for r in responders),
                service=SERVICE_NAME,
            ),
        ]
        for r in responders:
            samples += r.collect()
        return samples

    metrics.addCollector(collect)
    return top
