# -*- test-case-name: tests.test_pubsub -*-
"""
The line-based pub/sub hub: the classic Twisted broadcast chat, grown into
a small broker that people can use from C{nc}.

The grammar is in C{docs/protocol.md}.  In short: lines end in LF or CRLF; a
plain line is published to the default topic L{DEFAULT_TOPIC}; a line that
starts with C{/} is a command (C{/sub}, C{/pub}, C{/nick}, ...) answered by
one C{+OK} or one C{-ERR} line; notices start with C{*}.

How the hot path stays fast:

  - the lines of one read are split with C{bytes.split} (never
    C{LineReceiver}'s per-line callback) and the common case, a read of
    plain lines, is recognised with a few substring tests over the whole
    read;
  - all the lines of one read that go to one topic become one C{bytes}
    object, built once with C{bytes.join}, and each subscriber gets it in
    one write: the per-subscriber work is one method call per read, not per
    line;
  - the subscribers of a topic are computed once and cached until a
    subscription changes;
  - a subscriber with nothing queued gets the data handed to the kernel at
    once (as in L{netdemo.echo}), which saves two C{epoll_ctl} calls and a
    reactor turn per write.

How memory stays bounded: every subscriber is an C{IPushProducer} registered
on its own transport, so it learns when the kernel stops taking its data.
The bytes written while it is paused are counted; over C{maxPending}, or
paused for longer than C{writeDeadline}, it is disconnected (the NATS and
Redis semantics), or with the C{drop-oldest} policy its oldest pending lines
are dropped and it is told how many.  The publisher is never paused for a
slow subscriber.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from netdemo.internals import directTransport, sendIfIdle, unsentBytes, writeNow
from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.logs import formatAddress
from netdemo.metrics import IMetrics, sampleOf
from netdemo.stream import LimitedFactory, LimitedProtocol, StreamService

if TYPE_CHECKING:
    from netdemo.backplane import IBackplane

__all__ = [
    "DEFAULT_TOPIC",
    "PubSubFactory",
    "PubSubProtocol",
    "buildPubSubService",
    "escapeControls",
    "linePrefix",
    "patternMatches",
    "splitLines",
]

SERVICE_NAME = "pubsub"

#: The topic that plain lines are published to and that every client is
#: subscribed to when it connects.
DEFAULT_TOPIC = b"chat"

#: Subscriptions one client may hold at once.
MAX_SUBSCRIPTIONS = 256

#: Topics whose routes are cached at once, and subscribers listed over all
#: cached routes; the cache is cleared when either is reached.
MAX_ROUTES = 4096
MAX_ROUTE_ENTRIES = 1 << 20

#: Topics that keep a history at once, and bytes of history over all
#: topics; past either, the least recently published topic is forgotten
#: first (the topic being published to is never forgotten for it).
MAX_HISTORY_TOPICS = 1024
MAX_HISTORY_BYTES = 16 << 20

#: Entries listed by one C{/who} or C{/topics} answer.
MAX_LISTED = 200

#: The kernel send buffer of each connection (Linux doubles it).  Left to
#: itself Linux grows it to 4 MiB per connection: memory the hub cannot
#: account for, and seconds of delay before a stalled subscriber is seen to
#: stall (the transport only pauses once the kernel refuses data).
SEND_BUFFER = 256 * 1024

#: How many sweeps make up one line timeout.
LINE_SWEEPS = 10

_TOKEN = rb"[A-Za-z0-9_\-]+"
_TOPIC = re.compile(rb"%s(?:\.%s)*\Z" % (_TOKEN, _TOKEN))
_PATTERN = re.compile(rb"(?:%s|\*)(?:\.(?:%s|\*))*(?:\.>)?\Z|>\Z" % (_TOKEN, _TOKEN))
_NICK = re.compile(rb"[A-Za-z][A-Za-z0-9_\-]{0,31}\Z")
_MAX_TOPIC = 255

#: Control characters that are escaped in relayed text: all C0 controls but
#: tab (LF ends a line and never reaches here), and DEL.
_CONTROLS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: The same, but LF: to check the complete lines of one read at once.
_CONTROLS_BUT_LF = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def _escape(match: re.Match[bytes]) -> bytes:
    """
    One control character as C{\\xHH}.
    """
    return b"\\x%02x" % match.group()[0]


def escapeControls(line: bytes) -> bytes:
    """
    Escape the control characters of a line (all but tab) as C{\\xHH}.

    Everything else, invalid UTF-8 included, is left as it is.
    """
    return _CONTROLS.sub(_escape, line)


def splitLines(data: bytes) -> list[bytes]:
    """
    Split complete lines (C{data} ends in LF) on LF, dropping one CR before
    each LF.

    @return: The lines without their terminators.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    lines = data.split(b"\n")
    lines.pop()
    return lines


def linePrefix(topic: bytes, identity: bytes) -> bytes:
    """
    What precedes each line that C{identity} published on C{topic}.
    """
    if topic == DEFAULT_TOPIC:
        return b"<" + identity + b"> "
    return b"[" + topic + b"] <" + identity + b"> "


def patternMatches(pattern: Sequence[bytes], topic: Sequence[bytes]) -> bool:
    """
    Whether a subscription pattern matches a topic, both split on dots.

    C{*} matches exactly one token, a final C{>} one or more tokens.
    """
    for i, token in enumerate(pattern):
        if token == b">":
            return len(topic) > i
        if i >= len(topic):
            return False
        if token != b"*" and token != topic[i]:
            return False
    return len(pattern) == len(topic)


@implementer(IPushProducer)
class PubSubProtocol(LimitedProtocol):
    """
    One hub client: a publisher and a subscriber at once.

    @ivar identity: The name shown to others: C{host:port} or a nickname.
    @ivar patterns: Subscription patterns, as given and split on dots.
    @ivar echo: Whether the client gets its own lines back.
    @ivar partialTicks: Line sweeps since the current partial line started.
    @ivar written: Bytes given to the transport.
    @ivar dropped: Lines dropped for this client (drop-oldest policy).
    """

    factory: PubSubFactory
    identity = b"-"
    echo = False
    partialTicks = 0
    written = 0
    dropped = 0
    _buffer = b""
    _closing = False
    _paused = False
    _pending = 0
    _direct: Any = None
    _deadline: Any = None
    _queue: deque[tuple[bytes, int]] | None = None
    _droppedUntold = 0
    _unsentAtClose = 0
    _registered = False
    _closeTimer: Any = None

    def connectionMade(self) -> None:
        """
        Register as the transport's streaming producer (to learn when it
        pauses), bound the kernel send buffer, and join the hub.
        """
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self._registered = True
        handle = getattr(transport, "socket", None)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._direct = directTransport(transport)
        host = getattr(self.peer, "host", None)
        if host is not None:
            self.identity = formatAddress(self.peer).encode("ascii", "replace")
        else:
            # UNIX sockets and the like: no address tells clients apart.
            self.identity = b"client-%d" % (self.factory.serial + 1,)
        self.patterns: dict[bytes, tuple[bytes, ...]] = {
            DEFAULT_TOPIC: (DEFAULT_TOPIC,)
        }
        self._prefixes: dict[bytes, bytes] = {}
        self.factory.joined(self)

    # Output.

    def send(self, data: bytes, lines: int) -> None:
        """
        Queue C{data} (C{lines} complete lines) for this client, applying the
        slow-consumer policy.
        """
        if self._paused:
            self._sendPaused(data, lines)
            return
        self.written += len(data)
        t = self._direct
        if t is not None:
            writeNow(t, data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def _sendPaused(self, data: bytes, lines: int) -> None:
        """
        Queue data for a paused client: count it against C{maxPending} and
        disconnect past it, or (drop-oldest) keep it in our own queue and
        drop the oldest lines past it.
        """
        limits = self.factory.hubLimits
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
        queue.append((data, lines))
        while self._pending > limits.maxPending and queue:
            old, count = queue.popleft()
            self._pending -= len(old)
            self.dropped += count
            self._droppedUntold += count
            self.factory.droppedLines += count

    def reply(self, line: bytes) -> None:
        """
        Send one line (without its LF) to this client.
        """
        if not self._closing:
            self.send(line + b"\n", 1)

    def pauseProducing(self) -> None:
        """
        The transport holds more than it wants: count what comes next.
        """
        if self._paused or self._closing:
            return
        self._paused = True
        self._pending = 0
        limits = self.factory.hubLimits
        if limits.slowPolicy == "drop-oldest":
            self._queue = deque()
        elif limits.writeDeadline:
            self._deadline = self.factory.clock.callLater(
                limits.writeDeadline, self.slowConsumer, "write-deadline"
            )

    def resumeProducing(self) -> None:
        """
        The transport has sent everything: deliver what was held back.
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
        if queue is None or self._closing:
            return
        if self._droppedUntold:
            told, self._droppedUntold = self._droppedUntold, 0
            self.send(b"* dropped %d lines (slow consumer)\n" % (told,), 1)
        while queue:
            data, count = queue.popleft()
            self.send(data, count)

    def stopProducing(self) -> None:
        """
        The connection is gone; L{connectionLost} cleans up.
        """

    def slowConsumer(self, reason: str) -> None:
        """
        Disconnect this client for not reading fast enough.
        """
        if self._closing:
            return
        self._deadline = None
        self.factory.refuse(reason, self.peer)
        self.abort(reason)

    @property
    def bytesOut(self) -> int:
        if self.transport is None:
            return 0
        if self.connected:
            return self.written - unsentBytes(self.transport)
        return self.written - self._unsentAtClose

    # Closing.

    def _forget(self) -> None:
        """
        Leave the hub (once): no more deliveries to this client.
        """
        if not self._closing:
            self._closing = True
            self.factory.left(self)

    def closeWith(self, reason: str, line: bytes) -> None:
        """
        Send one last line, then close gracefully.
        """
        if self._closing:
            return
        self.reply(line)
        self.closeGracefully(reason)

    def closeGracefully(self, reason: str) -> None:
        """
        Leave the hub and close after what is queued was sent; abort after
        the drain deadline.  On shutdown, say so first.
        """
        if reason == "shutdown" and not self._closing:
            self.reply(b"* server shutting down")
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
            # One reason line, if the socket can take it now.
            sendIfIdle(self._direct, b"-ERR closing: %s\n" % (reason.encode(),))
        self._forget()
        super().abort(reason)

    def connectionLost(self, reason: Any = None) -> None:
        """
        Cancel the timers, leave the hub, and log the connection.
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

    # Input.

    def dataReceived(self, data: bytes) -> None:
        """
        Buffer a partial line; hand the complete lines of this read to
        L{linesReceived} at once.
        """
        self.idleTicks = 0
        self.bytesIn += len(data)
        if self._closing:
            return
        end = data.rfind(b"\n")
        buffer = self._buffer
        if end < 0:
            if not buffer:
                self.partialTicks = 0
                buffer = data
            else:
                buffer += data
            self._buffer = buffer
            if len(buffer) > self.factory.hubLimits.maxLine + 1:
                self._lineTooLong()
            return
        self.partialTicks = 0
        if buffer:
            data = buffer + data
            end += len(buffer)
        if end + 1 < len(data):
            self._buffer = data[end + 1 :]
            data = data[: end + 1]
        else:
            self._buffer = b""
        self.linesReceived(data)
        if len(self._buffer) > self.factory.hubLimits.maxLine + 1:
            self._lineTooLong()

    def linesReceived(self, data: bytes) -> None:
        """
        Handle complete lines: C{data} ends in LF.
        """
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        lines = data.split(b"\n")
        lines.pop()
        limits = self.factory.hubLimits
        if len(data) - len(lines) > limits.maxLine and (
            max(map(len, lines)) > limits.maxLine
        ):
            self._slowLines(lines)
            return
        if (
            data[0] == 0x2F  # "/"
            or b"\n/" in data
            or b"close" in data
            or data[0] == 0x0A
            or b"\n\n" in data
            or _CONTROLS_BUT_LF.search(data) is not None
        ):
            self._slowLines(lines)
            return
        self.factory.publish(self, DEFAULT_TOPIC, lines)

    def _slowLines(self, lines: list[bytes]) -> None:
        """
        Handle lines one by one: commands, blank lines, long lines, control
        characters.  Consecutive publications to one topic still go out as
        one batch, and the C{+OK} answers to a batch of C{/pub} lines as one
        write.
        """
        maxLine = self.factory.hubLimits.maxLine
        topic = DEFAULT_TOPIC
        batch: list[bytes] = []
        oks = 0

        def flush() -> None:
            """
            Publish the batch, then answer its C{/pub} lines.
            """
            nonlocal batch, oks
            if batch:
                self.factory.publish(self, topic, batch)
                batch = []
            if oks and not self._closing:
                self.send(b"+OK\n" * oks, oks)
            oks = 0

        for line in lines:
            if self._closing:
                return
            if len(line) > maxLine:
                flush()
                self._lineTooLong()
                return
            if not line:
                continue
            lineTopic = DEFAULT_TOPIC
            if line[0] == 0x2F:  # "/"
                if line.startswith(b"//"):
                    line = line[1:]
                elif line[:5].lower() == b"/pub " and line.count(b" ") >= 2:
                    _, lineTopic, line = line.split(b" ", 2)
                    if not _TOPIC.match(lineTopic) or len(lineTopic) > _MAX_TOPIC:
                        flush()
                        self.reply(b"-ERR bad topic " + escapeControls(lineTopic))
                        continue
                else:
                    flush()
                    self.command(line)
                    continue
            elif line == b"close":
                flush()
                self.closeWith("quit", b"+OK bye")
                return
            if _CONTROLS.search(line) is not None:
                line = escapeControls(line)
            if lineTopic != topic:
                flush()
                topic = lineTopic
            batch.append(line)
            if lineTopic is not DEFAULT_TOPIC:
                oks += 1
        flush()

    def _lineTooLong(self) -> None:
        """
        Refuse an overlong line: count it, say why, close.
        """
        self._buffer = b""
        maxLine = self.factory.hubLimits.maxLine
        self.factory.refuse("max-line", self.peer)
        self.closeWith(
            "max-line", b"-ERR line longer than %d bytes, closing" % (maxLine,)
        )

    def lineTimedOut(self) -> None:
        """
        A partial line took too long to complete.
        """
        self._buffer = b""
        self.factory.refuse("line-timeout", self.peer)
        self.closeWith("line-timeout", b"-ERR line not completed in time, closing")

    # Commands.

    def command(self, line: bytes) -> None:
        """
        Run one command line (it starts with C{/}) and answer it.
        """
        parts = line.split(None, 1)
        name = parts[0][1:].lower()
        arg = parts[1].strip() if len(parts) > 1 else b""
        handler = None
        if name.isalpha():
            handler = getattr(self, "cmd_" + name.decode("ascii"), None)
        if handler is None:
            self.reply(b"-ERR unknown command " + escapeControls(parts[0][:64]))
            return
        handler(arg)

    def cmd_nick(self, arg: bytes) -> None:
        """
        C{/nick NAME}: take a nickname.
        """
        if not _NICK.match(arg):
            self.reply(
                b"-ERR bad nick: 1-32 letters, digits, _ or -, starting with a letter"
            )
            return
        if arg == self.identity:
            self.reply(b"+OK nick " + arg)
            return
        if not self.factory.rename(self, arg):
            self.reply(b"-ERR nick " + arg + b" is taken")
            return
        self.reply(b"+OK nick " + arg)

    def cmd_sub(self, arg: bytes) -> None:
        """
        C{/sub PATTERN}: subscribe.
        """
        if not arg or not _PATTERN.match(arg) or len(arg) > _MAX_TOPIC:
            self.reply(b"-ERR usage: /sub PATTERN (tokens a.b.c, * one token, > rest)")
            return
        if arg in self.patterns:
            self.reply(b"+OK already subscribed to " + arg)
            return
        if len(self.patterns) >= MAX_SUBSCRIPTIONS:
            self.reply(b"-ERR too many subscriptions (%d)" % (MAX_SUBSCRIPTIONS,))
            return
        self.patterns[arg] = tuple(arg.split(b"."))
        self.factory.invalidate()
        self.reply(b"+OK subscribed to " + arg)

    def cmd_unsub(self, arg: bytes) -> None:
        """
        C{/unsub PATTERN}: unsubscribe.
        """
        if self.patterns.pop(arg, None) is None:
            self.reply(b"-ERR not subscribed to " + escapeControls(arg[:_MAX_TOPIC]))
            return
        self.factory.invalidate()
        self.reply(b"+OK unsubscribed from " + arg)

    def cmd_pub(self, arg: bytes) -> None:
        """
        C{/pub TOPIC text} without text (with text it never gets here).
        """
        self.reply(b"-ERR usage: /pub TOPIC text")

    def cmd_topics(self, arg: bytes) -> None:
        """
        C{/topics}: this client's subscriptions and the topics with history.
        """
        mine = b" ".join(sorted(self.patterns)[:MAX_LISTED])
        known = b" ".join(sorted(self.factory.history)[:MAX_LISTED])
        self.reply(b"+OK topics subscribed: " + mine + b"; with history: " + known)

    def cmd_who(self, arg: bytes) -> None:
        """
        C{/who [TOPIC]}: identities connected, or subscribed to TOPIC.
        """
        if arg:
            if not _TOPIC.match(arg):
                self.reply(b"-ERR usage: /who [TOPIC]")
                return
            clients: Iterable[PubSubProtocol] = self.factory.route(arg)
        else:
            clients = self.factory.members()
        names = sorted(p.identity for p in clients)
        listed = b" ".join(names[:MAX_LISTED])
        more = b" ..." if len(names) > MAX_LISTED else b""
        self.reply(b"+OK who %d: %s%s" % (len(names), listed, more))

    def cmd_history(self, arg: bytes) -> None:
        """
        C{/history [N] [TOPIC]}: replay the last N lines of a topic.
        """
        words = arg.split()
        count = self.factory.hubLimits.history
        topic = DEFAULT_TOPIC
        if words and words[0].isdigit():
            count = min(count, int(words.pop(0)))
        if words:
            topic = words.pop(0)
        if words or not _TOPIC.match(topic):
            self.reply(b"-ERR usage: /history [N] [TOPIC]")
            return
        replayed = self.factory.replay(self, topic, count)
        self.reply(b"+OK history %d lines" % (replayed,))

    def cmd_echo(self, arg: bytes) -> None:
        """
        C{/echo on|off}: whether to get one's own lines back.
        """
        if arg.lower() not in (b"on", b"off"):
            self.reply(b"-ERR usage: /echo on|off")
            return
        self.echo = arg.lower() == b"on"
        self.reply(b"+OK echo " + arg.lower())

    def cmd_ping(self, arg: bytes) -> None:
        """
        C{/ping}: answer a pong.
        """
        self.reply(b"+OK pong")

    def cmd_quit(self, arg: bytes) -> None:
        """
        C{/quit}: say goodbye and close.
        """
        self.closeWith("quit", b"+OK bye")

    def prefixFor(self, topic: bytes) -> bytes:
        """
        What precedes each of this client's lines on C{topic}.
        """
        prefix = self._prefixes.get(topic)
        if prefix is None:
            prefix = linePrefix(topic, self.identity)
            if len(self._prefixes) >= MAX_SUBSCRIPTIONS:
                self._prefixes.clear()
            self._prefixes[topic] = prefix
        return prefix


class _Refusal(Protocol):
    """
    A refused connection: one reason line, then close.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(b"-ERR refused: %s\n" % (self.reason.encode(),))
        transport.loseConnection()


class PubSubFactory(LimitedFactory):
    """
    The hub: the clients, their subscriptions, the routes and the history.

    @ivar hubLimits: The hub's limits and policies.
    @ivar history: Topic -> its recent lines, as delivered (without LF).
    @ivar historyBytes: The size of all the history.
    @ivar publishedLines: Lines published so far.
    @ivar deliveredLines: Line deliveries so far.
    @ivar droppedLines: Lines dropped for slow consumers (drop-oldest).
    @ivar backplane: The backplane joining this hub to others, or C{None}.
    """

    protocol = PubSubProtocol
    backplane: IBackplane | None = None
    _log = Logger()

    def __init__(
        self,
        serviceName: str,
        limits: ConnectionLimits,
        hubLimits: HubLimits,
        metrics: IMetrics,
        clock: IReactorTime,
        backplane: IBackplane | None = None,
    ) -> None:
        super().__init__(serviceName, limits, metrics, clock)
        self.hubLimits = hubLimits
        self.clients: dict[PubSubProtocol, None] = {}
        self.nicks: set[bytes] = set()
        self.routes: dict[bytes, list[PubSubProtocol]] = {}
        self.history: dict[bytes, deque[bytes]] = {}
        self.historySizes: dict[bytes, int] = {}
        self.historyBytes = 0
        self.routeEntries = 0
        self.publishedLines = 0
        self.deliveredLines = 0
        self.droppedLines = 0
        self.serial = 0
        self._lastRefusal = "refused"
        self._lineSweeper: LoopingCall | None = None
        metrics.addCollector(self._collectHub)
        # Backplane hook (issue 7): local lines also go to the backplane;
        # lines of other hubs come back through deliverRemote.
        if backplane is not None:
            self.backplane = backplane
            backplane.attach(self.deliverRemote)

    def _collectHub(self) -> list[Any]:
        """
        The hub's line totals, computed now.
        """
        service = self.serviceName
        return [
            sampleOf(
                "netdemo_pubsub_published_lines_total",
                self.publishedLines,
                service=service,
            ),
            sampleOf(
                "netdemo_pubsub_delivered_lines_total",
                self.deliveredLines,
                service=service,
            ),
            sampleOf(
                "netdemo_pubsub_dropped_lines_total",
                self.droppedLines,
                service=service,
            ),
        ]

    def startFactory(self) -> None:
        """
        Start the idle sweep and the partial-line sweep.
        """
        super().startFactory()
        timeout = self.hubLimits.lineTimeout
        if timeout and self._lineSweeper is None:
            self._lineSweeper = LoopingCall(self.sweepLines)
            self._lineSweeper.clock = self.clock
            self._lineSweeper.start(timeout / LINE_SWEEPS, now=False)

    def stopFactory(self) -> None:
        """
        Stop the sweeps.
        """
        super().stopFactory()
        if self._lineSweeper is not None:
            self._lineSweeper.stop()
            self._lineSweeper = None

    def sweepLines(self) -> None:
        """
        Age every partial line by one sweep; close the connections whose
        partial line is older than the line timeout.
        """
        for p in list(self.clients):
            if p._buffer:
                p.partialTicks += 1
                if p.partialTicks > LINE_SWEEPS:
                    p.lineTimedOut()

    def refuse(self, reason: str, peer: IAddress | None) -> None:
        """
        Count and log a refusal; remember its reason for the reason line.
        """
        self._lastRefusal = reason
        super().refuse(reason, peer)

    def buildProtocol(self, addr: IAddress) -> Any:  # type: ignore[override]
        """
        A client protocol, or, for a refused connection, one that sends the
        reason line and closes.
        """
        p = super().buildProtocol(addr)
        if p is None:
            return _Refusal(self._lastRefusal)
        return p

    # Membership.

    def members(self) -> list[PubSubProtocol]:
        """
        The clients that are connected and not closing.
        """
        return list(self.clients)

    def joined(self, p: PubSubProtocol) -> None:
        """
        Greet a new client, announce it, replay history to it.
        """
        self.serial += 1
        self.clients[p] = None
        self.invalidate()
        p.reply(
            b"* welcome to netdemo pubsub, you are %s (client #%d, %d connected)"
            % (p.identity, self.serial, len(self.clients))
        )
        limits = self.hubLimits
        if limits.presence:
            self.notice(
                p, b"* %s joined (%d connected)" % (p.identity, len(self.clients))
            )
        if limits.replayOnJoin:
            self.replay(p, DEFAULT_TOPIC, limits.replayOnJoin)

    def left(self, p: PubSubProtocol) -> None:
        """
        Forget a client that is closing or gone, and announce it.
        """
        if p not in self.clients:
            return
        del self.clients[p]
        self.nicks.discard(p.identity)
        self.invalidate()
        if self.hubLimits.presence:
            self.notice(
                p, b"* %s left (%d connected)" % (p.identity, len(self.clients))
            )

    def rename(self, p: PubSubProtocol, nick: bytes) -> bool:
        """
        Give C{p} a nickname, unless another client has it.
        """
        if nick in self.nicks:
            return False
        old = p.identity
        self.nicks.discard(old)
        self.nicks.add(nick)
        p.identity = nick
        p._prefixes.clear()
        if self.hubLimits.presence:
            self.notice(p, b"* %s is now %s" % (old, nick))
        return True

    def notice(self, about: PubSubProtocol, line: bytes) -> None:
        """
        Send a presence line to the default topic's subscribers but C{about}.
        """
        data = line + b"\n"
        for s in self.route(DEFAULT_TOPIC):
            if s is not about:
                s.send(data, 1)

    # Routing.

    def invalidate(self) -> None:
        """
        Forget the cached routes: a subscription changed.
        """
        self.routes.clear()
        self.routeEntries = 0

    def route(self, topic: bytes) -> list[PubSubProtocol]:
        """
        The clients subscribed to C{topic}, computed once per subscription
        change.
        """
        subscribers = self.routes.get(topic)
        if subscribers is None:
            tokens = topic.split(b".")
            subscribers = [
                p
                for p in self.clients
                if topic in p.patterns
                or any(patternMatches(pat, tokens) for pat in p.patterns.values())
            ]
            self.routeEntries += len(subscribers)
            if len(self.routes) >= MAX_ROUTES or self.routeEntries > MAX_ROUTE_ENTRIES:
                self.invalidate()
                self.routeEntries = len(subscribers)
            self.routes[topic] = subscribers
        return subscribers

    def publish(self, sender: PubSubProtocol, topic: bytes, lines: list[bytes]) -> None:
        """
        Deliver lines from C{sender} on C{topic}: one write per subscriber;
        hand them to the backplane, if any.
        """
        self._fanOut(sender, topic, sender.prefixFor(topic), lines)
        self.publishedLines += len(lines)
        if self.backplane is not None:
            self.backplane.publish(topic, sender.identity, lines)

    def deliverRemote(self, topic: bytes, identity: bytes, lines: list[bytes]) -> None:
        """
        Deliver lines that C{identity} published on another hub (from the
        backplane) to this hub's subscribers.  They are never published
        again.
        """
        self._fanOut(None, topic, linePrefix(topic, identity), lines)

    def _fanOut(
        self,
        sender: PubSubProtocol | None,
        topic: bytes,
        prefix: bytes,
        lines: list[bytes],
    ) -> None:
        """
        Write lines, each after C{prefix}, to the subscribers of C{topic} (but
        C{sender}, unless it asked for its echo), and remember them.
        """
        count = len(lines)
        if count == 1:
            data = prefix + lines[0] + b"\n"
        else:
            data = prefix + (b"\n" + prefix).join(lines) + b"\n"
        keep = self.hubLimits.history
        if keep:
            self._remember(topic, prefix, lines, keep)
        subscribers = self.routes.get(topic)
        if subscribers is None:
            subscribers = self.route(topic)
        delivered = 0
        for s in subscribers:
            if s is sender and not s.echo:
                continue
            s.send(data, count)
            delivered += 1
        self.deliveredLines += count * delivered

    def _remember(
        self, topic: bytes, prefix: bytes, lines: list[bytes], keep: int
    ) -> None:
        """
        Add lines to a topic's history, within the history's bounds.
        """
        h = self.history.pop(topic, None)
        if h is None:
            h = deque(maxlen=keep)
            self.historySizes[topic] = 0
        # Most recently published last: the first is forgotten first.
        self.history[topic] = h
        new = list(map(prefix.__add__, lines[-keep:]))
        overflow = len(h) + len(new) - keep
        removed = sum(map(len, islice(h, overflow))) if overflow > 0 else 0
        h.extend(new)
        change = sum(map(len, new)) - removed
        self.historySizes[topic] += change
        self.historyBytes += change
        while (
            self.historyBytes > MAX_HISTORY_BYTES
            or len(self.history) > MAX_HISTORY_TOPICS
        ):
            oldest = next(iter(self.history))
            if oldest == topic:
                break
            del self.history[oldest]
            self.historyBytes -= self.historySizes.pop(oldest)

    def replay(self, p: PubSubProtocol, topic: bytes, count: int) -> int:
        """
        Send the last C{count} lines of C{topic} to C{p}.

        @return: How many lines were sent.
        """
        h = self.history.get(topic)
        if not h or count <= 0:
            return 0
        entries = list(h)[-count:]
        p.send(b"\n".join(entries) + b"\n", len(entries))
        return len(entries)


def buildPubSubService(
    descriptions: Iterable[str],
    limits: ConnectionLimits,
    hubLimits: HubLimits,
    metrics: IMetrics,
    reactor: IReactorTime,
    backplane: IBackplane | None = None,
) -> StreamService:
    """
    Build the pub/sub hub: one listener per endpoint description, all
    sharing one hub.

    @param descriptions: Server endpoint descriptions (C{tcp:8008}, ...).
    @param limits: The connection limits.
    @param hubLimits: The hub's own limits and policies.
    @param metrics: Where to report.
    @param reactor: The reactor to listen with and to time with.
    @param backplane: The backplane joining this hub to others, if any.
    """
    factory = PubSubFactory(
        SERVICE_NAME, limits, hubLimits, metrics, reactor, backplane
    )
    return StreamService(SERVICE_NAME, factory, descriptions, reactor)
