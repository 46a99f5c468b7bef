# -*- test-case-name: tests.test_broadcast,tests.test_pubsub -*-
"""
Writing to many readers, some of them slow: what the pub/sub hub
(L{netdemo.pubsub}) and the broadcast relay (L{netdemo.broadcast}) share.

A reader of a fan-out is a L{FanOutProtocol}.  It is a streaming
C{IPushProducer} registered on its own transport, so it learns when the
kernel stops taking its data (C{pauseProducing}) and when the transport has
sent everything again (C{resumeProducing}).  What is sent to it meanwhile
is counted, and the slow-consumer policy (L{SlowConsumerLimits}) applies:

  - C{disconnect}: the transport keeps the bytes, in order, up to
    C{maxPending}; past it, or once the reader stayed paused for
    C{writeDeadline} seconds, it is aborted (C{slow-consumer},
    C{write-deadline});
  - C{drop-oldest}: the reader's own queue keeps whole units (lines, chunks)
    up to C{maxPending}, dropping the oldest past it; when the transport
    resumes the reader is told what was dropped (L{FanOutProtocol.droppedNotice})
    and gets the rest.

The sender is never paused for a slow reader.  A reader with nothing queued
gets its data handed to the kernel at once (L{writeNow}), which saves two
C{epoll_ctl} calls and a reactor turn per write: on that fast path
L{FanOutProtocol.send} costs one attribute test more than a bare
C{transport.write}.

Closing: a graceful close leaves the fan-out at once and falls back to an
abort after the drain deadline (a peer that never reads would hold it
forever); an abort sends a reason line first if the socket can take it now.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from typing import Any, Protocol

from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol as StreamProtocol
from zope.interface import implementer

from netdemo.internals import directTransport, sendIfIdle, unsentBytes, writeNow
from netdemo.stream import LimitedFactory, LimitedProtocol

__all__ = [
    "SEND_BUFFER",
    "FanOutFactory",
    "FanOutProtocol",
    "Refusal",
    "SlowConsumerLimits",
]

#: The kernel send buffer of each reader's connection (Linux doubles it).
#: Left to itself Linux grows it to 4 MiB per connection: memory the
#: service cannot account for, and seconds of delay before a stalled reader
#: is seen to stall (the transport only pauses once the kernel refuses data).
SEND_BUFFER = 256 * 1024


class SlowConsumerLimits(Protocol):
    """
    The slow-consumer policy of a fan-out (L{netdemo.limits.HubLimits} and
    L{netdemo.limits.BroadcastLimits} are such).

    @ivar maxPending: Bytes a paused reader may have queued.
    @ivar writeDeadline: Seconds a reader may stay paused (disconnect
        policy); 0 for no limit.
    @ivar slowPolicy: C{disconnect} or C{drop-oldest}.
    """

    @property
    def maxPending(self) -> int: ...

    @property
    def writeDeadline(self) -> float: ...

    @property
    def slowPolicy(self) -> str: ...


class Refusal(StreamProtocol):
    """
    A refused connection: one reason line, then close.
    """

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.line)
        transport.loseConnection()


class FanOutFactory(LimitedFactory):
    """
    The factory of a fan-out's readers.  A connection refused by the
    limits gets one reason line (L{refusalLine}) before it is closed.

    @ivar slowLimits: The slow-consumer policy.
    """

    protocol: type[FanOutProtocol]
    slowLimits: SlowConsumerLimits
    _lastRefusal = "refused"

    def refusalLine(self, reason: str) -> bytes:
        """
        The one line (with its end) a refused connection gets.
        """
        raise NotImplementedError()

    def refuse(self, reason: str, peer: IAddress | None) -> None:
        """
        Count and log a refusal; remember its reason for the reason line.
        """
        self._lastRefusal = reason
        super().refuse(reason, peer)

    def buildProtocol(self, addr: IAddress) -> Any:  # type: ignore[override]
        """
        A reader, or, for a refused connection, one that sends the reason
        line and closes.
        """
        p = super().buildProtocol(addr)
        if p is None:
            return Refusal(self.refusalLine(self._lastRefusal))
        return p

    def left(self, p: FanOutProtocol) -> None:
        """
        C{p} is closing or gone: deliver nothing more to it.
        """
        raise NotImplementedError()

    def droppedFor(self, p: FanOutProtocol, units: int, size: int) -> None:
        """
        C{units} (lines, chunks) of C{size} bytes were dropped for C{p}
        (drop-oldest policy): count them.
        """
        raise NotImplementedError()


@implementer(IPushProducer)
class FanOutProtocol(LimitedProtocol):
    """
    One reader of a fan-out: its writes, the slow-consumer policy, closing.

    Subclasses call L{startOutput} from C{connectionMade}, write with
    L{send}, and may override the hooks L{_sendDetour} (while paused),
    L{_resumed} (the transport resumed), L{shuttingDown}, L{droppedNotice}
    and L{closingLine}.

    @ivar written: Bytes given to the transport.
    @ivar dropped: Units dropped for this reader (drop-oldest policy).
    @ivar droppedBytes: Bytes dropped for this reader (drop-oldest policy).
    """

    factory: FanOutFactory
    written = 0
    dropped = 0
    droppedBytes = 0
    _closing = False
    # Whether the transport holds more than it wants.
    _paused = False
    # Whether send must take the slow path (_sendDetour).
    _detour = False
    _pending = 0
    _direct: Any = None
    _deadline: Any = None
    _queue: deque[tuple[bytes, int]] | None = None
    _droppedUntold = 0
    _droppedBytesUntold = 0
    _unsentAtClose = 0
    _registered = False
    _closeTimer: Any = None

    def startOutput(self) -> None:
        """
        Register as the transport's streaming producer (to learn when it
        pauses), and bound the kernel send buffer.
        """
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self._registered = True
        handle = getattr(transport, "socket", None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._direct = directTransport(transport)

    # Output.

    def send(self, data: bytes, units: int) -> None:
        """
        Queue C{data} (C{units} whole lines or chunks) for this reader,
        applying the slow-consumer policy.
        """
        if self._detour:
            self._sendDetour(data, units)
            return
        self.written += len(data)
        t = self._direct
        if t is not None:
            writeNow(t, data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def _sendDetour(self, data: bytes, units: int) -> None:
        """
        Send while the fast path does not apply: the transport is paused.
        """
        self._sendPaused(data, units)

    def _sendPaused(self, data: bytes, units: int) -> None:
        """
        Queue data for a paused reader: count it against C{maxPending} and
        disconnect past it, or (drop-oldest) keep it in our own queue and
        drop the oldest units past it.
        """
        limits = self.factory.slowLimits
        self._pending += len(data)
        queue = self._queue
        if queue is None:
            # Disconnect policy: the transport keeps the bytes, in order.
            if self._pending > limits.maxPending:
                self.slowConsumer("slow-consumer")
                return
            self.written += len(data)
            self.transport.write(data)  # type: ignore[union-attr]
            return
        queue.append((data, units))
        self._pending = self._dropOldest(queue, self._pending)

    def _dropOldest(self, queue: deque[tuple[bytes, int]], size: int) -> int:
        """
        Drop the oldest entries of C{queue} (C{size} bytes) while it holds
        more than C{maxPending}; count them.

        @return: The bytes left.
        """
        maxPending = self.factory.slowLimits.maxPending
        units = dropped = 0
        while size > maxPending and queue:
            old, count = queue.popleft()
            size -= len(old)
            dropped += len(old)
            units += count
        if dropped:
            self.dropped += units
            self.droppedBytes += dropped
            self._droppedUntold += units
            self._droppedBytesUntold += dropped
            self.factory.droppedFor(self, units, dropped)
        return size

    def pauseProducing(self) -> None:
        """
        The transport holds more than it wants: count what comes next.
        """
        if self._paused or self._closing:
            return
        self._paused = True
        self._detour = True
        self._pending = 0
        limits = self.factory.slowLimits
        if limits.slowPolicy == "drop-oldest":
            self._queue = deque()
        elif limits.writeDeadline:
            self._deadline = self.factory.clock.callLater(
                limits.writeDeadline, self.slowConsumer, "write-deadline"
            )

    def resumeProducing(self) -> None:
        """
        The transport has sent everything: deliver what was held back,
        after saying what was dropped.
        """
        if not self._paused:
            return
        self._paused = False
        self._pending = 0
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        queue, self._queue = self._queue, None
        if self._closing or self._resumed():
            return
        self._detour = False
        if queue is None:
            return
        self._tellDropped()
        while queue:
            data, count = queue.popleft()
            self.send(data, count)

    def _resumed(self) -> bool:
        """
        The transport resumed: return C{True} to take over from here (the
        hub goes on with a history replay).
        """
        return False

    def _tellDropped(self) -> None:
        """
        Tell the reader what was dropped for it since it was last told
        (drop-oldest policy).
        """
        notice = self.takeDropped()
        if notice is not None:
            self.send(notice, 1)

    def takeDropped(self) -> bytes | None:
        """
        The notice of what was dropped since the reader was last told, or
        L{None} if nothing was; it counts as told.
        """
        if not self._droppedUntold:
            return None
        units, self._droppedUntold = self._droppedUntold, 0
        size, self._droppedBytesUntold = self._droppedBytesUntold, 0
        return self.droppedNotice(units, size)

    def droppedNotice(self, units: int, size: int) -> bytes:
        """
        What a reader is told when it catches up after C{units} of C{size}
        bytes were dropped (with its line end).
        """
        raise NotImplementedError()

    def closingLine(self, reason: str) -> bytes:
        """
        The one line (with its end) a reader closed by the service gets.
        """
        raise NotImplementedError()

    def shuttingDown(self) -> None:
        """
        The service is shutting down: say so (the last thing sent).
        """

    def stopProducing(self) -> None:
        """
        The connection is gone; L{connectionLost} cleans up.
        """

    def slowConsumer(self, reason: str) -> None:
        """
        Disconnect this reader for not reading fast enough.
        """
        if self._closing:
            return
        self._deadline = None
        self.factory.refuse(reason, self.peer)
        self.abort(reason)

    @property
    def paused(self) -> bool:
        """
        Whether the transport holds more than it wants (the slow-consumer
        policy applies).
        """
        return self._paused

    @property
    def bytesOut(self) -> int:
        return self.sentOf(self.written)

    # Closing.

    def _forget(self) -> None:
        """
        Leave the fan-out (once): no more deliveries to this reader.
        """
        if not self._closing:
            self._closing = True
            self.factory.left(self)

    def closeGracefully(self, reason: str) -> None:
        """
        Leave the fan-out and close after what is queued was sent; abort
        after the drain deadline.  On shutdown, say so first.
        """
        if reason == "shutdown" and not self._closing:
            self.shuttingDown()
        if self.closeReason is None:
            self.closeReason = reason
        self._forget()
        transport: Any = self.transport
        if self._registered:
            self._registered = False
            transport.unregisterProducer()
        transport.loseConnection()
        if self._closeTimer is None and self.connected:
            # A peer that never reads would hold the connection forever.
            self._closeTimer = self.factory.clock.callLater(
                self.factory.limits.drain or 1.0, self._abortIfOpen
            )

    def _abortIfOpen(self) -> None:
        """
        The graceful close took too long: abort.
        """
        if self.connected:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def abort(self, reason: str) -> None:
        """
        Close now, with a reason line if the socket can take one (nothing
        is queued for it).
        """
        if not self._closing and not self._paused and self._direct is not None:
            sendIfIdle(self._direct, self.closingLine(reason))
        self._forget()
        super().abort(reason)

    def connectionLost(self, reason: Any = None) -> None:
        """
        Cancel the timers, leave the fan-out, and log the connection.
        """
        self._unsentAtClose = unsentBytes(self.transport)
        self.connected = False
        self._direct = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        self._closeTimer = None
        self._queue = None
        self._forget()
        super().connectionLost(reason)
