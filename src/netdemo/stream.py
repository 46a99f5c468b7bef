# -*- test-case-name: tests.test_echo -*-
"""
The plumbing of every stream service: its listeners, its factory and the
limits they enforce on every connection.

L{LimitedFactory} enforces a L{ConnectionLimits} for every connection of one
service, whatever listener it arrived on:

  - a global cap (C{maxConnections}) and a per-peer-address cap
    (C{maxPerPeer}; Twisted's own C{LimitConnectionsByPeer} is broken in
    26.10, twisted/twisted#12183): a refused connection is closed at once,
    before a protocol is built, and counted;
  - an idle timeout enforced by one sweep timer for all connections, not one
    C{DelayedCall} per connection: a read marks the connection busy with a
    single attribute store, which keeps the per-read cost and the per-
    connection memory down;
  - a reserve of file descriptors (L{DescriptorReserve}), shared by every
    stream listener of the process: a connection accepted while fewer than
    C{descriptorReserve} descriptors are free is closed at once and counted
    (C{fd-reserve}), so that the process never runs out of descriptors and
    Twisted's own last resort (accept and drop every waiting connection,
    logging each) never runs;
  - a drain on shutdown: close every connection gracefully, then abort what
    is still open after the deadline;
  - one structured log event per finished connection;
  - byte totals for the metrics that cost one C-level pass over the open
    connections plus one look at the transports with unsent bytes, not a
    Python call per connection.

L{ListeningService} runs one listener per endpoint description for one
factory (the stream services and HTTP); L{StreamService} adds the drain.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from collections.abc import Callable, Iterable
from contextlib import suppress
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from netdemo.internals import backloggedTransports, leanTransports, unsentBytes
from netdemo.limits import ConnectionLimits
from netdemo.listening import IListener, ListenerReport, exitOnBindFailure
from netdemo.logs import RateLimitedLog, formatAddress
from netdemo.metrics import IMetrics, sampleOf
from netdemo.proxyheader import proxiedListener, splitProxied
from netdemo.signals import chainSignal
from netdemo.tls import (
    ReloadingServerTLS,
    describeTLS,
    isTLSDescription,
    parseTLSDescription,
)

if TYPE_CHECKING:
    from netdemo.metrics import Sample

__all__ = [
    "IDLE_SWEEPS",
    "DescriptorReserve",
    "LimitedConnection",
    "LimitedFactory",
    "LimitedProtocol",
    "ListeningService",
    "SlottedLimitedProtocol",
    "StreamService",
    "unsentBytes",
]

#: How many sweeps make up one idle timeout: a connection is closed after
#: between C{idleTimeout} and C{idleTimeout * (1 + 1/IDLE_SWEEPS)} seconds
#: without reading anything.
IDLE_SWEEPS = 10

#: Connections one reactor turn of an idle sweep visits; a sweep of more
#: goes on in the following turns.
SWEEP_CHUNK = 1000

_bytesIn = attrgetter("bytesIn")

#: A descriptor this process holds open (on C{/dev/null}) for
#: L{lowestFreeDescriptor} to duplicate.
_held: list[int] = []


def lowestFreeDescriptor() -> int:
    """
    The lowest descriptor number that is free now: the number the next
    socket or file would get (Linux always gives the lowest free one).  One
    C{dup} and one C{close}, about a microsecond.

    @return: The number, or C{sys.maxsize} if none is free.
    """
    try:
        if not _held:
            _held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        fd = os.dup(_held[0])
    except OSError:
        return sys.maxsize
    os.close(fd)
    return fd


def descriptorLimit() -> int:
    """
    The process's soft C{RLIMIT_NOFILE}.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


class DescriptorReserve:
    """
    Keep C{reserve} file descriptors of the process free.

    Asked right after an accept, the lowest free descriptor number says
    whether the process is near its limit: Linux gives every new
    descriptor the lowest free number, so when that number is within
    C{reserve} of the soft C{RLIMIT_NOFILE}, every descriptor below it is
    in use.  Such a connection is refused (closed at once), so a connection
    that is kept never holds one of the top C{reserve} numbers: they stay
    free for what is not a connection (a log file, the backplane's Redis,
    C{/proc} reads of a scrape), and the listeners never reach C{EMFILE}.

    @ivar reserve: Descriptors kept free; 0 turns the check off.
    """

    def __init__(
        self,
        reserve: int,
        limit: Callable[[], int] = descriptorLimit,
        lowestFree: Callable[[], int] = lowestFreeDescriptor,
    ) -> None:
        self.reserve = reserve
        self._readLimit = limit
        self._lowestFree = lowestFree
        self._limit = limit() if reserve else sys.maxsize

    def exhausted(self) -> bool:
        """
        Whether fewer than C{reserve} descriptors are free now.
        """
        if not self.reserve:
            return False
        lowest = self._lowestFree()
        if lowest < self._limit - self.reserve:
            return False
        # Near the limit: read it again, in case it was raised (prlimit).
        self._limit = self._readLimit()
        return lowest >= self._limit - self.reserve


class LimitedConnection:
    """
    What every connection of a L{LimitedFactory} does, whatever keeps its
    state: L{LimitedProtocol} (a Twisted C{Protocol}, with an instance
    dictionary, for protocols that add state of their own freely) and
    L{SlottedLimitedProtocol} (no instance dictionary, for the connections
    that must cost little memory while idle).

    Subclasses must call C{Protocol.dataReceived}-style bookkeeping
    themselves, for speed: store C{self.idleTicks = 0} and add to
    C{self.bytesIn} in C{dataReceived}.

    @ivar bytesIn: Payload bytes received.
    @ivar written: Payload bytes handed to the transport (a subclass that
        writes keeps it, or names another attribute in its factory's
        L{LimitedFactory.writtenAttribute}).
    @ivar idleTicks: Idle sweeps since the last read.
    @ivar closeReason: Why the server closed the connection, if it did.
    """

    if not TYPE_CHECKING:
        # No instance dictionary of its own (mypy takes empty slots to
        # forbid the attributes its subclasses keep).
        __slots__ = ()

    factory: LimitedFactory
    transport: ITransport | None
    connected: int
    peer: IAddress | None
    local: IAddress | None
    bytesIn: int
    written: int
    idleTicks: int
    sentAtSweep: int
    startedAt: float
    closeReason: str | None
    #: Bytes still queued in the transport when the connection closed.
    _unsentAtClose: int

    @property
    def bytesOut(self) -> int:
        """
        Payload bytes sent (handed to the kernel) so far.
        """
        return 0

    def sentOf(self, written: int) -> int:
        """
        Of C{written} bytes handed to the transport, those the kernel took:
        all but what is still queued, or was queued when the connection
        closed (subclasses store C{_unsentAtClose} in C{connectionLost}).
        """
        if self.transport is None:
            return 0
        if self.connected:
            return written - unsentBytes(self.transport)
        return written - self._unsentAtClose

    def makeConnection(self, transport: Any) -> None:
        # The socket is gone by connectionLost: remember the local address,
        # one shared object per listening address rather than one each.
        local = transport.getHost()
        factory = getattr(self, "factory", None)
        if isinstance(factory, LimitedFactory):
            # An address type that cannot be hashed is kept as it is.
            with suppress(TypeError):
                local = factory.localAddresses.setdefault(local, local)
        self.local = local
        # Give the instance its per-read attributes now, not at the first
        # read: on CPython 3.11 a first store from dataReceived, once many
        # connections are open, turns the compact shared-key attribute
        # storage into a full dict, about 460 bytes more per connection
        # (measured with tracemalloc; docs/benchmarks.md).
        self.idleTicks = 0
        self.bytesIn = 0
        self.sentAtSweep = 0
        super().makeConnection(transport)  # type: ignore[misc]

    def closeGracefully(self, reason: str) -> None:
        """
        Close the connection after what is buffered has been sent.
        """
        if self.closeReason is None:
            self.closeReason = reason
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abort(self, reason: str) -> None:
        """
        Close the connection now, dropping anything unsent.
        """
        if self.closeReason is None:
            self.closeReason = reason
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.connectionClosed(self, reason)


class LimitedProtocol(LimitedConnection, Protocol):
    """
    A L{LimitedConnection} that is a Twisted C{Protocol}: its state has
    class-level defaults and it may keep any attribute of its own.
    """

    factory: LimitedFactory
    transport: ITransport | None = None
    peer: IAddress | None = None
    local: IAddress | None = None
    bytesIn = 0
    written = 0
    idleTicks = 0
    sentAtSweep = 0
    startedAt = 0.0
    closeReason: str | None = None
    _unsentAtClose = 0


@implementer(IProtocol, ILoggingContext)
class _ProtocolInSlots:
    """
    Twisted's C{Protocol} without an instance dictionary: its three
    attributes in slots, its methods.
    """

    __slots__ = ("factory", "transport", "connected")

    transport: ITransport | None

    def __init__(self) -> None:
        self.transport = None
        self.connected = 0

    def logPrefix(self) -> str:
        """
        The class's name, as C{Protocol.logPrefix}.
        """
        return self.__class__.__name__

    def makeConnection(self, transport: Any) -> None:
        """
        As C{BaseProtocol.makeConnection}: keep the transport, then
        C{connectionMade}.
        """
        self.connected = 1
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        """
        Nothing, as C{Protocol.connectionMade}.
        """

    def dataReceived(self, data: bytes) -> None:
        """
        Nothing, as C{Protocol.dataReceived}.
        """

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Nothing, as C{Protocol.connectionLost}.
        """


class SlottedLimitedProtocol(LimitedConnection, _ProtocolInSlots):
    """
    A L{LimitedConnection} without an instance dictionary: Twisted's
    C{Protocol} behaviour (it is not a subclass of it) and its state in
    slots that C{__init__} sets; about 50 bytes less per idle connection
    than L{LimitedProtocol}.  A subclass declares C{__slots__} for its own
    attributes and sets them in C{__init__}, or it gets an instance
    dictionary again.
    """

    __slots__ = (
        "peer",
        "local",
        "bytesIn",
        "written",
        "idleTicks",
        "sentAtSweep",
        "startedAt",
        "closeReason",
        "_unsentAtClose",
    )

    def __init__(self) -> None:
        super().__init__()
        self.peer = None
        self.local = None
        self.bytesIn = 0
        self.written = 0
        self.idleTicks = 0
        self.sentAtSweep = 0
        self.startedAt = 0.0
        self.closeReason = None
        self._unsentAtClose = 0


class LimitedFactory(Factory):
    """
    A factory that enforces L{ConnectionLimits} for one service.

    @ivar serviceName: The service's name in logs and metrics.
    @ivar connections: The protocols of the open connections.
    @ivar descriptors: The process's descriptor reserve, checked for every
        connection.
    """

    #: No C{Starting ...}/C{Stopping ...} lines: netdemo logs its own.
    noisy = False

    protocol: type[LimitedConnection]  # type: ignore[assignment]
    _log = Logger()

    #: The protocol attribute counting the bytes handed to the transport
    #: (L{LimitedProtocol.written}); summed for C{netdemo_sent_bytes_total}.
    writtenAttribute = "written"

    #: Whether every finished connection is logged (C{connection_closed}).
    logClosed = True

    def __init__(
        self,
        serviceName: str,
        limits: ConnectionLimits,
        metrics: IMetrics,
        clock: IReactorTime,
    ) -> None:
        self.serviceName = serviceName
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        # A dictionary (keys only) rather than a set: about 25 bytes less
        # per connection at ten thousand.
        self.connections: dict[LimitedConnection, None] = {}
        self.perPeer: dict[str, int] = {}
        #: The local addresses of the connections, each kept once.
        self.localAddresses: dict[IAddress, IAddress] = {}
        self.closedBytesIn = 0
        self.closedBytesOut = 0
        self._drained: list[Deferred[None]] = []
        self._refusalLog = RateLimitedLog(self._log, clock.seconds)
        self._sweeper: LoopingCall | None = None
        #: The connections the sweep in progress has still to visit, and
        #: the call that goes on with it in the next turn.
        self._toSweep: list[LimitedConnection] = []
        self._sweepNext: Any = None
        self._written = attrgetter(self.writtenAttribute)
        self.descriptors = DescriptorReserve(limits.descriptorReserve)
        metrics.addCollector(self._collect)

    def unsentNow(self) -> int:
        """
        Bytes written to the open connections' transports and not yet
        handed to the kernel.

        Only transports with unsent bytes are looked at (the reactor's
        writers), not every connection; a clock that is not a reactor (a
        test's) has every connection looked at.
        """
        connections = self.connections
        writers = getattr(self.clock, "getWriters", None)
        if writers is None:
            return sum(unsentBytes(p.transport) for p in connections)
        return sum(
            unsent
            for protocol, unsent in backloggedTransports(writers())
            if protocol in connections
        )

    def _collect(self) -> list[Sample]:
        """
        The byte totals and the open connection count, computed now: the
        sums over the open connections run in C (C{map} of an
        C{attrgetter}); sent is what was written less what is still queued.
        """
        connections = self.connections
        read = sum(map(_bytesIn, connections))
        if self.writtenAttribute == "bytesIn":
            written = read
        else:
            written = sum(map(self._written, connections))
        bytesIn = self.closedBytesIn + read
        bytesOut = self.closedBytesOut + written - self.unsentNow()
        service = self.serviceName
        return [
            sampleOf("netdemo_received_bytes_total", bytesIn, service=service),
            sampleOf("netdemo_sent_bytes_total", bytesOut, service=service),
            sampleOf(
                "netdemo_connections_current", len(self.connections), service=service
            ),
        ]

    def startFactory(self) -> None:
        if self.limits.idleTimeout and self._sweeper is None:
            self._sweeper = LoopingCall(self.sweepIdle)
            self._sweeper.clock = self.clock
            self._sweeper.start(self.limits.idleTimeout / IDLE_SWEEPS, now=False)

    def stopFactory(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        if self._sweepNext is not None and self._sweepNext.active():
            self._sweepNext.cancel()
        self._sweepNext = None
        self._toSweep = []

    def sweepIdle(self) -> None:
        """
        Age every connection by one sweep and close those that have neither
        received nor sent anything for more than L{IDLE_SWEEPS} sweeps.

        Reads reset C{idleTicks} on the hot path; progress in sending is
        noticed here, once per sweep, so that a subscriber that only listens
        is not idle while it is being sent data.

        One reactor turn visits at most L{SWEEP_CHUNK} connections (the
        sweep starts with a copy of the connections, a C-speed copy of a
        list); the rest are visited in the following turns, so a sweep of
        100,000 connections is a hundred short turns, not one long one.  A
        sweep that comes while the previous one is still going on is
        skipped.
        """
        if self._toSweep:
            return
        self._toSweep = list(self.connections)
        self._sweepSome()

    def _sweepSome(self) -> None:
        """
        Visit the next L{SWEEP_CHUNK} connections of the sweep in progress;
        go on in the next turn if any are left.
        """
        self._sweepNext = None
        pending = self._toSweep
        chunk = pending[-SWEEP_CHUNK:]
        del pending[-SWEEP_CHUNK:]
        connections = self.connections
        for p in chunk:
            if p not in connections:
                continue
            sent = p.bytesOut
            if sent != p.sentAtSweep:
                p.sentAtSweep = sent
                p.idleTicks = 0
            p.idleTicks += 1
            if p.idleTicks > IDLE_SWEEPS:
                # Counted with the refusals; logged as the connection's
                # close (its reason, age and bytes), not as a refusal.
                self.metrics.inc(
                    "netdemo_refused_total",
                    service=self.serviceName,
                    reason="idle-timeout",
                )
                p.abort("idle-timeout")
        if pending:
            self._sweepNext = self.clock.callLater(0, self._sweepSome)

    def refuse(self, reason: str, peer: IAddress | None) -> None:
        """
        Count and (at a bounded rate) log a refusal or a policy disconnect.
        """
        self.metrics.inc(
            "netdemo_refused_total", service=self.serviceName, reason=reason
        )
        self._refusalLog.emit(
            reason,
            LogLevel.warn,
            "{service}: refused {peer} ({reason})",
            event="refused",
            service=self.serviceName,
            peer=formatAddress(peer),
            reason=reason,
        )

    def buildProtocol(self, addr: IAddress) -> LimitedConnection | None:  # type: ignore[override]
        limits = self.limits
        if limits.maxConnections and len(self.connections) >= limits.maxConnections:
            self.refuse("max-connections", addr)
            return None
        host: str | None = getattr(addr, "host", None)
        count = 0
        if host is not None and limits.maxPerPeer:
            count = self.perPeer.get(host, 0)
            if count >= limits.maxPerPeer:
                self.refuse("max-per-peer", addr)
                return None
        if self.descriptors.exhausted():
            self.refuse("fd-reserve", addr)
            return None
        if host is not None and limits.maxPerPeer:
            self.perPeer[host] = count + 1
        p = self.protocol()
        p.factory = self
        p.peer = addr
        p.startedAt = self.clock.seconds()
        self.connections[p] = None
        self.metrics.inc("netdemo_connections_total", service=self.serviceName)
        return p

    def connectionClosed(self, p: LimitedConnection, reason: Failure | None) -> None:
        """
        Forget a finished connection and log one event about it.
        """
        if p not in self.connections:
            return
        del self.connections[p]
        host: str | None = getattr(p.peer, "host", None)
        if host is not None and self.limits.maxPerPeer:
            left = self.perPeer.get(host, 1) - 1
            if left > 0:
                self.perPeer[host] = left
            else:
                self.perPeer.pop(host, None)
        bytesIn, bytesOut = p.bytesIn, p.bytesOut
        self.closedBytesIn += bytesIn
        self.closedBytesOut += bytesOut
        if self.logClosed:
            self._logClosed(p, reason, bytesIn, bytesOut)
        if not self.connections and self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def _logClosed(
        self, p: LimitedConnection, reason: Failure | None, bytesIn: int, bytesOut: int
    ) -> None:
        """
        Log one C{connection_closed} event for C{p}.
        """
        why = p.closeReason or _describeFailure(reason)
        self._log.info(
            "{service}: connection {peer} -> {local} closed ({reason}) after "
            "{duration:.3f} s, {bytesIn} bytes in, {bytesOut} bytes out",
            event="connection_closed",
            service=self.serviceName,
            peer=formatAddress(p.peer),
            local=formatAddress(p.local),
            reason=why,
            duration=self.clock.seconds() - p.startedAt,
            bytesIn=bytesIn,
            bytesOut=bytesOut,
        )

    def drain(self) -> Deferred[None]:
        """
        Close every connection gracefully; abort those still open after
        C{limits.drain} seconds.

        @return: A L{Deferred} that fires when no connection is left.
        """
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for p in list(self.connections):
            p.closeGracefully("shutdown")

        def abortRest() -> None:
            for p in list(self.connections):
                p.closeReason = "shutdown-deadline"
                p.abort("shutdown-deadline")

        timer = self.clock.callLater(self.limits.drain, abortRest)

        def cancelTimer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        d.addCallback(cancelTimer)
        return d


def _describeFailure(reason: Failure | None) -> str:
    """
    A short reason for a connection that the peer ended.
    """
    from twisted.internet.error import ConnectionDone

    if reason is None or reason.check(ConnectionDone):
        return "closed-by-peer"
    return "lost: " + str(reason.value).splitlines()[0][:120]


@implementer(IStreamServerEndpoint)
class _ReportingEndpoint:
    """
    Wrap a server endpoint so that its L{ListeningService} learns the port
    it actually listens on (port 0 becomes a real port), or that it failed.
    """

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        service: ListeningService,
        description: str,
    ) -> None:
        self._wrapped = wrapped
        self._service = service
        self._description = description

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        outcome: Deferred[bool] = Deferred()
        self._service.outcomes.append(outcome)

        def listening(port: IListeningPort) -> IListeningPort:
            self._service.listened(port, self._description)
            outcome.callback(True)
            return port

        def failed(reason: Failure) -> Failure:
            outcome.callback(False)
            return reason

        return self._wrapped.listen(factory).addCallbacks(listening, failed)


@implementer(IListener)
class ListeningService(MultiService):
    """
    A service with one stream listener per endpoint description, all
    serving one factory.

    Each listener is a named child built with L{strports.service}, so a port
    that cannot be bound fails start-up with one line and exit status 1
    (L{exitOnBindFailure}) instead of leaving a daemon that runs without
    listening.  Every bound address is logged and reported by a
    L{ListenerReport}.

    @ivar ports: The listening ports, once bound.
    @ivar report: The C{listening} events and C{netdemo_listener_info}.
    @ivar outcomes: One L{Deferred} per listen attempt, firing with whether
        it worked.
    """

    def __init__(
        self,
        name: str,
        factory: IProtocolFactory,
        descriptions: Iterable[str],
        metrics: IMetrics,
        reactor: Any,
    ) -> None:
        super().__init__()
        self.setName(name)
        self.factory = factory
        self.metrics = metrics
        self.ports: list[IListeningPort] = []
        self.report = ListenerReport(name, metrics)
        self.outcomes: list[Deferred[bool]] = []
        self.reactor = reactor
        #: The TLS listeners' connection makers, by description.
        self.tls: dict[str, ReloadingServerTLS] = {}
        self._unchain: Callable[[], None] | None = None
        for description in descriptions:
            prefix, inner = splitProxied(description)
            proxied = bool(prefix)
            if isTLSDescription(inner):
                listener = self._tlsListener(description, inner, proxied)
            elif proxied:
                listener = proxiedListener(
                    serverFromString(reactor, inner), factory, factory, reactor
                )
            else:
                # strports.service, not a StreamServerEndpointService of our
                # own: it makes a bind failure raise in start-up.
                listener = strports.service(description, factory, reactor=reactor)
            self._addListener(listener, description)

    def _tlsListener(
        self, description: str, inner: str, proxied: bool
    ) -> StreamServerEndpointService:
        """
        The listener of an C{ssl:} description, read by L{netdemo.tls} (its
        C{clientCA} and its reloading are netdemo's own); with C{haproxy:}
        in front (C{proxied}), the PROXY header is read from the plain TCP
        connection before TLS starts.
        """
        listener = parseTLSDescription(inner)
        tls = ReloadingServerTLS(listener, f"{self.name} {description}")
        self.tls[description] = tls
        if proxied:
            return proxiedListener(
                TCP4ServerEndpoint(
                    self.reactor, listener.port, listener.backlog, listener.interface
                ),
                TLSMemoryBIOFactory(tls, False, self.factory),
                self.factory,
                self.reactor,
            )
        service = StreamServerEndpointService(
            listener.endpoint(self.reactor, tls), self.factory
        )
        # What strports.service does: a bind failure raises in start-up.
        service._raiseSynchronously = True
        return service

    def _addListener(
        self, listener: StreamServerEndpointService, description: str
    ) -> None:
        listener.endpoint = _ReportingEndpoint(listener.endpoint, self, description)
        listener.setName(f"{self.name} {description}")
        listener.setServiceParent(self)

    def addEndpoint(self, endpoint: IStreamServerEndpoint, description: str) -> None:
        """
        Also listen on an endpoint built elsewhere.  A failure to listen on
        it is logged and reported by L{whenListening}, not raised.
        """
        self._addListener(
            StreamServerEndpointService(endpoint, self.factory), description
        )

    @property
    def addresses(self) -> list[str]:
        """
        The bound addresses, as logged.
        """
        return self.report.addresses

    def privilegedStartService(self) -> None:
        exitOnBindFailure(super().privilegedStartService)

    def startService(self) -> None:
        exitOnBindFailure(super().startService)
        if self.tls and self._unchain is None:
            self._unchain = chainSignal(signal.SIGHUP, self.reloadTLS, self.reactor)

    def reloadTLS(self) -> None:
        """
        Read the TLS listeners' certificates and keys again (on C{SIGHUP}),
        for new connections.
        """
        for tls in self.tls.values():
            tls.reload()

    def whenListening(self) -> Deferred[bool]:
        waiting = gatherResults(list(self.outcomes))
        return waiting.addCallback(lambda results: all(results))

    def listened(self, port: IListeningPort, description: str) -> None:
        """
        A listener is bound: remember, report and log its address.  A TCP
        listener builds L{LeanServer} connections.
        """
        leanTransports(port)
        self.ports.append(port)
        address = formatAddress(port.getHost())
        tls = self.tls.get(description)
        if tls is None:
            self.report.bound(address, description)
        else:
            self.report.bound(
                f"tls:{address}", description, describeTLS(tls.listener), tls=True
            )

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, report the listeners closed, then L{afterListening}.
        """
        if self._unchain is not None:
            self._unchain()
            self._unchain = None
        stopped: Deferred[Any] = super().stopService()

        def closed(ignored: object) -> Deferred[None] | None:
            self.report.closed()
            self.ports.clear()
            self.outcomes.clear()
            return self.afterListening()

        return stopped.addCallback(closed)

    def afterListening(self) -> Deferred[None] | None:
        """
        Called once every listener is closed on stop; a L{Deferred} it
        returns delays the end of the stop.
        """
        return None


class StreamService(ListeningService):
    """
    One stream service: a L{LimitedFactory} shared by one listener per
    endpoint description.  Stopping the service stops listening first, then
    drains the connections.
    """

    factory: LimitedFactory

    def __init__(
        self,
        name: str,
        factory: LimitedFactory,
        descriptions: Iterable[str],
        reactor: Any,
    ) -> None:
        super().__init__(name, factory, descriptions, factory.metrics, reactor)

    def afterListening(self) -> Deferred[None]:
        """
        Drain the open connections.
        """
        return self.factory.drain()
