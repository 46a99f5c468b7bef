# -*- test-case-name: tests.test_echo -*-
"""
TCP echo (RFC 862): every byte back, with flow control.

Compared with the tutorial C{dataReceived -> transport.write} echo:

  - B{half-close}: a client that sends its data and then a FIN (C{socat},
    C{nc -N}) gets every byte back before the server closes
    (L{IHalfCloseableProtocol});
  - B{flow control}: the protocol is the transport's streaming producer
    (it passes pauses on), so the server stops reading from a client while
    too much is unsent.  While the kernel takes every reply, reads are
    Twisted's 64 KiB; once it refuses part of one (the client does not read
    as fast as it sends), the limit and the largest read drop to
    L{QUEUED_BUFFER} until the queue has drained.  A client that sends and
    never reads therefore holds at most about one 64 KiB read in the
    process, and the kernel send buffer of its socket, fixed at
    L{SEND_BUFFER} (Linux doubles it) rather than left to grow to
    C{net.ipv4.tcp_wmem}'s maximum (4 MiB);
  - B{limits}: see L{netdemo.limits};
  - B{speed}: when nothing is buffered for the connection, the reply is
    handed to the kernel at once (the socket's C{send}) instead of being queued
    until the next reactor turn.  The tutorial echo pays two C{epoll_ctl}
    calls and one extra reactor iteration per reply for that queueing.  Only
    whatever the kernel did not take goes through C{transport.write}, which
    keeps ordering and flow control intact.  C{make bench} measures the
    difference (C{docs/benchmarks.md}).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from zope.interface import implementer

from netdemo.internals import (
    directTransport,
    limitWriteBuffer,
    unsentBytes,
)
from netdemo.limits import ConnectionLimits
from netdemo.metrics import IMetrics
from netdemo.stream import LimitedFactory, SlottedLimitedProtocol, StreamService

__all__ = ["Echo", "EchoFactory", "buildEchoService"]

SERVICE_NAME = "tcp-echo"

#: Once the kernel refused part of a reply: the unsent bytes above which
#: the echo stops reading from the client, and the largest read, until the
#: queue has drained (Twisted's default, kept otherwise, is 64 KiB for
#: both).
QUEUED_BUFFER = 16 * 1024

#: The kernel send buffer of each echo connection (Linux doubles it).
SEND_BUFFER = 64 * 1024


@implementer(IHalfCloseableProtocol, IPushProducer)
class Echo(SlottedLimitedProtocol):
    """
    Send back every byte received.

    No instance dictionary (L{SlottedLimitedProtocol}): an idle echo
    connection is many of the connections a busy server holds.

    @ivar _direct: The transport when the direct-send path applies to it
        (plain TCP), otherwise L{None}.
    @ivar _peer: The peer's address as C{buildProtocol} was given it, until
        the transport is known to give the same one (L{peer}).
    """

    __slots__ = ("_direct", "_peer")

    def __init__(self) -> None:
        super().__init__()
        self._direct: Any = None
        self._peer: IAddress | None = None

    @property
    def peer(self) -> IAddress | None:
        """
        The peer's address.  Once connected, the transport's (a plain TCP
        transport builds it from the address tuple it keeps) rather than
        the one C{buildProtocol} was given, which is dropped: an idle
        connection does not keep a second address object (96 bytes).
        """
        if self._peer is not None:
            return self._peer
        transport = self.transport
        if transport is None:
            return None
        return transport.getPeer()

    @peer.setter
    def peer(self, address: IAddress | None) -> None:
        self._peer = address

    def makeConnection(self, transport: Any) -> None:
        peer = self._peer
        if peer is not None and transport.getPeer() == peer:
            self._peer = None
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)
        handle = getattr(transport, "socket", None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._direct = directTransport(transport)
        if self._direct is None:
            # No direct path (UNIX sockets): the small buffer throughout.
            limitWriteBuffer(transport, QUEUED_BUFFER)

    def dataReceived(self, data: bytes) -> None:
        """
        Send C{data} back: straight to the socket when nothing is queued
        (L{netdemo.internals.writeNow}, written out here to save a call per
        read), what the kernel did not take through the transport, which
        keeps order and flow control and reports a failed send as the
        connection's loss.
        """
        self.idleTicks = 0
        self.bytesIn += len(data)
        t = self._direct
        if t is None:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        if not t._tempDataLen and not t.dataBuffer:
            try:
                sent = t.socket.send(data)
            except OSError:
                # EAGAIN: the kernel took nothing.  Any other error (EPIPE,
                # ECONNRESET): the transport buffers the data and its next
                # doWrite reports the loss.
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        # The kernel's buffer is full: pause above QUEUED_BUFFER, read less.
        t.bufferSize = QUEUED_BUFFER
        t.write(data)

    # The transport's producer: its pauses, passed on.

    def pauseProducing(self) -> None:
        """
        Too much is unsent: stop reading.
        """
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        """
        Everything was sent: read again, full-size reads if direct.
        """
        if self._direct is not None:
            limitWriteBuffer(self._direct, None)
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        """
        The connection is going: as the transport would.
        """
        self.transport.stopProducing()  # type: ignore[union-attr]

    @property
    def bytesOut(self) -> int:
        return self.sentOf(self.bytesIn)

    def readConnectionLost(self) -> None:
        """
        The client sent FIN: finish sending its echo, then close.

        The transport stops being its own producer first: a paused producer
        would otherwise be resumed, rather than the connection closed, once
        the buffer drains.
        """
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """
        The server never half-closes its side, so there is nothing to do.
        """

    def closeGracefully(self, reason: str) -> None:
        if self.closeReason is None:
            self.closeReason = reason
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self._unsentAtClose = unsentBytes(self.transport)
        self.connected = False
        self._direct = None
        super().connectionLost(reason)


class EchoFactory(LimitedFactory):
    """
    The factory of the echo service.
    """

    protocol = Echo
    # The echo writes exactly what it reads.
    writtenAttribute = "bytesIn"


def buildEchoService(
    descriptions: Iterable[str],
    limits: ConnectionLimits,
    metrics: IMetrics,
    reactor: IReactorTime,
) -> StreamService:
    """
    Build the TCP echo service: one listener per endpoint description, all
    sharing one factory and so one set of limits.

    @param descriptions: Server endpoint descriptions (C{tcp:8007}, ...).
    @param limits: The connection limits.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    """
    factory = EchoFactory(SERVICE_NAME, limits, metrics, reactor)
    return StreamService(SERVICE_NAME, factory, descriptions, reactor)
