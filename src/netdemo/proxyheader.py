"""
The PROXY protocol (HAProxy's, versions 1 and 2) in front of a stream
service: the real client address of a connection that reaches netdemo
through a load balancer.

A listener whose description starts with C{haproxy:} (C{haproxy:tcp:8008},
C{haproxy:ssl:8443:...}) expects every connection to start with a PROXY
header, as HAProxy's C{send-proxy} and C{send-proxy-v2} send it.  The
service's protocol is built only once the header is in, from the address
the header gives (L{ProxyHeaderFactory.buildProtocol} builds a small
L{ProxyHeaderProtocol} that reads it), so everything that looks at the
client's address sees the real one: the greeting and identity, C{/who},
per-peer limits, refusals, logs, metrics, the status page.  Twisted's own
C{haproxy:} wrapper builds the service's protocol when the TCP connection
opens, with the proxy's address, and sends every later byte through a
wrapper; this one hands the TCP connection itself to the service's
protocol (L{netdemo.internals.handOver}), so after the header there is no
extra call per read or write.

With C{haproxy:ssl:...}, the header comes first and TLS after it, in that
order on the wire, as HAProxy sends it (C{send-proxy} on a C{ssl} server
line): the header is read from the plain TCP connection, then the TLS
protocol is built for the real address and does the handshake.

What a sender can make this do is bounded:

  - the header must be complete within L{HEADER_TIMEOUT} seconds and at
    most L{MAX_HEADER} bytes long (version 1 headers are at most 107);
  - at most L{MAX_WAITING} connections of one listener may be waiting for
    their header at once;
  - a malformed header (or any bytes that are not a PROXY header), an
    address that is not an IP address literal, a port out of range: the
    connection is closed.

Each refusal is counted and logged at a bounded rate by the service's
factory, as C{proxy-header}, C{proxy-timeout} or C{proxy-waiting}, with
the proxy's address (the only one known).  A version 2 C{LOCAL} header (a
health check) and a version 1 C{UNKNOWN} one keep the proxy's address.

Trust: anyone who can connect to a C{haproxy:} listener can claim any
address.  Bind it where only the proxy can reach it (docs/operations.md).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol

from netdemo.internals import handOver, proxyHeaderParser

#: Seconds within which a connection's PROXY header must be complete.
HEADER_TIMEOUT = 10.0

#: The longest PROXY header accepted, in bytes (version 2 headers may carry
#: extensions; version 1 headers are at most 107 bytes).
MAX_HEADER = 4096

#: Connections of one listener that may wait for their header at once.
MAX_WAITING = 1024

#: The description prefix that asks for a PROXY header.
PREFIX = "haproxy:"


def wantsProxyHeader(description: str) -> bool:
    """
    Whether a listener description asks for the PROXY protocol.
    """
    return description[: len(PREFIX)].lower() == PREFIX


def splitProxied(description: str) -> tuple[str, str]:
    """
    A listener description's C{haproxy:} prefix (or C{""}) and the rest.
    """
    if wantsProxyHeader(description):
        return description[: len(PREFIX)], description[len(PREFIX) :]
    return "", description


def realAddress(address: IAddress | None) -> IPv4Address | IPv6Address | None:
    """
    The client address a parsed header gives, checked: an IP address
    literal of the header's family and a port in range, or L{None}.
    """
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        return None
    if not 0 <= address.port <= 65535:
        return None
    if isinstance(address, IPv4Address):
        if ip.version != 4:
            return None
        return IPv4Address("TCP", ip.compressed, address.port)
    if ip.version != 6:
        return None
    return IPv6Address("TCP", ip.compressed, address.port)


class ProxyHeaderProtocol(Protocol):
    """
    Reads one connection's PROXY header, then hands the connection to the
    service's protocol built for the address the header gives.

    @ivar proxy: The proxy's address (the TCP peer).
    """

    factory: ProxyHeaderFactory

    def __init__(self, proxy: IAddress) -> None:
        self.proxy = proxy
        # The first bytes, until they tell the version; then the parser
        # keeps what it needs, and only the count of bytes is kept here.
        self._head = b""
        self._received = 0
        self._parser: Any = None
        self._timer: Any = None
        self._done = False

    def connectionMade(self) -> None:
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._received += len(data)
        try:
            parser = self._parser
            if parser is None:
                head = self._head + data
                parser = proxyHeaderParser(head)
                if parser is None:
                    # Not enough bytes yet to tell the version (under 16).
                    self._head = head
                    return
                self._parser, self._head, data = parser, b"", head
            info, rest = parser.feed(data)
        except Exception:
            # Twisted's parsers raise InvalidProxyHeader and its kin; any
            # other error from a malformed header is the same refusal.
            self._refuse("proxy-header")
            return
        if info is None:
            if self._received > MAX_HEADER:
                self._refuse("proxy-header")
            return
        if info.source is None or isinstance(info.source, UNIXAddress):
            # A health check (v2 LOCAL), an unknown family (v1 UNKNOWN, v2
            # UNSPEC) or a proxy's UNIX socket: no IP address to use.
            peer: IAddress = self.proxy
        else:
            real = realAddress(info.source)
            if real is None:
                self._refuse("proxy-header")
                return
            peer = real
        self._finish()
        self.factory.handOver(self, peer, rest or b"")

    def _refuse(self, reason: str) -> None:
        self._finish()
        self.factory.refuse(reason, self.proxy)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _timedOut(self) -> None:
        self._timer = None
        self._refuse("proxy-timeout")

    def _finish(self) -> None:
        self._done = True
        self._head = b""
        self._parser = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.factory.waiting.discard(self)

    def connectionLost(self, reason: Any = None) -> None:
        self._finish()


class ProxyHeaderFactory(Factory):
    """
    A listener's factory that reads each connection's PROXY header, then
    lets the service's factory build the connection's protocol for the real
    address.

    @ivar wrapped: What builds the service's protocols (the service's
        factory, or a TLS factory around it).
    @ivar service: The service's factory: its C{refuse(reason, peer)}
        counts and logs refusals.
    @ivar waiting: The connections still waiting for their header.
    """

    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        service: Any,
        clock: IReactorTime,
        timeout: float = HEADER_TIMEOUT,
        maxWaiting: int = MAX_WAITING,
    ) -> None:
        self.wrapped = wrapped
        self.service = service
        self.clock = clock
        self.timeout = timeout
        self.maxWaiting = maxWaiting
        self.waiting: set[ProxyHeaderProtocol] = set()

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress) -> ProxyHeaderProtocol | None:  # type: ignore[override]
        if len(self.waiting) >= self.maxWaiting:
            self.refuse("proxy-waiting", addr)
            return None
        p = ProxyHeaderProtocol(addr)
        p.factory = self
        self.waiting.add(p)
        return p

    def refuse(self, reason: str, peer: IAddress | None) -> None:
        """
        Count and log a refusal through the service's factory.
        """
        refuse = getattr(self.service, "refuse", None)
        if refuse is not None:
            refuse(reason, peer)

    def handOver(self, p: ProxyHeaderProtocol, peer: IAddress, rest: bytes) -> None:
        """
        The header is in: build the service's protocol for C{peer} and give
        it the connection (closed if the service refuses it).
        """
        transport = p.transport
        protocol = self.wrapped.buildProtocol(peer)
        if protocol is None:
            transport.loseConnection()  # type: ignore[union-attr]
            return
        handOver(transport, protocol, peer)
        if rest and transport.connected:  # type: ignore[union-attr]
            protocol.dataReceived(rest)


def proxiedListener(
    endpoint: IStreamServerEndpoint,
    wrapped: IProtocolFactory,
    service: Any,
    reactor: Any,
) -> StreamServerEndpointService:
    """
    The listener service of a C{haproxy:} description: C{endpoint} (what
    the rest of the description says, plain TCP for C{haproxy:ssl:}) with
    each connection's PROXY header read first, then C{wrapped} building the
    connection's protocol for the real address (the service's factory, or
    for C{haproxy:ssl:} a TLS factory around it, so that TLS starts after
    the header).

    @param service: The service's factory, which counts refusals.

    Like L{twisted.application.strports.service}, a failure to listen is
    raised from the service's start.
    """
    listener = StreamServerEndpointService(
        endpoint, ProxyHeaderFactory(wrapped, service, reactor)
    )
    listener._raiseSynchronously = True
    return listener
