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
    accounting, idle detection and the direct-send path
    (L{netdemo.echo.Echo.dataReceived} writes L{writeNow} out in place, to
    save a call per read: the one reader of these outside this module);
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
  - the epoll reactor's dispatch loop (C{EPollReactor._poller},
    C{_selectables}, C{_doReadOrWrite}, and C{doIteration}, which Twisted
    binds to its own C{doPoll} in the class body; for a readable-only
    event, what C{_doReadOrWrite} does, with C{_disconnectSelectable} and
    C{posixbase._NO_FILEDESC}) and the log context stack
    (C{ContextTracker.contexts}): L{LogContextCachingEPollReactor}, the
    reactor C{twistd --reactor=netdemo} installs (L{netdemo.reactor});
  - the reactor's writers (C{getWriters}) as the set of transports holding
    unsent bytes, and a transport's C{protocol}: the sent-byte totals look
    only at those (L{backloggedTransports});
  - C{FileDescriptor.bufferSize}, which is both the unsent-byte level at
    which a transport pauses its producer and the size of one read
    (L{limitWriteBuffer});
  - C{twisted.web.http.HTTPChannel}'s C{allHeadersReceived} and
    C{requestDone} (when Twisted calls them), its C{_command} and C{length}
    (the method and declared body of the request whose head just arrived),
    and C{LineReceiver}'s stop once the transport is C{disconnecting}: the
    HTTP service's header deadline and its refusal of request bodies
    (L{WatchedHTTPChannel});
  - C{LineReceiver}'s C{paused} (its parse loop stops while it is set) and
    C{HTTPChannel._waitingForTransport}: at most
    L{WatchedHTTPChannel.requestsPerTurn} pipelined requests are answered
    per reactor turn;
  - the accept batch of a listening TCP port (C{tcp.Port.numberAccepts},
    read by its C{doRead}): Twisted grows it by 20 every time a batch
    fills, without a bound, so that a storm of connections makes one turn
    accept hundreds of them (L{capAccepts});
  - the message buffers of C{twisted.web.websocket}'s wire protocol
    (C{_WebSocketWireProtocol._textBuffer} and C{_bytesBuffer}, each with
    C{add} and C{done}), which grow without a bound while a message's
    fragments arrive: L{boundWebSocketMessages} replaces them with bounded
    ones (Twisted has no limit on incoming messages);
  - the log observer C{twistd} builds from its options when neither
    C{--logger} nor the application names one
    (C{twistd._SomeApplicationRunner.loggerFactory(config)._getLogObserver()}):
    netdemo hands that same observer back to twistd without Twisted's
    per-port chatter (L{twistdLogObserver});
  - C{tcp.Connection.doRead} and its C{_dataReceived}, which
    L{LeanServer.doRead} does in one call;
  - the attributes C{tcp.Server.__init__} sets on every accepted
    connection (C{repstr}, C{sessionno}, C{client}, C{hostname},
    C{logstr} as C{"prefix,sessionno,host"}) and C{FileDescriptor}'s
    C{_tempDataBuffer}, and the connection class a C{tcp.Port} builds
    (C{transport}): L{LeanServer}, which keeps fewer objects per idle
    connection (L{leanTransports});
  - C{udp.MulticastPort.createInternetSocket}, where C{listenMultiple}
    sets both C{SO_REUSEADDR} and C{SO_REUSEPORT}: the multicast responder
    shares its port with C{SO_REUSEADDR} alone
    (L{AddressSharingMulticastPort}).
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from twisted.internet import abstract, main, tcp, udp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.posixbase import _NO_FILEDESC, PosixReactorBase
from twisted.protocols import basic
from twisted.python import context, log
from twisted.python.systemd import ListenFDs
from twisted.web import http
from zope.interface import implementer

__all__ = [
    "SD_LISTEN_FDS_START",
    "AddressSharingMulticastPort",
    "LeanServer",
    "LogContextCachingEPollReactor",
    "RefusalTolerantPort",
    "WatchedHTTPChannel",
    "adoptDatagramPortAs",
    "backloggedTransports",
    "boundWebSocketMessages",
    "twistdLogObserver",
    "capAccepts",
    "directTransport",
    "endpointPort",
    "inheritedListenFDs",
    "leanTransports",
    "limitWriteBuffer",
    "listenMulticastSharing",
    "sendIfIdle",
    "unsentBytes",
    "writeNow",
]

_T = TypeVar("_T")

#: An epoll event that is a read and nothing else (no hang-up, no error, no
#: write), which the netdemo reactor handles without C{_doReadOrWrite}.
_READABLE = select.EPOLLIN

#: The first descriptor systemd passes (C{SD_LISTEN_FDS_START}, sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


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


def backloggedTransports(writers: Iterable[Any]) -> Iterator[tuple[Any, int]]:
    """
    C{(protocol, unsent bytes)} of each socket transport among C{writers}
    (the reactor's C{getWriters()}) that holds unsent bytes.

    A socket transport with unsent bytes is always one of the reactor's
    writers: C{write} starts writing, and C{doWrite} stops only once the
    buffer is empty.  So the transports with unsent bytes are found without
    looking at every connection.
    """
    for writer in writers:
        if isinstance(writer, abstract.FileDescriptor):
            unsent = len(writer.dataBuffer) - writer.offset + writer._tempDataLen
            if unsent:
                yield getattr(writer, "protocol", None), unsent


def limitWriteBuffer(transport: Any, size: int | None) -> None:
    """
    Make a socket transport pause its streaming producer once more than
    C{size} bytes are unsent, and read at most C{size} bytes at a time
    (C{FileDescriptor.bufferSize} is both; Twisted's default, which
    C{size=None} restores, is 64 KiB).  Other transports are left alone.
    """
    if isinstance(transport, abstract.FileDescriptor):
        if size is None:
            transport.__dict__.pop("bufferSize", None)
        else:
            transport.bufferSize = size


class _Derived(Generic[_T]):
    """
    A class attribute that C{compute(instance)} gives for an instance that
    has no value of its own: a non-data descriptor, so that a value stored
    on the instance (by Twisted, or by C{compute} itself) is found first,
    by the interpreter's ordinary attribute lookup, with no Python call.
    """

    __slots__ = ("_compute",)

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self._compute = compute

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _Derived[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(
        self, instance: object | None, owner: type | None = None
    ) -> _T | _Derived[_T]:
        if instance is None:
            return self
        return self._compute(instance)


def _firstWriteList(transport: Any) -> list[bytes]:
    """
    A L{LeanServer}'s C{_tempDataBuffer} at its first use: made now and
    stored on the connection, where later lookups find it.
    """
    pending: list[bytes] = []
    transport._tempDataBuffer = pending
    return pending


def _sessionNumber(transport: Any) -> int:
    """
    A L{LeanServer}'s C{sessionno}, read back from its C{logstr}
    (C{"<protocol's prefix>,<sessionno>,<host>"}; the host, an IPv6
    address too, holds no comma).
    """
    return int(transport.logstr.rsplit(",", 2)[1])


def _ipv4Client(transport: Any) -> tuple[Any, int]:
    """
    An IPv4 L{LeanServer}'s C{client}: its host and port (an IPv6 one keeps
    its own four-item C{client}, which is found first).
    """
    return (transport.hostname, transport._peerPort)


def _represent(transport: Any) -> str:
    """
    A L{LeanServer}'s C{repstr}, as C{tcp.Server} formats it.
    """
    server = transport.server
    port = server._realPortNumber if server is not None else None
    return f"<{transport.protocol.__class__.__name__} #{transport.sessionno} on {port}>"


class LeanServer(tcp.Server):
    """
    Twisted's TCP server connection, keeping five objects fewer for as
    long as the connection is open (about 280 bytes of an idle connection):

      - C{repstr}, the C{repr} that C{tcp.Server} formats for every
        connection when it is accepted, is built when asked instead;
      - C{_tempDataBuffer}, the list of the writes not yet joined into the
        write buffer (C{FileDescriptor}), is made by the first write that
        uses it: a connection whose replies all went straight to the kernel
        (L{writeNow}) never has one;
      - C{sessionno}, the connection's number on its port (an integer
        object of its own above 256), is read back from C{logstr}, which
        holds it, when asked;
      - the peer's host string from C{accept} is replaced by the one string
        of that host already kept for another connection (at most
        L{sharedHosts} strings are kept, all of them dropped at once when
        that many are), in C{client} and C{hostname} alike;
      - C{client}, the peer's C{(host, port)} (IPv4), is built from
        C{hostname} and the port when asked (by C{getPeer}) rather than
        kept as a tuple; an IPv6 peer's four-item C{client} is kept.

    Each of those four is a class attribute computed from the connection
    when it has no value of its own (L{_Derived}): looking up any other
    attribute costs what it costs on C{tcp.Server} (a C{__getattr__}
    fallback would put a Python-level hook on every attribute lookup of the
    connection, the reactor's included).

    Everything else is C{tcp.Server}'s; L{leanTransports} makes a listening
    port build these.
    """

    #: Distinct host strings kept for sharing, at most.
    sharedHosts = 4096

    #: Host -> the one string of it that connections share.
    _hosts: dict[Any, Any] = {}

    _tempDataBuffer = _Derived(_firstWriteList)
    sessionno = _Derived(_sessionNumber)
    client = _Derived(_ipv4Client)
    repstr = _Derived(_represent)

    def __init__(
        self,
        sock: socket.socket,
        protocol: Any,
        client: tuple[Any, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: Any,
    ) -> None:
        hosts = LeanServer._hosts
        host = client[0]
        shared = hosts.get(host)
        if shared is None:
            if len(hosts) >= self.sharedHosts:
                hosts.clear()
            hosts[host] = shared = host
        super().__init__(
            sock, protocol, (shared, *client[1:]), server, sessionno, reactor
        )
        # Deleted from the instance's inline attribute values: no dict is
        # made for them.
        del self.repstr
        del self._tempDataBuffer
        del self.sessionno
        if len(client) == 2:
            self._peerPort = client[1]
            del self.client

    def doRead(self) -> Any:
        """
        C{tcp.Connection.doRead} and its C{_dataReceived} in one: read at
        most C{bufferSize} bytes and hand them to the protocol, one Python
        call fewer per read.

        @return: L{None}; C{CONNECTION_DONE} when the peer closed (an empty
            read); C{CONNECTION_LOST} when the read failed.
        """
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as se:
            if se.args[0] == errno.EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None


def leanTransports(port: object) -> bool:
    """
    Make a listening TCP port (a plain C{tcp.Port} building C{tcp.Server}
    connections: TCP, and TLS over TCP) build L{LeanServer} connections
    instead.  Other ports are left alone.

    @return: Whether the port was changed.
    """
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = LeanServer
        return True
    return False


#: The transports whose socket the direct-send path may use: plain TCP,
#: exactly (TLS and other wrappers keep their own buffers).
_DIRECT_TYPES = (tcp.Server, tcp.Client, LeanServer)


def directTransport(transport: Any) -> tcp.Connection | None:
    """
    C{transport} if L{writeNow} may hand data to its socket directly (plain
    TCP), otherwise L{None}.
    """
    if type(transport) in _DIRECT_TYPES:
        return transport  # type: ignore[no-any-return]
    return None


def writeNow(transport: tcp.Connection, data: bytes, queuedBuffer: int = 0) -> None:
    """
    Write C{data} to a plain TCP transport (see L{directTransport}): when
    nothing is queued, hand it to the kernel now; whatever the kernel does
    not take goes through C{transport.write}, which keeps order and flow
    control.

    @param queuedBuffer: If not 0, the C{bufferSize} (L{limitWriteBuffer})
        the transport gets, before the write, once anything is queued: the
        kernel's buffer is full, so its producer pauses above that and reads
        that much at most.

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
    if queuedBuffer:
        transport.bufferSize = queuedBuffer
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


class AddressSharingMulticastPort(udp.MulticastPort):
    """
    A multicast port that shares its address and port with other sockets
    through C{SO_REUSEADDR} only.

    Twisted's C{listenMultiple=True} also sets C{SO_REUSEPORT}, which puts
    every such socket of one user on the port in one group, and Linux hands
    each I{unicast} datagram to one socket of the group, chosen by a hash of
    its addresses and ports.  The classic multicast peer (the tutorial's
    C{listenMulticast(8001, ..., listenMultiple=True)} on the same host)
    would then get the responder's unicast answers, sent to its
    C{127.0.0.1:8001} from the responder's own port, only by the luck of
    the hash: most often they came back to the responder itself.  With
    C{SO_REUSEADDR} alone the responder is no member of that group, and
    Linux gives a unicast datagram to the socket that bound the port last,
    so a program that joins the port after the daemon gets the answers
    meant for it.  Multicast still reaches every socket.
    """

    def createInternetSocket(self) -> socket.socket:
        skt = udp.Port.createInternetSocket(self)
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return skt


def listenMulticastSharing(
    reactor: Any, port: int, protocol: Any, interface: str, maxPacketSize: int
) -> Any:
    """
    Listen for multicast on C{port} with an L{AddressSharingMulticastPort}.
    A reactor that is not a socket reactor (a test's fake) is asked for
    C{listenMulticast(..., listenMultiple=True)} instead.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenMulticast(
            port, protocol, interface, maxPacketSize, listenMultiple=True
        )
    listening = AddressSharingMulticastPort(
        port, protocol, interface, maxPacketSize, reactor, listenMultiple=True
    )
    listening.startListening()
    return listening


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


class LogContextCachingEPollReactor(EPollReactor):
    """
    The epoll reactor, dispatching each I/O event without rebuilding the
    log context of its selectable every time (twisted/twisted#2534).

    C{EPollReactor.doPoll} wraps every C{doRead}/C{doWrite} in
    C{log.callWithLogger}: per event, it calls the selectable's
    C{logPrefix()}, copies the current log context dictionary, updates it,
    and pushes it on the context stack through two more calls.  For a TCP
    echo that is about 40% of the time spent per round trip.  This reactor
    builds the context of a selectable when its descriptor has an event and
    pushes that same dictionary for its later events: the per-event cost is
    a dictionary lookup and a push and a pop.

    The contexts kept are bounded: those of the L{contextCacheSize}
    selectables that had an event most recently, and of at most as many
    before them (two generations: when the newer one is full it becomes the
    older one, and an entry found in the older one moves to the newer one).
    A context costs about 500 bytes; an idle connection's is dropped
    when its generation is, so ten thousand idle connections do not keep
    ten thousand contexts, and a connection that wakes up gets its context
    built again.

    An event that is a read and nothing else (C{EPOLLIN} alone: by far the
    most common) is handled in the loop itself, as C{_doReadOrWrite} would
    handle it (the descriptor checked, C{doRead}, an exception logged and
    the selectable disconnected, a returned reason disconnecting it); every
    other event goes to C{_doReadOrWrite}.

    The behaviour is the epoll reactor's: every error is still logged with
    the selectable's prefix (C{system}), a failing C{logPrefix} is reported
    as Twisted reports it, and when the reactor does not run at the bottom of
    the context stack (a caller pushed a context around C{reactor.run}) the
    cached dictionary would not be what C{callWithLogger} builds, so the
    original path runs instead.  A pushed dictionary is never changed after
    it is built: code that keeps the current context (a thread pool does, for
    the work it runs later) keeps that connection's.

    A selectable's prefix is read when its context is built: Twisted's own
    selectables (connections, ports) set their prefix when they are made.
    The cache entry goes when the descriptor stops being watched.
    """

    #: Selectables whose log context the newer generation keeps.
    contextCacheSize = 256

    def __init__(self) -> None:
        super().__init__()
        #: Descriptor -> (the selectable, the log context pushed for it):
        #: the newer generation, then the older one.
        self._logContexts: dict[int, tuple[Any, dict[Any, Any]]] = {}
        self._olderLogContexts: dict[int, tuple[Any, dict[Any, Any]]] = {}

    def _logContextFor(self, fd: int, selectable: Any) -> dict[Any, Any]:
        """
        The context to push while C{selectable} handles an event, when the
        newer generation has none for it: the older generation's, or the
        base log context with C{system} set to its prefix, built now.  It is
        kept in the newer generation, which becomes the older one when
        full.
        """
        older = self._olderLogContexts.pop(fd, None)
        if older is not None and older[0] is selectable:
            entry = older
        else:
            try:
                prefix = selectable.logPrefix()
            except KeyboardInterrupt:
                raise
            except BaseException:
                prefix = "(buggy logPrefix method)"
                log.err(system=prefix)
            base = context.get(log.ILogContext) or {}
            entry = (selectable, {log.ILogContext: {**base, "system": prefix}})
        if len(self._logContexts) >= self.contextCacheSize:
            self._olderLogContexts = self._logContexts
            self._logContexts = {}
        self._logContexts[fd] = entry
        return entry[1]

    def _forget(self, selectable: Any) -> None:
        """
        Drop the cached context of a selectable that is no longer watched.
        """
        try:
            fd = selectable.fileno()
        except BaseException:
            fd = -1
        if fd != -1 and fd not in self._reads and fd not in self._writes:
            self._logContexts.pop(fd, None)
            self._olderLogContexts.pop(fd, None)

    def refreshLogContext(self, selectable: Any) -> None:
        """
        Build C{selectable}'s context again at its next event: its log
        prefix changed (L{handOver} gave it another protocol and peer).
        """
        fd = selectable.fileno()
        self._logContexts.pop(fd, None)
        self._olderLogContexts.pop(fd, None)

    def removeReader(self, reader: Any) -> None:
        super().removeReader(reader)
        self._forget(reader)

    def removeWriter(self, writer: Any) -> None:
        super().removeWriter(writer)
        self._forget(writer)

    def removeAll(self) -> list[Any]:
        self._logContexts.clear()
        self._olderLogContexts.clear()
        removed: list[Any] = super().removeAll()
        return removed

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for events and dispatch each with its cached log context.
        """
        stack = context.theContextTracker.currentContext().contexts
        if len(stack) != 1:
            # Not at the bottom of the context stack: the base context is
            # not the default one, so build each context as Twisted does.
            super().doPoll(timeout)
            return
        try:
            events = self._poller.poll(
                -1 if timeout is None else timeout, len(self._selectables)
            )
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        push = stack.append
        pop = stack.pop
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            cached = self._logContexts.get(fd)
            if cached is not None and cached[0] is selectable:
                pushed = cached[1]
            else:
                pushed = self._logContextFor(fd, selectable)
            push(pushed)
            try:
                if event == _READABLE:
                    # The common event, readable and nothing else: what
                    # _doReadOrWrite does for it, without the call.
                    why: Any = None
                    inRead = False
                    try:
                        if selectable.fileno() == -1:
                            why = _NO_FILEDESC
                        else:
                            why = selectable.doRead()
                            inRead = True
                    except BaseException as e:
                        # As Twisted: logged (with the pushed context's
                        # prefix), then the selectable is disconnected.
                        why = e
                        log.err()
                    if why:
                        self._disconnectSelectable(selectable, why, inRead)
                else:
                    dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(system=pushed[log.ILogContext]["system"])
            finally:
                pop()

    # EPollReactor binds doIteration = doPoll in its own class body, so the
    # loop (mainLoop, iterate) would go on calling Twisted's doPoll without
    # this: the override must be bound to the name the loop calls.
    doIteration = doPoll


#: L{WatchedHTTPChannel._nextTurn} while its watcher holds its resumption.
_QUEUED = object()


class WatchedHTTPChannel(http.HTTPChannel):
    """
    An HTTP/1.1 channel that tells its C{watcher} when the head of each
    request is complete and when each request is done, and lets it refuse a
    request that declares a body before Twisted prepares or reads the body.

    Twisted's channel calls C{allHeadersReceived} once per request, after
    its last header line and before C{Request.gotLength} (which creates the
    body's file: a temporary file on disk above 100 kB) and before any body
    byte is read; and C{requestDone} when a response is finished, before it
    parses the next (pipelined) request.

    The watcher provides:

      - C{headReceived()}: a request's head is complete;
      - C{bodyDeclared(method, length)}: that request declares a body
        (C{length} in bytes, or L{None} for chunked).  Returning bytes
        refuses it: they are written as the whole response and the
        connection is closed; the body is never read (the closing transport
        is C{disconnecting}, at which Twisted's line parser stops);
      - C{requestFinished(request)}: a response is finished.

      - C{mayGoOn(resume)}: a response is finished; L{True} lets the
        channel go on reading, L{False} means the watcher has queued
        C{resume} to be called in a later turn and the channel stops
        parsing and reading until then (a budget shared by many
        connections: see L{netdemo.web.TurnBudget}).

    Pipelined requests that arrive together are answered in the same
    reactor turn, a thousand from one 64 KiB read; after
    C{requestsPerTurn} of them (counted from the last L{newRead}) the
    channel stops parsing and reading until the next turn, so one client
    cannot hold the reactor for long.
    """

    watcher: Any = None
    #: Requests answered per read, or per turn after a pause.
    requestsPerTurn = 16
    _answered = 0
    _nextTurn: Any = None
    _gone = False

    def newRead(self) -> None:
        """
        Bytes arrive from the transport: a new turn for the count.
        """
        self._answered = 0

    def allHeadersReceived(self) -> None:
        """
        Tell the watcher; refuse the request if it says so.
        """
        watcher = self.watcher
        if watcher is not None:
            watcher.headReceived()
            length = self.length
            if length != 0:
                refusal = watcher.bodyDeclared(self._command, length)
                if refusal is not None:
                    self.transport.write(refusal)  # type: ignore[union-attr]
                    self.loseConnection()
                    return
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        """
        Tell the watcher, then let Twisted go on to the next request; after
        C{requestsPerTurn} of them, pause until the next turn.
        """
        watcher = self.watcher
        if watcher is not None:
            watcher.requestFinished(request)
        super().requestDone(request)
        self._answered += 1
        if self._nextTurn is not None or not self.persistent:
            return
        if self._answered >= self.requestsPerTurn:
            # The parse loop stops after this request; no more is read.
            basic.LineReceiver.pauseProducing(self)
            self._nextTurn = self.callLater(0, self._resume)
        elif watcher is not None and not watcher.mayGoOn(self._resume):
            basic.LineReceiver.pauseProducing(self)
            self._nextTurn = _QUEUED

    def _resume(self) -> None:
        """
        The next turn: read again (unless the client is not reading its
        responses) and answer what is waiting.
        """
        if self._gone:
            return
        self._nextTurn = None
        self._answered = 0
        self.paused = False
        if not self._waitingForTransport:
            self.transport.resumeProducing()  # type: ignore[union-attr]
        self.dataReceived(b"")

    def connectionLost(self, reason: Any = None) -> None:
        """
        Forget the next turn.
        """
        self._gone = True
        nextTurn = self._nextTurn
        if nextTurn is not None and nextTurn is not _QUEUED and nextTurn.active():
            nextTurn.cancel()
        self._nextTurn = None
        super().connectionLost(reason)


def proxyHeaderParser(head: bytes) -> Any:
    """
    The parser of Twisted's PROXY protocol support
    (C{twisted.protocols.haproxy}, whose parsers are private) for a
    connection whose first bytes are C{head}: version 1 (C{PROXY ...}) or
    version 2 (its 12-byte signature and version 2 in the 13th byte).

    @return: A parser with C{feed(data) -> (info, rest)}, or L{None} while
        C{head} is too short to tell.
    @raise ValueError: C{head} is not the start of a PROXY header.
    """
    from twisted.protocols.haproxy._info import ProxyInfo
    from twisted.protocols.haproxy._v1parser import V1Parser
    from twisted.protocols.haproxy._v2parser import V2Parser

    class Version1Parser(V1Parser):
        """
        Twisted's, accepting the bare C{PROXY UNKNOWN} line that the
        specification allows (Twisted's wants more words after it).
        """

        @classmethod
        def parse(cls, line: bytes) -> ProxyInfo:
            if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
                return ProxyInfo(line, None, None)
            return super().parse(line)

    if head.startswith(V1Parser.PROXYSTR):
        return Version1Parser()
    if len(head) >= 13 and head.startswith(V2Parser.PREFIX):
        if head[12] & 0xF0 != 0x20:
            raise ValueError("not a PROXY version 2 header")
        return V2Parser() if len(head) >= 16 else None
    if V1Parser.PROXYSTR.startswith(head) or V2Parser.PREFIX.startswith(head[:12]):
        return None
    raise ValueError("not a PROXY header")


def handOver(transport: Any, protocol: Any, peer: Any) -> None:
    """
    Give a TCP connection to C{protocol}, as if it had been built for it
    from the start with C{peer} as the connection's peer: the reactor
    delivers every later read to C{protocol} directly, and
    C{transport.getPeer()} and the connection's log prefix give C{peer}.

    A L{tcp.Server} keeps its peer as C{client} (a tuple) and its address
    class as C{_addressType}, from which C{getPeer} builds the address, and
    its log prefix in C{logstr}; a reactor caching log contexts (ours,
    C{refreshLogContext}) is told to build the connection's again.
    C{protocol.makeConnection} is called last.
    """
    if isinstance(transport, tcp.Server):
        transport.client = (peer.host, peer.port)
        transport.hostname = peer.host
        transport._addressType = type(peer)
        transport.logstr = (
            f"{protocol.__class__.__name__},{transport.sessionno},{peer.host}"
        )
        refresh = getattr(transport.reactor, "refreshLogContext", None)
        if refresh is not None:
            refresh(transport)
    transport.protocol = protocol
    protocol.makeConnection(transport)


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


def twistdLogObserver(config: Any) -> Any:
    """
    The log observer C{twistd} would build for its parsed options C{config}
    (text to standard output with C{-n}, else to C{twistd.log} or
    C{--logfile}, or syslog with C{--syslog}): its C{AppLogger} decides, so
    that every one of twistd's logging options keeps its meaning.
    """
    from twisted.scripts.twistd import (  # type: ignore[attr-defined]
        _SomeApplicationRunner,
    )

    return _SomeApplicationRunner.loggerFactory(config)._getLogObserver()


class _BoundedMessage:
    """
    A message being reassembled by Twisted's WebSocket wire protocol (its
    private C{Buffer}: C{add} each fragment, C{done} when it is complete),
    at most C{limit} characters or bytes: past it, C{tooBig} is called once
    and the rest of the message is dropped.
    """

    __slots__ = ("data", "limit", "over", "tooBig")

    def __init__(self, empty: Any, limit: int, tooBig: Any) -> None:
        self.data = empty
        self.limit = limit
        self.tooBig = tooBig
        self.over = False

    def add(self, new: Any) -> None:
        if self.over:
            return
        if len(self.data) + len(new) > self.limit:
            self.over = True
            self.data = self.data[0:0]
            self.tooBig()
            return
        self.data += new

    def done(self) -> Any:
        result = self.data
        self.data = result[0:0]
        self.over = False
        return result


def boundWebSocketMessages(wire: Any, limit: int, tooBig: Any) -> None:
    """
    Bound the messages C{wire} (the C{WebSocketTransport} that
    C{twisted.web.websocket} hands to a protocol's C{negotiationStarted})
    reassembles to C{limit} characters (text) or bytes (binary): the
    fragments of a longer message are dropped as they come and C{tooBig()}
    is called once per such message, which should close the connection (a
    message that went over the limit is still delivered, empty, if the peer
    completes it before the close).
    """
    wire._textBuffer = _BoundedMessage("", limit, tooBig)
    wire._bytesBuffer = _BoundedMessage(b"", limit, tooBig)
