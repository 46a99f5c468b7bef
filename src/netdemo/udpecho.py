# -*- test-case-name: tests.test_udpecho -*-
"""
UDP echo (RFC 862) that is safe to leave running, and the reflection guard
shared by every datagram responder of netdemo.

Classic UDP echo is a reflector (CVE-1999-0103, CERT VU#417980): a forged
source address turns it into a traffic amplifier or into one end of a loop
with another echo or chargen service.  L{ReflectionGuard} refuses, counts by
reason and logs at a bounded rate:

  - datagrams larger than the cap (C{too-large}): refused, never truncated;
  - source ports below the floor (C{source-port}; 1024 by default), where
    the other well-known responders live;
  - multicast, broadcast and unspecified source addresses
    (C{source-multicast}, C{source-broadcast}, C{source-unspecified});
  - datagrams sent to a broadcast or multicast address
    (C{destination-not-unicast}): one request would get an answer from every
    host;
  - sources outside the allow-lists (C{not-allowed});
  - more than C{rate} datagrams a second from one source address after a
    burst of C{burst} (C{rate}): a token bucket per source, in a table of at
    most C{maxSources} entries that evicts the least recently used.

The reply is the request, byte for byte, and never larger.

Replying from the right address: a socket bound to the wildcard address
sends from the address of the route back to the client, which is not the
address the client sent to when the host has several.  A connected-UDP
client (C{connect()} then C{send}) drops such a reply.  L{PacketInfoPort}
asks the kernel for the destination of each datagram (C{IP_PKTINFO},
C{IPV6_RECVPKTINFO}) with C{recvmsg} and hands it back with C{sendmsg}, so
the reply leaves from the address the client targeted.  This was chosen over
one socket per local address because it follows addresses that appear after
start-up and needs one descriptor per listener.  Reading the socket directly
also lets one readiness event process a batch of datagrams with one clock
reading and no per-datagram C{transport.write} checks, which pays for the
ancillary data (C{docs/benchmarks.md}).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import field, frozen
from twisted.application.service import Service
from twisted.internet import udp
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorFDSet
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel

from netdemo.logs import RateLimitedLog, formatAddress
from netdemo.metrics import IMetrics, Sample, sampleOf

__all__ = [
    "DatagramLimits",
    "DatagramService",
    "ListenAddress",
    "PacketInfoPort",
    "ReflectionGuard",
    "UDPEcho",
    "buildUDPEchoService",
    "parseListenAddress",
]

SERVICE_NAME = "udp-echo"

#: Read whole datagrams, whatever their size: Twisted's default of 8192
#: silently cuts larger ones.  The service's own cap refuses instead.
MAX_PACKET_SIZE = 65535

#: Linux values missing from Python 3.11's C{socket} module.
IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO: int = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO: int = getattr(socket, "IPV6_PKTINFO", 50)

#: How many datagrams one readiness event may process before the reactor
#: gets to serve other sockets.
BATCH = 256

_ANCILLARY_SIZE = socket.CMSG_SPACE(20)
_ZERO4 = b"\0\0\0\0"


def _positive(instance: object, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


@frozen
class DatagramLimits:
    """
    The reflection-safety settings of a datagram responder.

    @ivar maxDatagram: The largest request answered, in bytes.  The default
        is the largest UDP payload of one 9000-byte jumbo frame over IPv4.
    @ivar portFloor: Source ports below this are never answered.
    @ivar rate: Datagrams a second answered per source address; 0 for no
        limit.
    @ivar burst: Datagrams a source may send at once before C{rate} applies.
    @ivar maxSources: Source addresses tracked at once (least recently used
        evicted).
    @ivar allow: When not empty, only sources in these networks are
        answered.
    """

    maxDatagram: int = field(default=8972, validator=_positive)
    portFloor: int = field(default=1024, validator=_positive)
    rate: float = field(default=1000.0, validator=_positive)
    burst: int = field(default=2000, validator=_positive)
    maxSources: int = field(default=10000, validator=_positive)
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def _classify(host: str, allow: Sequence[Any]) -> str | None:
    """
    The reason never to answer this source address, if there is one.
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return "source-invalid"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "source-unspecified"
    if address.is_multicast:
        return "source-multicast"
    if isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255")
    ):
        return "source-broadcast"
    if allow and not any(address in network for network in allow):
        return "not-allowed"
    return None


class ReflectionGuard:
    """
    Decide whether a datagram may be answered, and count and log every
    refusal.

    The static checks on a source address run once, when the address enters
    the token bucket table; later datagrams from it cost a port comparison
    and a bucket update.

    @ivar buckets: Source address to C{[tokens, last update]}, least
        recently used first.
    """

    _log = Logger()

    def __init__(
        self,
        serviceName: str,
        limits: DatagramLimits,
        metrics: IMetrics,
        clock: Any,
    ) -> None:
        self.serviceName = serviceName
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._maxDatagram = limits.maxDatagram
        self._portFloor = limits.portFloor
        self._rate = limits.rate
        self._burst = float(max(limits.burst, 1))
        self._maxSources = max(limits.maxSources, 1)
        self._refusalLog = RateLimitedLog(self._log, clock.seconds)

    def admit(self, host: str, port: int, size: int, now: float) -> bool:
        """
        Whether to answer a datagram of C{size} bytes from C{(host, port)}
        received at C{now}.  A refusal is counted and logged here.
        """
        if size > self._maxDatagram:
            return self.refuse("too-large", host, port)
        if port < self._portFloor:
            return self.refuse("source-port", host, port)
        buckets = self.buckets
        bucket = buckets.get(host)
        if bucket is None:
            reason = self._denied.get(host)
            if reason is None:
                reason = _classify(host, self.limits.allow)
                if reason is not None:
                    self._denied[host] = reason
                    if len(self._denied) > self._maxSources:
                        self._denied.popitem(last=False)
            if reason is not None:
                return self.refuse(reason, host, port)
            bucket = buckets[host] = [self._burst, now]
            if len(buckets) > self._maxSources:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(host)
        rate = self._rate
        if not rate:
            return True
        tokens = bucket[0] + (now - bucket[1]) * rate
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return self.refuse("rate", host, port)
        bucket[0] = tokens - 1.0
        return True

    def refuse(self, reason: str, host: str, port: int) -> bool:
        """
        Count and (at a bounded rate) log a refused datagram.

        @return: L{False}, so that callers can C{return self.refuse(...)}.
        """
        self.metrics.inc(
            "netdemo_refused_total", service=self.serviceName, reason=reason
        )
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._refusalLog.emit(
            reason,
            LogLevel.warn,
            "{service}: refused a datagram from {peer} ({reason}); "
            "{suppressed} similar events not logged",
            event="refused",
            service=self.serviceName,
            peer=peer,
            reason=reason,
        )
        return False


class UDPEcho(DatagramProtocol):
    """
    The echo responder.  L{PacketInfoPort} calls L{guard} and replies
    itself; L{datagramReceived} serves any other datagram transport.

    @ivar datagramsIn: Datagrams received.
    @ivar bytesIn: Payload bytes received.
    @ivar datagramsOut: Replies handed to the kernel.
    @ivar bytesOut: Payload bytes of those replies.
    """

    _log = Logger()
    datagramsIn = 0
    bytesIn = 0
    datagramsOut = 0
    bytesOut = 0

    def __init__(self, guard: ReflectionGuard) -> None:
        self.guard = guard

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        size = len(datagram)
        self.datagramsIn += 1
        self.bytesIn += size
        host, port = addr[0], addr[1]
        if not self.guard.admit(host, port, size, self.guard.clock.seconds()):
            return
        try:
            self.transport.write(datagram, addr)  # type: ignore[union-attr]
        except Exception as e:
            self.sendFailed(e, host, port)
            return
        self.datagramsOut += 1
        self.bytesOut += size

    def sendFailed(self, reason: BaseException, host: str, port: int) -> None:
        """
        A reply could not be handed to the kernel (full buffer, no route):
        count it as a refusal with reason C{send-failed}.
        """
        self.guard.refuse("send-failed", host, port)

    def collect(self) -> list[Sample]:
        """
        The datagram and byte totals, for L{IMetrics.addCollector}.
        """
        service = self.guard.serviceName
        return [
            sampleOf(
                "netdemo_datagrams_received_total", self.datagramsIn, service=service
            ),
            sampleOf(
                "netdemo_datagrams_sent_total", self.datagramsOut, service=service
            ),
            sampleOf("netdemo_received_bytes_total", self.bytesIn, service=service),
            sampleOf("netdemo_sent_bytes_total", self.bytesOut, service=service),
        ]


class PacketInfoPort(udp.Port):
    """
    A UDP port that reads with C{recvmsg} and answers echo requests from the
    address they were sent to.

    When the port is bound to a wildcard address it asks for the
    destination of every datagram (C{IP_PKTINFO} / C{IPV6_RECVPKTINFO}) and
    passes it back with C{sendmsg}, with the interface index cleared for
    IPv4 (a non-zero index would make the kernel use the interface's primary
    address instead).  Bound to one address, it needs neither.
    """

    protocol: UDPEcho

    def __init__(
        self,
        port: int,
        proto: UDPEcho,
        interface: str = "",
        maxPacketSize: int = MAX_PACKET_SIZE,
        reactor: Any = None,
    ) -> None:
        super().__init__(port, proto, interface, maxPacketSize, reactor)
        self._replyInfo: dict[bytes, Any] = {}
        self._wantInfo = False

    def createInternetSocket(self) -> socket.socket:
        skt: socket.socket = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            # Keep the IPv6 listener to IPv6: a bare port gets its own IPv4
            # socket, and replies to mapped addresses would need IPv4
            # packet information.
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return skt

    def _bindSocket(self) -> None:
        super()._bindSocket()
        host = self.socket.getsockname()[0]
        if host in ("0.0.0.0", "::"):
            self._wantInfo = True
            if self.addressFamily == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                self.socket.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

    def _replyAncillary(self, info: bytes) -> Any:
        """
        The ancillary data for a reply to a datagram whose packet information
        is C{info} (empty when it carries no destination), or L{False} if it
        was not sent to a unicast address.
        """
        reply: Any
        if self.addressFamily == socket.AF_INET6:
            if len(info) < 20 or info[0] == 0xFF:
                return False
            if info[:16] == bytes(16):
                # Queued before packet information was asked for (a socket
                # inherited from systemd with a datagram waiting): the
                # kernel chooses the source.
                return ()
            reply = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info[:20])]
        else:
            # struct in_pktinfo: ifindex, spec_dst (the local address the
            # datagram was routed to), addr (the header's destination).
            # They differ when the datagram went to a broadcast or multicast
            # address.
            if len(info) < 12:
                return False
            if info[4:8] == _ZERO4:
                return ()  # as above: not known, let the kernel choose
            if info[4:8] != info[8:12]:
                return False
            reply = [(socket.IPPROTO_IP, IP_PKTINFO, _ZERO4 + info[4:12])]
        if len(self._replyInfo) > 256:
            self._replyInfo.clear()
        self._replyInfo[info] = reply
        return reply

    def doRead(self) -> None:
        """
        Read and answer up to L{BATCH} datagrams.
        """
        proto = self.protocol
        guard = proto.guard
        admit = guard.admit
        sock = self.socket
        recvmsg = sock.recvmsg
        sendmsg = sock.sendmsg
        sendto = sock.sendto
        bufsize = self.maxPacketSize
        ancsize = _ANCILLARY_SIZE if self._wantInfo else 0
        replyInfo = self._replyInfo
        now = guard.clock.seconds()
        count = bytesIn = sent = bytesOut = 0
        try:
            while count < BATCH:
                try:
                    data, ancillary, flags, addr = recvmsg(bufsize, ancsize)
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno in (errno.EINTR, errno.ECONNREFUSED, errno.ENOBUFS):
                        continue
                    raise
                count += 1
                size = len(data)
                bytesIn += size
                if not admit(addr[0], addr[1], size, now):
                    continue
                try:
                    if ancillary:
                        info = ancillary[0][2]
                        reply = replyInfo.get(info)
                        if reply is None:
                            reply = self._replyAncillary(info)
                        if reply is False:
                            guard.refuse("destination-not-unicast", addr[0], addr[1])
                            continue
                        sendmsg((data,), reply, 0, addr)
                    else:
                        sendto(data, addr)
                except OSError as e:
                    proto.sendFailed(e, addr[0], addr[1])
                    continue
                sent += 1
                bytesOut += size
        finally:
            proto.datagramsIn += count
            proto.bytesIn += bytesIn
            proto.datagramsOut += sent
            proto.bytesOut += bytesOut


@frozen
class ListenAddress:
    """
    Where a datagram service listens.

    @ivar host: An IP address; C{""} for every IPv4 and IPv6 address.
    @ivar port: The UDP port (0 picks one).
    @ivar systemdName: The C{FileDescriptorName} of a socket inherited from
        systemd, instead of C{host} and C{port}.
    """

    host: str
    port: int
    systemdName: str | None = None

    def __str__(self) -> str:
        if self.systemdName is not None:
            return f"systemd:{self.systemdName}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}" if self.host else str(self.port)


def parseListenAddress(value: str) -> ListenAddress:
    """
    Parse C{[ADDRESS:]PORT}: C{9000}, C{127.0.0.1:9000}, C{[::1]:9000}, or
    C{systemd:NAME} for a socket systemd passes (looked up at start, when
    the descriptors are there).

    @raise ValueError: Naming the value, when it is not one of those.
    """
    text = value.strip()
    if text.startswith("systemd:"):
        name = text[len("systemd:") :]
        if not name or not all(c.isalnum() or c in "-_.:" for c in name):
            raise ValueError(f"{value!r}: systemd:NAME needs the FileDescriptorName")
        return ListenAddress("", 0, name)
    host = ""
    portText = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{value!r} is not [ADDRESS]:PORT")
        host, portText = text[1:end], text[end + 2 :]
    elif ":" in text:
        if text.count(":") > 1:
            raise ValueError(f"{value!r}: write an IPv6 address as [ADDRESS]:PORT")
        host, portText = text.split(":")
    if host:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if not portText.isdigit() or not 0 <= int(portText) <= 65535:
        raise ValueError(f"{value!r}: port {portText!r} is not between 0 and 65535")
    return ListenAddress(host, int(portText))


def _listen(reactor: Any, address: str, port: int, proto: UDPEcho) -> IListeningPort:
    """
    Listen with a L{PacketInfoPort} on reactors that have file descriptors,
    otherwise with the reactor's own C{listenUDP} (no reply-address fix).
    """
    if IReactorFDSet.providedBy(reactor):
        p = PacketInfoPort(port, proto, address, MAX_PACKET_SIZE, reactor)
        p.startListening()
        return p
    listened: IListeningPort = reactor.listenUDP(port, proto, address, MAX_PACKET_SIZE)
    return listened


def _adopt(reactor: Any, name: str, proto: UDPEcho) -> IListeningPort:
    """
    Serve C{proto} on the datagram socket that systemd passed with
    C{FileDescriptorName=name}: a L{PacketInfoPort} (so a wildcard-bound
    socket replies from the right address) on reactors with file
    descriptors.  The socket is made non-blocking first (systemd passes it
    blocking, which would freeze the reactor in C{recvmsg}).

    @raise CannotListenError: No such socket, or not a datagram socket.
    """
    from twisted.internet.error import CannotListenError

    from netdemo.systemd import adoptDatagramPort, inheritedDescriptor

    try:
        fd = inheritedDescriptor(name)
    except KeyError as e:
        raise CannotListenError("", 0, e.args[0]) from None
    probe = socket.socket(fileno=fd)
    try:
        family, kind = probe.family, probe.type
    finally:
        probe.detach()
    if kind != socket.SOCK_DGRAM or family not in (socket.AF_INET, socket.AF_INET6):
        raise CannotListenError("", 0, f"systemd socket {name!r} is not a UDP socket")
    os.set_blocking(fd, False)
    if not IReactorFDSet.providedBy(reactor):
        return adoptDatagramPort(reactor, fd, proto, MAX_PACKET_SIZE)
    port: PacketInfoPort = PacketInfoPort._fromListeningDescriptor(
        reactor, fd, family, proto, MAX_PACKET_SIZE
    )
    port.startListening()
    return port


def _hostsFor(address: ListenAddress) -> list[str]:
    """
    The socket addresses for one listen address: a bare port means every
    IPv4 and every IPv6 address.
    """
    if address.host:
        return [address.host]
    return ["0.0.0.0", "::"] if socket.has_ipv6 else ["0.0.0.0"]


class DatagramService(Service):
    """
    Listen for datagrams on several addresses with one protocol instance
    per socket.

    A port that cannot be bound fails start-up, except the IPv6 half of a
    bare port on a host without IPv6, which is logged and skipped.

    @ivar ports: The listening ports.
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        addresses: Iterable[ListenAddress],
        protocolFactory: Any,
        reactor: Any,
        metrics: IMetrics | None = None,
    ) -> None:
        self.setName(name)
        self.metrics = metrics
        self._addresses: list[str] = []
        self.addresses = list(addresses)
        self.protocolFactory = protocolFactory
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.protocols: list[UDPEcho] = []

    def privilegedStartService(self) -> None:
        if not self.ports:
            self._listenAll()
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.ports:
            self._listenAll()
        super().startService()

    def _listenAll(self) -> None:
        from twisted.internet.error import CannotListenError

        for address in self.addresses:
            if address.systemdName is not None:
                proto = self.protocolFactory()
                self._listened(
                    _adopt(self.reactor, address.systemdName, proto), proto, address
                )
                continue
            number = address.port
            for host in _hostsFor(address):
                proto = self.protocolFactory()
                try:
                    port = _listen(self.reactor, host, number, proto)
                except CannotListenError as e:
                    if host == "::" and not address.host and _noIPv6(e):
                        self._log.warn(
                            "{service}: no IPv6 on this host; {address} listens "
                            "on IPv4 only",
                            event="ipv6_unavailable",
                            service=self.name,
                            address=str(address),
                        )
                        continue
                    raise
                number = self._listened(port, proto, address)

    def _listened(
        self, port: IListeningPort, proto: UDPEcho, address: ListenAddress
    ) -> int:
        """
        Keep, report and log one bound socket.

        @return: Its port number.
        """
        self.ports.append(port)
        self.protocols.append(proto)
        h: Any = port.getHost()
        where = formatAddress(h)
        self._addresses.append(where)
        if self.metrics is not None:
            self.metrics.set(
                "netdemo_listener_info", 1, service=str(self.name), address=where
            )
        self._log.info(
            "{service}: listening on {address} ({description})",
            event="listening",
            service=self.name,
            address=where,
            description=str(address),
        )
        # Port 0 on a bare port: the IPv6 socket takes the IPv4 one's.
        return int(h.port)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        ports, self.ports = self.ports, []
        addresses, self._addresses = self._addresses, []
        if self.metrics is not None:
            for where in addresses:
                self.metrics.set(
                    "netdemo_listener_info", 0, service=str(self.name), address=where
                )
        return gatherResults(
            [maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
        ).addErrback(lambda f: self._log.failure("stopping", f))


def _noIPv6(e: Exception) -> bool:
    socketError = getattr(e, "socketError", None)
    return getattr(socketError, "errno", None) in (
        errno.EAFNOSUPPORT,
        errno.EADDRNOTAVAIL,
        errno.EPROTONOSUPPORT,
    )


def buildUDPEchoService(
    addresses: Iterable[ListenAddress],
    limits: DatagramLimits,
    metrics: IMetrics,
    reactor: Any,
) -> DatagramService:
    """
    Build the UDP echo service: one socket per address, one guard (and so
    one set of per-source limits) for all of them.

    @param addresses: Where to listen.
    @param limits: The reflection-safety settings.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    """
    guard = ReflectionGuard(SERVICE_NAME, limits, metrics, reactor)
    service: DatagramService

    def protocol() -> UDPEcho:
        return UDPEcho(guard)

    def collect() -> list[Sample]:
        totals: dict[tuple[str, Any], float] = {}
        for proto in service.protocols:
            for s in proto.collect():
                totals[(s.name, s.labels)] = totals.get((s.name, s.labels), 0) + s.value
        return [Sample(name, labels, v) for (name, labels), v in totals.items()]

    service = DatagramService(SERVICE_NAME, addresses, protocol, reactor, metrics)
    metrics.addCollector(collect)
    return service
