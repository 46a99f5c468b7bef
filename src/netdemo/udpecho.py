# -*- test-case-name: tests.test_udpecho -*-
"""
UDP echo (RFC 862) that is safe to leave running.

The reply is the request, byte for byte, and never larger; every datagram
passes the L{ReflectionGuard} first (source port, source address, rate).
Datagrams sent to a broadcast or multicast address are refused too
(C{destination-not-unicast}): one request would get an answer from every
host.

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
import socket
from collections.abc import Iterable
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IListeningPort, IReactorFDSet
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from netdemo.datagram import (
    MAX_PACKET_SIZE,
    ListenAddress,
    UnicastService,
    inheritedDatagramSocket,
)
from netdemo.guard import ReflectionGuard
from netdemo.internals import adoptDatagramPortAs
from netdemo.limits import DatagramLimits
from netdemo.metrics import IMetrics, Sample, sampleOf

__all__ = [
    "PacketInfoPort",
    "UDPEcho",
    "UDPEchoService",
    "buildUDPEchoService",
]

SERVICE_NAME = "udp-echo"

#: Linux values missing from Python 3.11's C{socket} module.
IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO: int = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO: int = getattr(socket, "IPV6_PKTINFO", 50)

#: How many datagrams one readiness event may process before the reactor
#: gets to serve other sockets.
BATCH = 256

#: How long a wildcard IPv4 port trusts what it learnt of the kernel's
#: choice of source address for a client (L{PacketInfoPort._kernelChooses}),
#: in seconds, and for how many clients at most.
SAME_SOURCE_SECONDS = 1.0
SAME_SOURCE_HOSTS = 256

_ANCILLARY_SIZE = socket.CMSG_SPACE(20)
_ZERO4 = b"\0\0\0\0"


class UDPEcho(DatagramProtocol):
    """
    The echo responder.  L{PacketInfoPort} calls L{guard} and replies
    itself; L{datagramReceived} serves any other datagram transport.

    @ivar datagramsIn: Datagrams received.
    @ivar bytesIn: Payload bytes received.
    @ivar datagramsOut: Replies handed to the kernel.
    @ivar bytesOut: Payload bytes of those replies.
    """

    #: No C{Starting ...}/C{Stopping ...} lines: netdemo logs its own.
    noisy = False

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

    An IPv4 reply goes out with a plain C{sendto} (cheaper: no ancillary
    data to build and parse) when the kernel would choose the right source
    address anyway: when the client's route leaves from the address it sent
    to, as it does on a host with one address per route
    (L{_kernelChooses}).  The packet information is still read for every
    datagram, so a datagram to another address, or to a broadcast one, is
    told apart as before.
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
        #: IPv4 source host -> the packet information of the datagrams
        #: from it that a plain C{sendto} answers from the right address,
        #: and the (host, packet information) pairs it does not
        #: (L{_kernelChooses}); both emptied every L{SAME_SOURCE_SECONDS}.
        self._sameSource: dict[str, bytes] = {}
        self._otherSource: set[tuple[str, bytes]] = set()
        self._sameSourceSince = 0.0

    def createInternetSocket(self) -> socket.socket:
        skt: socket.socket = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            # Keep the IPv6 listener to IPv6: a bare port gets its own IPv4
            # socket, and replies to mapped addresses would need IPv4
            # packet information.
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return skt

    def startListening(self) -> None:
        """
        Bind (or adopt) the socket; on a wildcard address, ask for the
        destination of every datagram.  No datagram is read before this
        returns: the reactor reads only on its next turn.
        """
        super().startListening()
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

    def _kernelChooses(self, host: str, info: bytes) -> bool:
        """
        Whether a reply to IPv4 C{host} sent with a plain C{sendto} would
        leave from the address the datagram (packet information C{info},
        a unicast destination) was sent to: the kernel's own choice of
        source for C{host}, learnt by connecting a probe socket to it (a
        route lookup; nothing is sent), is that address.

        The answer is remembered (at most L{SAME_SOURCE_HOSTS} of each
        kind) until the caches are emptied, every L{SAME_SOURCE_SECONDS},
        so that a changed route or address is noticed; a host is probed
        only once the guard admitted its datagram, so a flood of forged
        sources makes no more probes than the guard lets replies through.
        """
        if (host, info) in self._otherSource:
            return False
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((host, 9))
                chosen = socket.inet_aton(probe.getsockname()[0])
        except OSError:
            chosen = b""
        if chosen != info[8:12]:
            if len(self._otherSource) >= SAME_SOURCE_HOSTS:
                self._otherSource.clear()
            self._otherSource.add((host, info))
            return False
        if len(self._sameSource) >= SAME_SOURCE_HOSTS:
            self._sameSource.clear()
        self._sameSource[host] = info
        return True

    def doRead(self) -> None:
        """
        Read and answer up to L{BATCH} datagrams, with one clock reading.
        The reply budget is taken once per batch: a reply is allowed while
        the replies and bytes sent in the batch leave room for it.
        """
        proto = self.protocol
        guard = proto.guard
        admit = guard.admitSource
        budgeted = guard.budgeted
        sock = self.socket
        recvmsg = sock.recvmsg
        sendmsg = sock.sendmsg
        sendto = sock.sendto
        bufsize = self.maxPacketSize
        ancsize = _ANCILLARY_SIZE if self._wantInfo else 0
        replyInfo = self._replyInfo
        now = guard.clock.seconds()
        since = self._sameSourceSince
        if now - since >= SAME_SOURCE_SECONDS or now < since:
            self._sameSource.clear()
            self._otherSource.clear()
            self._sameSourceSince = now
        sameSource = self._sameSource
        ipv4 = self.addressFamily == socket.AF_INET
        budget, volume = guard.batch(now)
        # Whole replies and bytes, no more than a batch can use: the checks
        # below compare small ints, CPython's fastest comparison.
        replies, room = BATCH, BATCH * MAX_PACKET_SIZE
        if budgeted:
            replies, room = min(int(budget), replies), min(int(volume), room)
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
                if sent >= replies or bytesOut + size > room:
                    reason = "global-rate" if sent >= replies else "global-bytes"
                    guard.refuse(reason, addr[0], addr[1])
                    continue
                if not admit(addr[0], addr[1], size, now):
                    continue
                try:
                    if ancillary:
                        info = ancillary[0][2]
                        if sameSource.get(addr[0]) == info:
                            sendto(data, addr)
                        else:
                            reply = replyInfo.get(info)
                            if reply is None:
                                reply = self._replyAncillary(info)
                            if reply is False:
                                guard.refuse(
                                    "destination-not-unicast", addr[0], addr[1]
                                )
                                continue
                            if reply and ipv4 and self._kernelChooses(addr[0], info):
                                sendto(data, addr)
                            else:
                                sendmsg((data,), reply, 0, addr)
                    else:
                        sendto(data, addr)
                except OSError as e:
                    proto.sendFailed(e, addr[0], addr[1])
                    continue
                sent += 1
                bytesOut += size
        finally:
            if budgeted:
                guard.spent(budget - sent, volume - bytesOut)
            proto.datagramsIn += count
            proto.bytesIn += bytesIn
            proto.datagramsOut += sent
            proto.bytesOut += bytesOut


class UDPEchoService(UnicastService):
    """
    The UDP echo's sockets: L{PacketInfoPort}s on reactors with file
    descriptors (so a wildcard-bound socket replies from the address the
    client sent to), the reactor's own C{listenUDP} otherwise.
    """

    def listenOn(self, host: str, port: int, proto: DatagramProtocol) -> IListeningPort:
        if not IReactorFDSet.providedBy(self.reactor):
            return super().listenOn(host, port, proto)
        listening = PacketInfoPort(port, proto, host, MAX_PACKET_SIZE, self.reactor)  # type: ignore[arg-type]
        listening.startListening()
        return listening

    def adopt(self, name: str, proto: DatagramProtocol) -> IListeningPort:
        if not IReactorFDSet.providedBy(self.reactor):
            return super().adopt(name, proto)
        fd, family = inheritedDatagramSocket(name)
        port = adoptDatagramPortAs(
            PacketInfoPort, self.reactor, fd, family, proto, MAX_PACKET_SIZE
        )
        port.startListening()
        return port


def buildUDPEchoService(
    addresses: Iterable[ListenAddress],
    limits: DatagramLimits,
    metrics: IMetrics,
    reactor: Any,
) -> UDPEchoService:
    """
    Build the UDP echo service: one socket per address, one guard (and so
    one set of per-source limits) for all of them.

    @param addresses: Where to listen.
    @param limits: The reflection-safety settings.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    """
    guard = ReflectionGuard(SERVICE_NAME, limits, metrics, reactor)
    service: UDPEchoService

    def protocol() -> UDPEcho:
        return UDPEcho(guard)

    def collect() -> list[Sample]:
        totals: dict[tuple[str, Any], float] = {}
        for proto in service.protocols:
            for s in proto.collect():
                totals[(s.name, s.labels)] = totals.get((s.name, s.labels), 0) + s.value
        return [Sample(name, labels, v) for (name, labels), v in totals.items()]

    service = UDPEchoService(SERVICE_NAME, addresses, protocol, reactor, metrics)
    metrics.addCollector(collect)
    return service
