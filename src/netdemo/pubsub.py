# -*- test-case-name: tests.test_pubsub -*-
"""
The line-based pub/sub hub: the classic Twisted broadcast chat, grown into
a small broker that people can use from C{nc}.

The grammar is in C{docs/protocol.md} and, as code, in L{netdemo.hubwire}:
lines end in LF or CRLF; a plain line is published to the default topic
L{DEFAULT_TOPIC}; a line that starts with C{/} is a command (C{/sub},
C{/pub}, C{/nick}, ...) answered by one C{+OK} or one C{-ERR} line; notices
start with C{*}.  Who gets a topic's lines is L{netdemo.routing}'s job, the
recent lines L{netdemo.history}'s.  Here are the I/O (L{PubSubProtocol}:
flow control and limits) and the hub itself (L{PubSubFactory}: members,
nicknames, presence, commands, fan-out).

How the hot path stays fast:

  - the lines of one read are split with C{bytes.split} (never
    C{LineReceiver}'s per-line callback) and the common case, a read of
    plain lines, is recognised with a few substring tests over the whole
    read (L{HubReader});
  - all the lines of one read that go to one topic become one C{bytes}
    object, built once with C{bytes.join}, and each subscriber gets it in
    one write: the per-subscriber work is one method call per read, not per
    line;
  - the subscribers of a topic are computed once and cached until a
    subscription changes (L{Router});
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
import socket
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from netdemo import hubwire
from netdemo.history import History
from netdemo.hubwire import (
    DEFAULT_TOPIC,
    Command,
    HubReader,
    Publish,
    Reply,
    isNick,
    isPattern,
    isTopic,
    linePrefix,
)
from netdemo.internals import directTransport, sendIfIdle, unsentBytes, writeNow
from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.logs import formatAddress
from netdemo.metrics import IMetrics, sampleOf
from netdemo.routing import MAX_SUBSCRIPTIONS, Router, Subscribed
from netdemo.stream import LimitedFactory, LimitedProtocol, StreamService

if TYPE_CHECKING:
    from netdemo.backplane import IBackplane

__all__ = [
    "DEFAULT_TOPIC",
    "PubSubFactory",
    "PubSubProtocol",
    "buildPubSubService",
]

SERVICE_NAME = "pubsub"

#: Entries listed by one C{/who} or C{/topics} answer.
MAX_LISTED = 200

#: The kernel send buffer of each connection (Linux doubles it).  Left to
#: itself Linux grows it to 4 MiB per connection: memory the hub cannot
#: account for, and seconds of delay before a stalled subscriber is seen to
#: stall (the transport only pauses once the kernel refuses data).
SEND_BUFFER = 256 * 1024

#: How many sweeps make up one line timeout.
LINE_SWEEPS = 10

#: The answer to one C{/pub} line, as written.
_ACK = hubwire.PUBLISHED + b"\n"


@implementer(IPushProducer)
class PubSubProtocol(LimitedProtocol):
    """
    One hub client, as far as I/O goes: it reads events with a
    L{HubReader} and hands them to the hub; it writes what the hub sends
    it, applying the slow-consumer policy; it closes.

    @ivar identity: The name shown to others: C{host:port} or a nickname.
    @ivar echo: Whether the client gets its own lines back.
    @ivar reader: The partial line, and what the complete ones mean.
    @ivar prefixes: Topic -> what precedes this client's lines there (a
        cache kept by the hub).
    @ivar written: Bytes given to the transport.
    @ivar dropped: Lines dropped for this client (drop-oldest policy).
    """

    factory: PubSubFactory
    identity = b"-"
    echo = False
    written = 0
    dropped = 0
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
        self.reader = HubReader(self.factory.hubLimits.maxLine)
        self.prefixes: dict[bytes, bytes] = {}
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
            self.send(hubwire.dropped(told) + b"\n", 1)
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
    def paused(self) -> bool:
        """
        Whether the transport holds more than it wants (the slow-consumer
        policy applies).
        """
        return self._paused

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
            self.reply(hubwire.SHUTTING_DOWN)
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
            sendIfIdle(self._direct, hubwire.closing(reason))
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
        Read the events of this read's complete lines and act on them, in
        order, until the connection closes.
        """
        self.idleTicks = 0
        self.bytesIn += len(data)
        if self._closing:
            return
        factory = self.factory
        for event in self.reader.feed(data):
            if self._closing:
                return
            if isinstance(event, Publish):
                factory.publish(self, event.topic, event.lines)
                acks = event.acks
                if acks and not self._closing:
                    self.send(_ACK * acks, acks)
            elif isinstance(event, Command):
                factory.command(self, event)
            elif isinstance(event, Reply):
                self.reply(event.line)
            elif event is hubwire.CLOSE:
                self.closeWith("quit", hubwire.BYE)
            else:
                self._lineTooLong()

    def _lineTooLong(self) -> None:
        """
        Refuse an overlong line: count it, say why, close.
        """
        self.reader.discard()
        self.factory.refuse("max-line", self.peer)
        self.closeWith("max-line", hubwire.tooLong(self.factory.hubLimits.maxLine))

    def lineTimedOut(self) -> None:
        """
        A partial line took too long to complete.
        """
        self.reader.discard()
        self.factory.refuse("line-timeout", self.peer)
        self.closeWith("line-timeout", hubwire.LINE_TIMED_OUT)


class _Refusal(Protocol):
    """
    A refused connection: one reason line, then close.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(hubwire.refused(self.reason))
        transport.loseConnection()


class PubSubFactory(LimitedFactory):
    """
    The hub: its members, their nicknames and subscriptions, the commands,
    the fan-out and the history.

    @ivar hubLimits: The hub's limits and policies.
    @ivar clients: The members (connected and not closing), in the order
        they joined.
    @ivar router: Who is subscribed to what.
    @ivar history: The recent lines of each topic, as delivered.
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
        self.router: Router[PubSubProtocol] = Router()
        self.history = History(hubLimits.history)
        self.publishedLines = 0
        self.deliveredLines = 0
        self.droppedLines = 0
        self.serial = 0
        self._lastRefusal = "refused"
        self._lineSweeper: LoopingCall | None = None
        metrics.addCollector(self._collectHub)
        # Local lines also go to the backplane; lines of other hubs come
        # back through deliverRemote.
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
            reader = p.reader
            if reader.buffer:
                reader.partialTicks += 1
                if reader.partialTicks > LINE_SWEEPS:
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
        Greet a new client (subscribed to the default topic), announce it,
        replay history to it.
        """
        self.serial += 1
        self.clients[p] = None
        self.router.subscribe(p, DEFAULT_TOPIC)
        p.reply(hubwire.greeting(p.identity, self.serial, len(self.clients)))
        limits = self.hubLimits
        if limits.presence:
            self.notice(p, hubwire.joined(p.identity, len(self.clients)))
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
        self.router.drop(p)
        if self.hubLimits.presence:
            self.notice(p, hubwire.left(p.identity, len(self.clients)))

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
        p.prefixes.clear()
        if self.hubLimits.presence:
            self.notice(p, hubwire.renamed(old, nick))
        return True

    def notice(self, about: PubSubProtocol, line: bytes) -> None:
        """
        Send a presence line to the default topic's subscribers but C{about}.
        """
        data = line + b"\n"
        for s in self.router.subscribers(DEFAULT_TOPIC):
            if s is not about:
                s.send(data, 1)

    # Publishing.

    def prefixFor(self, p: PubSubProtocol, topic: bytes) -> bytes:
        """
        What precedes each of C{p}'s lines on C{topic}.
        """
        prefixes = p.prefixes
        prefix = prefixes.get(topic)
        if prefix is None:
            prefix = linePrefix(topic, p.identity)
            if len(prefixes) >= MAX_SUBSCRIPTIONS:
                prefixes.clear()
            prefixes[topic] = prefix
        return prefix

    def publish(self, sender: PubSubProtocol, topic: bytes, lines: list[bytes]) -> None:
        """
        Deliver lines from C{sender} on C{topic}: one write per subscriber;
        hand them to the backplane, if any.
        """
        self._fanOut(sender, topic, self.prefixFor(sender, topic), lines)
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
        self.history.add(topic, prefix, lines)
        delivered = 0
        for s in self.router.subscribers(topic):
            if s is sender and not s.echo:
                continue
            s.send(data, count)
            delivered += 1
        self.deliveredLines += count * delivered

    def replay(self, p: PubSubProtocol, topic: bytes, count: int) -> int:
        """
        Send the last C{count} lines of C{topic} to C{p}.

        @return: How many lines were sent.
        """
        entries = self.history.last(topic, count)
        if entries:
            p.send(b"\n".join(entries) + b"\n", len(entries))
        return len(entries)

    # Commands: each answers with exactly one +OK or -ERR line.

    def command(self, p: PubSubProtocol, command: Command) -> None:
        """
        Run one command of C{p} and answer it.
        """
        handler = None
        if command.name.isalpha():
            handler = getattr(self, "cmd_" + command.name.decode("ascii"), None)
        if handler is None:
            p.reply(hubwire.unknownCommand(command.word))
            return
        handler(p, command.arg)

    def cmd_nick(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/nick NAME}: take a nickname.
        """
        if not isNick(arg):
            p.reply(hubwire.BAD_NICK)
        elif arg != p.identity and not self.rename(p, arg):
            p.reply(hubwire.err(b"nick " + arg + b" is taken"))
        else:
            p.reply(hubwire.ok(b"nick " + arg))

    def cmd_sub(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/sub PATTERN}: subscribe.
        """
        if not isPattern(arg):
            p.reply(hubwire.usage(b"/sub PATTERN (tokens a.b.c, * one token, > rest)"))
            return
        outcome = self.router.subscribe(p, arg)
        if outcome is Subscribed.ALREADY:
            p.reply(hubwire.ok(b"already subscribed to " + arg))
        elif outcome is Subscribed.TOO_MANY:
            p.reply(hubwire.err(b"too many subscriptions (%d)" % (MAX_SUBSCRIPTIONS,)))
        else:
            p.reply(hubwire.ok(b"subscribed to " + arg))

    def cmd_unsub(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/unsub PATTERN}: unsubscribe.
        """
        if self.router.unsubscribe(p, arg):
            p.reply(hubwire.ok(b"unsubscribed from " + arg))
        else:
            shown = hubwire.escapeControls(arg[: hubwire.MAX_TOPIC])
            p.reply(hubwire.err(b"not subscribed to " + shown))

    def cmd_pub(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/pub TOPIC text} without text (with text it is no command).
        """
        p.reply(hubwire.usage(b"/pub TOPIC text"))

    def cmd_topics(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/topics}: the client's subscriptions and the topics with history.
        """
        mine = b" ".join(sorted(self.router.patterns(p))[:MAX_LISTED])
        known = b" ".join(sorted(self.history.topics())[:MAX_LISTED])
        p.reply(hubwire.ok(b"topics subscribed: " + mine + b"; with history: " + known))

    def cmd_who(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/who [TOPIC]}: identities connected, or subscribed to TOPIC.
        """
        if arg:
            if not isTopic(arg, anyLength=True):
                p.reply(hubwire.usage(b"/who [TOPIC]"))
                return
            clients: Iterable[PubSubProtocol] = self.router.subscribers(arg)
        else:
            clients = self.clients
        names = sorted(c.identity for c in clients)
        listed = b" ".join(names[:MAX_LISTED])
        more = b" ..." if len(names) > MAX_LISTED else b""
        p.reply(hubwire.ok(b"who %d: %s%s" % (len(names), listed, more)))

    def cmd_history(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/history [N] [TOPIC]}: replay the last N lines of a topic.
        """
        words = arg.split()
        count = self.hubLimits.history
        topic = DEFAULT_TOPIC
        if words and words[0].isdigit():
            number = words.pop(0)
            # More digits than a count can have: no limit below the history.
            if len(number) < 19:
                count = min(count, int(number))
        if words:
            topic = words.pop(0)
        if words or not isTopic(topic, anyLength=True):
            p.reply(hubwire.usage(b"/history [N] [TOPIC]"))
            return
        replayed = self.replay(p, topic, count)
        p.reply(hubwire.ok(b"history %d lines" % (replayed,)))

    def cmd_echo(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/echo on|off}: whether to get one's own lines back.
        """
        value = arg.lower()
        if value not in (b"on", b"off"):
            p.reply(hubwire.usage(b"/echo on|off"))
            return
        p.echo = value == b"on"
        p.reply(hubwire.ok(b"echo " + value))

    def cmd_ping(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/ping}: answer a pong.
        """
        p.reply(hubwire.ok(b"pong"))

    def cmd_quit(self, p: PubSubProtocol, arg: bytes) -> None:
        """
        C{/quit}: say goodbye and close.
        """
        p.closeWith("quit", hubwire.BYE)


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
