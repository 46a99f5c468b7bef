# -*- test-case-name: tests.test_internals -*-
"""
The one seam onto Twisted's private API.

netdemo needs a few things that Twisted has no public API for.  Every read
or write of a private Twisted attribute, and every override of behaviour
that only Twisted's internals define, is in this module and nowhere else,
each with a test in C{tests/test_internals.py} that fails loudly when a
Twisted release changes it.  Nothing here falls back silently: an attribute
that is gone raises C{AttributeError} where it is used.

Tested against Twisted 26.10 (C{pyproject.toml} and C{docs/operations.md}
say so too).  The touchpoints:

  - the write buffer of a stream transport (C{FileDescriptor.dataBuffer},
    C{offset}, C{_tempDataLen}): how many bytes are still unsent, for byte
    accounting, idle detection and the direct-send path;
  - the socket of a plain TCP transport (C{tcp.Connection.socket}): the
    direct-send path of echo and the hub hands a reply to the kernel at
    once when nothing is queued, saving two C{epoll_ctl} calls and a reactor
    turn per write;
  - the epoll reactor's treatment of a connected UDP socket's pending ICMP
    error as a hang-up (twisted/twisted#6467): L{RefusalTolerantPort};
  - C{udp.Port._fromListeningDescriptor}: adopting an inherited datagram
    socket into a L{udp.Port} subclass (the public
    C{adoptDatagramPort} always builds a plain C{udp.Port});
  - C{twisted.internet.endpoints._SystemdParser._sddaemon}: the one
    L{ListenFDs} that saw C{LISTEN_FDS} before Twisted removed it from the
    environment;
  - the C{_port} of a parsed server endpoint, to check a port number when
    the options are parsed rather than when listening fails;
  - the accept batch of a listening TCP port (C{tcp.Port.numberAccepts},
    read by its C{doRead}): Twisted grows it by 20 every time a batch
    fills, without a bound, so that a storm of connections makes one turn
    accept hundreds of them (L{capAccepts}).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import abstract, tcp, udp
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.python.systemd import ListenFDs
from zope.interface import implementer

__all__ = [
    "SD_LISTEN_FDS_START",
    "RefusalTolerantPort",
    "adoptDatagramPortAs",
    "capAccepts",
    "directTransport",
    "endpointPort",
    "inheritedListenFDs",
    "sendIfIdle",
    "unsentBytes",
    "writeNow",
]

#: The first descriptor systemd passes (C{SD_LISTEN_FDS_START}, sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3

#: The transports whose socket the direct-send path may use: plain TCP,
#: exactly (TLS and other wrappers keep their own buffers).
_DIRECT_TYPES = (tcp.Server, tcp.Client)

#: Pending socket errors of a connected UDP socket that an ICMP report
#: leaves behind; the port keeps reading after any of them.
ICMP_ERRORS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EPROTO,
        errno.EMSGSIZE,
    }
)


def unsentBytes(transport: Any) -> int:
    """
    How many bytes a stream transport holds unsent.

    Twisted's socket transports (every L{abstract.FileDescriptor}: TCP,
    UNIX) keep their write buffer in C{dataBuffer} (from C{offset}) plus
    C{_tempDataLen} bytes not yet joined into it.  Other transports (a TLS
    wrapper, test transports) do not say: they count as 0.
    """
    if isinstance(transport, abstract.FileDescriptor):
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return 0


def directTransport(transport: Any) -> tcp.Connection | None:
    """
    C{transport} if L{writeNow} may hand data to its socket directly (plain
    TCP), otherwise L{None}.
    """
    if type(transport) in _DIRECT_TYPES:
        return transport  # type: ignore[no-any-return]
    return None


def writeNow(transport: tcp.Connection, data: bytes) -> None:
    """
    Write C{data} to a plain TCP transport (see L{directTransport}): when
    nothing is queued, hand it to the kernel now; whatever the kernel does
    not take goes through C{transport.write}, which keeps order and flow
    control.

    C{socket.send}, not C{writeSomeData}: that adds a C{memoryview} slice
    and an EINTR loop per write (Python retries EINTR itself, PEP 475).
    """
    if not transport._tempDataLen and not transport.dataBuffer:
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN/ENOBUFS: the kernel took nothing.  Any other error:
            # transport.write buffers the data and the next doWrite reports
            # the loss, as for any write.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def sendIfIdle(transport: tcp.Connection, data: bytes) -> bool:
    """
    Hand C{data} to the kernel if nothing is queued for C{transport}; never
    queue it.  For a last line before an abort.

    @return: Whether the kernel took all of it.
    """
    if transport._tempDataLen or transport.dataBuffer:
        return False
    try:
        return bool(transport.socket.send(data) == len(data))
    except OSError:
        return False


@implementer(IHalfCloseableDescriptor)
class RefusalTolerantPort(udp.Port):
    """
    A connected UDP port that survives ICMP errors.

    On epoll, the socket error that an ICMP report (port or host
    unreachable) leaves on a connected UDP socket arrives as C{EPOLLERR}
    without C{EPOLLIN}; Twisted takes it for a hang-up and closes the port
    for good (twisted/twisted#6467), so a prober would stop at the first
    refusal.  Declaring the port half-closeable makes the reactor call
    L{readConnectionLost} instead: the pending error is read (which clears
    it), a refusal is reported to the protocol's C{connectionRefused}, any
    other ICMP error to its C{connectionFailed} if it has one, and reading
    resumes.  With no pending error it was a real hang-up: the port closes.
    """

    def readConnectionLost(self, reason: Any) -> None:
        """
        Clear the pending socket error, report it, go on reading.
        """
        try:
            pending = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            pending = 0
        if pending not in ICMP_ERRORS:
            self.connectionLost(reason)
            return
        if pending == errno.ECONNREFUSED:
            self.protocol.connectionRefused()
        else:
            failed = getattr(self.protocol, "connectionFailed", None)
            if failed is not None:
                failed(pending)
        self.startReading()


def adoptDatagramPortAs(
    portType: type[udp.Port],
    reactor: Any,
    fd: int,
    family: int,
    protocol: Any,
    maxPacketSize: int,
) -> udp.Port:
    """
    Build a C{portType} (a L{udp.Port} subclass) on an inherited datagram
    socket C{fd} (non-blocking already), not yet listening: call its
    C{startListening}.  The port uses a duplicate of C{fd}.
    """
    port: udp.Port = portType._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize
    )
    return port


def inheritedListenFDs() -> ListenFDs:
    """
    The descriptors systemd passed to this process.

    Twisted reads C{LISTEN_FDS} once, when C{twisted.internet.endpoints} is
    imported, and removes it from the environment: a new L{ListenFDs} would
    find nothing.  This is the instance its C{systemd:} endpoint parser
    keeps.
    """
    from twisted.internet.endpoints import _SystemdParser

    fds: ListenFDs = _SystemdParser._sddaemon
    return fds


def endpointPort(endpoint: object) -> int | None:
    """
    The port number a parsed server endpoint (TCP, TCP6, TLS) will listen
    on, or L{None} for endpoints without one (UNIX, systemd, ...).
    """
    from twisted.internet.endpoints import (
        SSL4ServerEndpoint,
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
    )

    if isinstance(
        endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)
    ):
        port: int = endpoint._port
        return port
    return None


def capAccepts(port: object, most: int) -> bool:
    """
    Make a listening TCP port (or UNIX, TLS: any L{tcp.Port}) accept at most
    C{most} connections per reactor turn.

    C{tcp.Port.doRead} accepts up to C{numberAccepts} connections in one
    turn and adds 20 to it each time it accepted that many: under a storm of
    connections one turn grows to hundreds of accepts, each with its
    protocol's C{connectionMade}, while every other connection waits.  This
    lowers C{numberAccepts} to C{most} before each C{doRead}.  Other ports
    are left alone.

    @return: Whether the port is one that could be capped.
    """
    if not isinstance(port, tcp.Port):
        return False
    doRead = port.doRead

    def cappedRead() -> Any:
        if port.numberAccepts > most:
            port.numberAccepts = most
        return doRead()

    port.doRead = cappedRead  # type: ignore[method-assign]
    return True
