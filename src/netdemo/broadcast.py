# -*- test-case-name: tests.test_broadcast -*-
"""
The broadcast relay: C{--broadcast DESC}.

The TCP broadcast system of the first seed tutorial (its C{Spreader}), done
properly, and the model of C{ncat --broker}: every chunk of bytes one client
sends goes to every I{other} client, in order, as it arrives.  No framing,
binary-safe: a chunk is whatever one read brought in (TCP keeps no message
boundaries).  The wire is in C{docs/protocol.md} ("Broadcast relay"):

  - a new client gets one welcome line with its number (1 for the first
    client since start, counting up) and how many are connected, as the
    tutorial's server greets its C{N}th client;
  - a chunk that is exactly C{close} (optionally followed by CR and/or LF)
    closes its sender, as in the tutorial; it is not relayed;
  - notices the relay adds to the stream start with C{* } and end in LF:
    C{* dropped N bytes (slow consumer)}, C{* closing: REASON},
    C{* refused: REASON}, C{* server shutting down}.

Unlike the tutorial's server and C{ncat --broker}, a receiver that does not
keep up never holds the others up nor grows the process: the slow-consumer
policy of the hub applies (L{netdemo.fanout}: C{--max-pending},
C{--write-deadline}, C{--slow-policy}; drop-oldest drops whole chunks and
says how many bytes), and the sender is never paused for a slow receiver.
The connection limits, idle timeout and drain are every stream service's
(L{netdemo.stream}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from netdemo.fanout import FanOutFactory, FanOutProtocol
from netdemo.limits import BroadcastLimits, ConnectionLimits
from netdemo.logs import RateLimitedLog, formatAddress
from netdemo.metrics import IMetrics, sampleOf
from netdemo.stream import StreamService

__all__ = [
    "CLOSE",
    "BroadcastFactory",
    "BroadcastProtocol",
    "buildBroadcastService",
    "welcome",
]

SERVICE_NAME = "broadcast"

#: The chunks that close their sender.
CLOSE = frozenset({b"close", b"close\n", b"close\r\n", b"close\r"})

#: The longest chunk in L{CLOSE}.
_CLOSE_LENGTH = max(map(len, CLOSE))

#: Sent to every client when the relay stops.
SHUTTING_DOWN = b"* server shutting down\n"


def welcome(number: int, connected: int) -> bytes:
    """
    The first line a client gets (with its LF).

    @param number: The client's number: 1 for the first since start.
    @param connected: How many clients are connected, this one included.
    """
    return b"* welcome to netdemo broadcast, you are client #%d (%d connected)\n" % (
        number,
        connected,
    )


def dropped(size: int, chunks: int) -> bytes:
    """
    What a slow receiver is told when it catches up (drop-oldest).
    """
    return b"* dropped %d bytes in %d chunks (slow consumer)\n" % (size, chunks)


class BroadcastProtocol(FanOutProtocol):
    """
    One client of the relay: what it sends goes to the others; what the
    others send comes to it, under the slow-consumer policy.

    @ivar number: The client's number (1 for the first since start).
    """

    factory: BroadcastFactory
    number = 0

    def connectionMade(self) -> None:
        """
        Register as the transport's producer and join the relay.
        """
        self.startOutput()
        self.factory.joined(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Relay a chunk to every other client, or close on C{close}.
        """
        self.idleTicks = 0
        self.bytesIn += len(data)
        if self._closing:
            return
        if len(data) <= _CLOSE_LENGTH and data in CLOSE:
            self.closeGracefully("close")
            return
        self.factory.relay(self, data)

    def droppedNotice(self, units: int, size: int) -> bytes:
        return dropped(size, units)

    def closingLine(self, reason: str) -> bytes:
        return b"* closing: %s\n" % (reason.encode(),)

    def shuttingDown(self) -> None:
        self.send(SHUTTING_DOWN, 1)


class BroadcastFactory(FanOutFactory):
    """
    The relay: its clients, and the relaying of every chunk to the others.

    @ivar clients: The clients (connected and not closing), in the order
        they joined.
    @ivar serial: The number of the last client that joined.
    @ivar relayedChunks: Chunks received and relayed.
    @ivar deliveredChunks: Chunk deliveries to receivers.
    @ivar droppedChunks: Chunks dropped for slow receivers (drop-oldest).
    @ivar droppedBytes: Their bytes.
    """

    protocol = BroadcastProtocol
    _log = Logger()

    def __init__(
        self,
        serviceName: str,
        limits: ConnectionLimits,
        broadcastLimits: BroadcastLimits,
        metrics: IMetrics,
        clock: IReactorTime,
    ) -> None:
        super().__init__(serviceName, limits, metrics, clock)
        self.slowLimits = broadcastLimits
        self.clients: dict[BroadcastProtocol, None] = {}
        # The receivers as a tuple, rebuilt after a join or a leave: one
        # relay of a chunk costs no copy of the table.
        self._members: tuple[BroadcastProtocol, ...] | None = None
        self.serial = 0
        self.relayedChunks = 0
        self.deliveredChunks = 0
        self.droppedChunks = 0
        self.droppedBytes = 0
        self._dropLog = RateLimitedLog(self._log, clock.seconds)
        metrics.addCollector(self._collectBroadcast)

    def _collectBroadcast(self) -> list[Any]:
        """
        The relay's totals, computed now.
        """
        service = self.serviceName
        return [
            sampleOf(name, value, service=service)
            for name, value in (
                ("netdemo_broadcast_relayed_chunks_total", self.relayedChunks),
                ("netdemo_broadcast_delivered_chunks_total", self.deliveredChunks),
                ("netdemo_broadcast_dropped_chunks_total", self.droppedChunks),
                ("netdemo_broadcast_dropped_bytes_total", self.droppedBytes),
            )
        ]

    def refusalLine(self, reason: str) -> bytes:
        return b"* refused: %s\n" % (reason.encode(),)

    def joined(self, p: BroadcastProtocol) -> None:
        """
        Number and greet a new client.
        """
        self.serial += 1
        p.number = self.serial
        self.clients[p] = None
        self._members = None
        p.send(welcome(p.number, len(self.clients)), 1)

    def left(self, p: FanOutProtocol) -> None:
        """
        Relay nothing more to a client that is closing or gone.
        """
        if p in self.clients:
            del self.clients[p]
            self._members = None

    def relay(self, sender: BroadcastProtocol, data: bytes) -> None:
        """
        Send one chunk to every client but C{sender}.
        """
        members = self._members
        if members is None:
            members = self._members = tuple(self.clients)
        for r in members:
            if r is not sender:
                r.send(data, 1)
        self.relayedChunks += 1
        # The sender is a member: it is not closing.
        self.deliveredChunks += len(members) - 1

    def droppedFor(self, p: FanOutProtocol, units: int, size: int) -> None:
        """
        Count (and log, at a bounded rate) the chunks dropped for a slow
        receiver.
        """
        self.droppedChunks += units
        self.droppedBytes += size
        text = (
            "{service}: dropped {chunks} chunks ({bytes} bytes) for slow "
            "receiver {peer}; {suppressed} similar events not logged"
        )
        self._dropLog.emit(
            "dropped",
            LogLevel.warn,
            text,
            chunks=units,
            bytes=size,
            event="slow_consumer_dropped",
            service=self.serviceName,
            peer=formatAddress(p.peer),
        )


def buildBroadcastService(
    descriptions: Iterable[str],
    limits: ConnectionLimits,
    broadcastLimits: BroadcastLimits,
    metrics: IMetrics,
    reactor: IReactorTime,
) -> StreamService:
    """
    Build the broadcast relay: one listener per endpoint description, all
    sharing one relay.

    @param descriptions: Server endpoint descriptions (C{tcp:8010}, ...).
    @param limits: The connection limits.
    @param broadcastLimits: The slow-receiver policy.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    """
    factory = BroadcastFactory(SERVICE_NAME, limits, broadcastLimits, metrics, reactor)
    return StreamService(SERVICE_NAME, factory, descriptions, reactor)
