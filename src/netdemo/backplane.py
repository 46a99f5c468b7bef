# -*- test-case-name: tests.test_backplane -*-
"""
The pub/sub backplane: several hubs act as one through Redis pub/sub.

Each hub hands the lines its own clients publish to its backplane, which
publishes them to Redis; each hub's backplane subscribes to every channel
under its prefix and hands the lines of the other hubs to its hub, which
delivers them to its local subscribers through its ordinary fan-out.  Only
lines cross: presence, C{/who} and history stay per hub.

The wire format (also in C{docs/scaling.md}):

  - the channel is C{PREFIX.TOPIC} (C{netdemo.chat} for the default topic);
  - a hub's message is a header line C{netdemo/1 NODE SEQ IDENTITY} and
    then the lines, joined by LF; C{NODE} names the hub process, C{SEQ}
    counts its messages from 1, C{IDENTITY} is the publishing client's;
  - any other payload is plain text, as C{redis-cli PUBLISH netdemo.chat
    "hello"} sends it: each of its lines is relayed, from identity C{redis},
    or from C{NAME} when the payload starts with C{<NAME> }.

A hub drops its own messages when they come back (same C{NODE}) and any
message whose C{SEQ} it has already seen from that node, so every line
reaches every subscriber exactly once, in its publisher's order.  Delivery
is at most once: what is published while Redis is unreachable is dropped
and counted, never replayed.

L{IBackplane} is the seam the hub sees.  L{RedisBackplane} is the real one,
built on C{txredisapi}; L{MemoryBackplane} joins hubs in one process through
a L{MemoryBus}, for tests.  Payloads are read with the hub's own grammar
(L{netdemo.hubwire}: topics, names, line splitting, escaping).

C{txredisapi} imports the global reactor when it is imported, and
L{netdemo.tap} imports this module while it parses the options, before
C{twistd} installs the reactor it was asked for (C{--reactor}).  So
C{txredisapi} is imported only when a L{RedisBackplane} starts: the two
connections' classes are built then, once (L{_redisFactories}).
"""

from __future__ import annotations

import functools
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from netdemo.hubwire import (
    escapeLines,
    isDotted,
    isIdentity,
    isNode,
    isTopic,
    splitSender,
    textLines,
)
from netdemo.metrics import IMetrics, sampleOf

__all__ = [
    "BackplaneURL",
    "IBackplane",
    "MemoryBackplane",
    "MemoryBus",
    "Message",
    "RedisBackplane",
    "buildBackplaneService",
    "decodeMessage",
    "encodeMessage",
    "parseBackplaneURL",
]

SERVICE_NAME = "backplane"

#: The first token of a hub's message.
HEADER = b"netdemo/1"

#: The channel prefix when the URL gives none.
DEFAULT_PREFIX = "netdemo"

#: The identity of lines published to Redis without one.
EXTERNAL_IDENTITY = b"redis"

#: Bytes waiting to go to Redis, past which new lines are dropped.
DEFAULT_QUEUE = 1 << 20

#: PUBLISH commands sent and not yet answered, at most.
WINDOW = 256

#: Nodes whose last message number is remembered.
MAX_NODES = 4096

#: Why lines are dropped, as the C{reason} label says.
DROP_REASONS = ("down", "queue-full", "error", "duplicate", "bad-message", "too-long")

Receiver = Callable[[bytes, bytes, list[bytes]], None]


@frozen
class BackplaneURL:
    """
    Where the backplane's Redis is: C{redis://[[USER]:PASSWORD@]HOST[:PORT]
    [/DB][?prefix=NAME&ca=FILE]}, or C{rediss://} for TLS.

    @ivar tls: Whether to speak TLS (C{rediss://}).
    @ivar db: The database to select; Redis pub/sub ignores it (channels are
        server-wide), so hubs are told apart by C{prefix}, not by C{db}.
    @ivar prefix: The channel prefix, as text.
    @ivar ca: A PEM file of certificate authorities to trust (TLS), instead
        of the system's.
    """

    tls: bool
    host: str
    port: int
    db: int | None = None
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None

    def display(self) -> str:
        """
        The URL without its password, for logs and messages.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.username is not None:
            host = f"{self.username}@{host}"
        text = f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}"
        if self.db is not None:
            text += f"/{self.db}"
        return text + f"?prefix={self.prefix}"


def _masked(value: str) -> str:
    """
    C{value} with the password part of its authority replaced by C{***}.
    """
    return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", value)


def parseBackplaneURL(value: str) -> BackplaneURL:
    """
    Parse a backplane URL (see L{BackplaneURL}).

    @raise ValueError: Naming the value (its password masked) and the fault.
    """
    shown = repr(_masked(value))
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{shown} is not a Redis URL ({e})") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{shown} is not a redis:// or rediss:// URL")
    host = parts.hostname
    if not host:
        raise ValueError(f"{shown} names no host")
    db: int | None = None
    path = parts.path.strip("/")
    if path:
        if not path.isdigit():
            raise ValueError(f"{shown}: database {path!r} is not a number")
        db = int(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"prefix", "ca"})
    if unknown:
        raise ValueError(f"{shown}: unknown parameter {unknown[0]!r} (prefix, ca)")
    prefix = query.get("prefix", [DEFAULT_PREFIX])[-1]
    if not isDotted(prefix):
        raise ValueError(
            f"{shown}: prefix {prefix!r} is not dot-separated letters, digits, _ or -"
        )
    ca = query.get("ca", [None])[-1] or None
    if ca is not None and parts.scheme != "rediss":
        raise ValueError(f"{shown}: ca= needs rediss://")
    return BackplaneURL(
        tls=parts.scheme == "rediss",
        host=host,
        port=port if port is not None else 6379,
        db=db,
        prefix=prefix,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca=ca,
    )


@frozen
class Message:
    """
    One message from the backplane, decoded.

    @ivar node: The publishing hub, or C{None} for an external publisher.
    @ivar seq: The hub's message number (0 for external ones).
    @ivar identity: Who published the lines.
    @ivar lines: The lines, control characters escaped.
    """

    node: bytes | None
    seq: int
    identity: bytes
    lines: list[bytes]


def encodeMessage(
    node: bytes, seq: int, identity: bytes, lines: Sequence[bytes]
) -> bytes:
    """
    A hub's message: the header line, then the lines.
    """
    return b"%s %s %d %s\n%s" % (HEADER, node, seq, identity, b"\n".join(lines))


def decodeMessage(payload: bytes) -> Message | None:
    """
    Decode a payload from the backplane: a hub's message, or plain text.

    @return: The message, or C{None} when it is a malformed hub message or
        has no lines.
    """
    if payload.startswith(HEADER + b" "):
        head, _, body = payload.partition(b"\n")
        parts = head.split(b" ")
        if (
            len(parts) != 4
            or not isNode(parts[1])
            or not parts[2].isdigit()
            or not isIdentity(parts[3])
            or not body
        ):
            return None
        return Message(parts[1], int(parts[2]), parts[3], escapeLines(body))
    sender, text = splitSender(payload)
    lines = textLines(text)
    if not lines:
        return None
    return Message(None, 0, sender or EXTERNAL_IDENTITY, lines)


class IBackplane(Interface):
    """
    What a hub sees of its backplane.
    """

    def attach(receiver: Receiver) -> None:
        """
        Hand the lines of other nodes to C{receiver(topic, identity, lines)}.
        """

    def publish(topic: bytes, identity: bytes, lines: Sequence[bytes]) -> None:
        """
        Send lines published on this node to the other nodes.  Never blocks
        and never fails: what cannot be sent is dropped and counted.
        """


class _Backplane(Service):
    """
    What every backplane does: encode, decode, drop echoes and duplicates,
    count.

    @ivar node: This node's name in its messages.
    @ivar up: Whether lines cross to and from the other nodes now.
    @ivar sentLines: Lines handed to the other nodes.
    @ivar receivedLines: Lines from other nodes handed to the hub.
    @ivar dropped: Lines dropped, by reason.
    @ivar gaps: Messages of other nodes that never arrived (their numbers
        were skipped).
    """

    _log = Logger()
    up = False

    def __init__(
        self,
        prefix: str,
        metrics: IMetrics,
        maxLine: int = 4096,
        node: bytes | None = None,
        serviceName: str = SERVICE_NAME,
    ) -> None:
        self.setName(serviceName)
        self.serviceName = serviceName
        self.prefix = prefix.encode("ascii")
        self.channelStart = self.prefix + b"."
        self.metrics = metrics
        self.maxLine = maxLine
        self.node = node if node is not None else secrets.token_hex(8).encode()
        self.seq = 0
        self.sentLines = 0
        self.receivedLines = 0
        self.gaps = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._receiver: Receiver | None = None
        self._lastSeq: OrderedDict[bytes, int] = OrderedDict()
        metrics.addCollector(self._collect)

    def _collect(self) -> list[Any]:
        service = self.serviceName
        samples = [
            sampleOf("netdemo_backplane_up", 1 if self.isUp() else 0, service=service),
            sampleOf(
                "netdemo_backplane_sent_lines_total", self.sentLines, service=service
            ),
            sampleOf(
                "netdemo_backplane_received_lines_total",
                self.receivedLines,
                service=service,
            ),
            sampleOf("netdemo_backplane_gaps_total", self.gaps, service=service),
            sampleOf(
                "netdemo_backplane_queued_bytes", self.queuedBytes, service=service
            ),
        ]
        samples.extend(
            sampleOf(
                "netdemo_backplane_dropped_total", count, service=service, reason=reason
            )
            for reason, count in self.dropped.items()
        )
        return samples

    @property
    def queuedBytes(self) -> int:
        """
        Bytes waiting to be sent.
        """
        return 0

    def isUp(self) -> bool:
        """
        Whether lines cross to and from the other nodes now.
        """
        return self.up

    def attach(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def publish(self, topic: bytes, identity: bytes, lines: Sequence[bytes]) -> None:
        self.seq += 1
        self.send(
            self.channelStart + topic,
            encodeMessage(self.node, self.seq, identity, lines),
            len(lines),
        )

    def send(self, channel: bytes, payload: bytes, lines: int) -> None:
        """
        Send one message (C{lines} lines) to every node.
        """
        raise NotImplementedError()

    def messageReceived(self, channel: bytes, payload: bytes) -> None:
        """
        A message came from the backplane: hand it to the hub unless it is
        this node's own, a duplicate, or malformed.
        """
        message = decodeMessage(payload)
        topic = channel[len(self.channelStart) :]
        if (
            message is None
            or not channel.startswith(self.channelStart)
            or not isTopic(topic)
        ):
            self.dropped["bad-message"] += 1 if message is None else len(message.lines)
            return
        node = message.node
        if node is not None:
            if node == self.node:
                return
            last = self._lastSeq.pop(node, None)
            if last is not None and message.seq <= last:
                self._lastSeq[node] = last
                self.dropped["duplicate"] += len(message.lines)
                return
            if last is not None and message.seq > last + 1:
                self.gaps += message.seq - last - 1
            self._lastSeq[node] = message.seq
            if len(self._lastSeq) > MAX_NODES:
                self._lastSeq.popitem(last=False)
        lines = message.lines
        if max(map(len, lines)) > self.maxLine:
            kept = [line for line in lines if len(line) <= self.maxLine]
            self.dropped["too-long"] += len(lines) - len(kept)
            if not kept:
                return
            lines = kept
        receiver = self._receiver
        if receiver is None:
            return
        self.receivedLines += len(lines)
        receiver(topic, message.identity, lines)


class MemoryBus:
    """
    A Redis stand-in for tests: delivers every message to every member,
    synchronously, while it is up.

    @ivar up: Whether messages are delivered.
    @ivar copies: How many times each message is delivered (2 to test that
        duplicates are dropped).
    @ivar sent: Every C{(channel, payload)} sent while up.
    """

    def __init__(self) -> None:
        self.members: list[MemoryBackplane] = []
        self.up = True
        self.copies = 1
        self.sent: list[tuple[bytes, bytes]] = []

    def publish(self, channel: bytes, payload: bytes) -> None:
        """
        Deliver one message to every member (the sender included, as Redis
        does).
        """
        self.sent.append((channel, payload))
        for _ in range(self.copies):
            for member in list(self.members):
                if member.running:
                    member.messageReceived(channel, payload)


@implementer(IBackplane)
class MemoryBackplane(_Backplane):
    """
    A backplane on a L{MemoryBus}.
    """

    def __init__(
        self,
        bus: MemoryBus,
        metrics: IMetrics,
        prefix: str = DEFAULT_PREFIX,
        maxLine: int = 4096,
        node: bytes | None = None,
    ) -> None:
        super().__init__(prefix, metrics, maxLine, node)
        self.bus = bus
        bus.members.append(self)

    def isUp(self) -> bool:
        return bool(self.running) and self.bus.up

    def send(self, channel: bytes, payload: bytes, lines: int) -> None:
        if not self.isUp():
            self.dropped["down"] += lines
            return
        self.sentLines += lines
        self.bus.publish(channel, payload)


class _ReportingEndpoint:
    """
    A client endpoint that tells the backplane when a connection attempt
    fails, and reads as the Redis URL in Twisted's retry messages.
    """

    def __init__(
        self, endpoint: IStreamClientEndpoint, backplane: RedisBackplane
    ) -> None:
        self.endpoint = endpoint
        self.backplane = backplane

    def connect(self, factory: Any) -> Deferred[Any]:
        """
        Connect, reporting a failure to the backplane.
        """

        def failed(failure: Failure) -> Failure:
            self.backplane.connectionFailed(failure)
            return failure

        return self.endpoint.connect(factory).addErrback(failed)

    def __repr__(self) -> str:
        return self.backplane.url.display()


@implementer(IBackplane)
class RedisBackplane(_Backplane):
    """
    The backplane on Redis pub/sub, through C{txredisapi}: one connection
    publishes, one subscribes to C{PREFIX.*} by pattern.  Both reconnect
    with exponential backoff (txredisapi's: 1 s growing to 10 s, with
    jitter).

    Publishing never waits: messages queue for the publishing connection,
    at most C{WINDOW} commands are unanswered at once, and past C{maxQueue}
    queued bytes new messages are dropped.  While Redis is unreachable,
    messages are dropped at once (at most once: nothing is replayed).

    @ivar url: Where Redis is.
    """

    def __init__(
        self,
        url: BackplaneURL,
        metrics: IMetrics,
        reactor: Any,
        maxQueue: int = DEFAULT_QUEUE,
        maxLine: int = 4096,
        node: bytes | None = None,
    ) -> None:
        super().__init__(url.prefix, metrics, maxLine, node)
        self.url = url
        self.reactor = reactor
        self.maxQueue = maxQueue
        self.publisher: Any = None
        self.subscriber: Any = None
        self.inFlight = 0
        self._queue: deque[tuple[bytes, bytes, int]] = deque()
        self._queued = 0
        self._factories: list[Any] = []
        self._outage = False
        self._refused = False
        self._stopping = False

    @property
    def queuedBytes(self) -> int:
        return self._queued

    # Publishing.

    def send(self, channel: bytes, payload: bytes, lines: int) -> None:
        if self.publisher is None:
            self.dropped["down"] += lines
            return
        if self._queue or self.inFlight >= WINDOW:
            if self._queued + len(payload) > self.maxQueue:
                self.dropped["queue-full"] += lines
                return
            self._queue.append((channel, payload, lines))
            self._queued += len(payload)
            return
        self._publish(channel, payload, lines)

    def _publish(self, channel: bytes, payload: bytes, lines: int) -> None:
        try:
            d = self.publisher.execute_command("PUBLISH", channel, payload)
        except Exception:
            self.dropped["down"] += lines
            return
        self.inFlight += 1
        d.addCallbacks(
            self._published,
            self._notPublished,
            callbackArgs=(lines,),
            errbackArgs=(lines,),
        )

    def _published(self, result: object, lines: int) -> None:
        self.inFlight -= 1
        if isinstance(result, Exception):
            self.dropped["error"] += lines
        else:
            self.sentLines += lines
        self._pump()

    def _notPublished(self, failure: Failure, lines: int) -> None:
        self.inFlight -= 1
        self.dropped["down" if self.publisher is None else "error"] += lines
        self._pump()

    def _pump(self) -> None:
        """
        Send queued messages while the window allows.
        """
        queue = self._queue
        while queue and self.inFlight < WINDOW and self.publisher is not None:
            channel, payload, lines = queue.popleft()
            self._queued -= len(payload)
            self._publish(channel, payload, lines)

    def _dropQueue(self) -> None:
        for _, _, lines in self._queue:
            self.dropped["down"] += lines
        self._queue.clear()
        self._queued = 0

    # Connection state.

    def publisherReady(self, protocol: Any) -> None:
        """
        The publishing connection is usable.
        """
        self.publisher = protocol
        self._check()
        self._pump()

    def subscribed(self, protocol: Any) -> None:
        """
        The subscribing connection listens to C{PREFIX.*}.
        """
        self.subscriber = protocol
        self._check()

    def connectionLost(self, protocol: Any, reason: Failure) -> None:
        """
        One of the connections is gone; its slot reconnects by itself.
        """
        if protocol is self.publisher:
            self.publisher = None
            self._dropQueue()
        elif protocol is self.subscriber:
            self.subscriber = None
        else:
            return
        self._down(reason)

    def connectionFailed(self, reason: Failure) -> None:
        """
        A connection attempt failed.
        """
        self._down(reason)

    def _check(self) -> None:
        if self.publisher is None or self.subscriber is None or self.up:
            return
        self.up = True
        self._outage = False
        self._log.info(
            "backplane: connected to {url} as node {node}",
            event="backplane_up",
            url=self.url.display(),
            node=self.node.decode(),
        )

    def _down(self, reason: Failure) -> None:
        self.up = False
        if self._outage or self._stopping:
            return
        self._outage = True
        self.metrics.inc("netdemo_backplane_outages_total", service=self.serviceName)
        self._log.error(
            "backplane: {url} unreachable ({reason}); local delivery continues, "
            "lines published meanwhile do not reach other hubs; retrying",
            event="backplane_down",
            url=self.url.display(),
            reason=reason.getErrorMessage(),
        )

    def authFailed(self, why: str) -> None:
        """
        Redis refused the password or the database: txredisapi stops
        retrying.
        """
        self.up = False
        if self._refused:
            return
        self._refused = self._outage = True
        self._log.error(
            "backplane: {url} refused us ({why}); not retrying",
            event="backplane_refused",
            url=self.url.display(),
            why=why,
        )

    # Service.

    def endpoint(self) -> IStreamClientEndpoint:
        """
        The client endpoint for the URL: TCP, or TLS over TCP.
        """
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
        from twisted.internet.ssl import (
            Certificate,
            optionsForClientTLS,
            platformTrust,
        )

        endpoint: Any = HostnameEndpoint(
            self.reactor, self.url.host, self.url.port, timeout=10
        )
        if self.url.tls:
            trust: Any = platformTrust()
            if self.url.ca is not None:
                with open(self.url.ca, "rb") as f:
                    trust = Certificate.loadPEM(f.read())
            endpoint = wrapClientTLS(
                optionsForClientTLS(self.url.host, trustRoot=trust), endpoint
            )
        return cast(IStreamClientEndpoint, endpoint)

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        endpoint: Any = _ReportingEndpoint(self.endpoint(), self)
        publisherFactory, subscriberFactory = _redisFactories()
        self._factories = [publisherFactory(self), subscriberFactory(self)]
        for factory in self._factories:
            factory.startConnecting(endpoint)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        self.up = False
        factories, self._factories = self._factories, []
        if not factories:
            return succeed(None)
        from twisted.internet.defer import gatherResults

        d = gatherResults([f.disconnect() for f in factories], consumeErrors=True)
        return d.addBoth(lambda _: None)


def buildBackplaneService(
    url: BackplaneURL,
    metrics: IMetrics,
    reactor: IReactorTime,
    maxQueue: int = DEFAULT_QUEUE,
    maxLine: int = 4096,
) -> RedisBackplane:
    """
    Build the Redis backplane service (named C{backplane}); hand it to
    L{netdemo.pubsub.buildPubSubService} too.

    @param url: Where Redis is, the password included.
    @param metrics: Where to report.
    @param reactor: The reactor to connect with.
    @param maxQueue: Bytes that may wait to be sent to Redis.
    @param maxLine: The hub's longest line: longer ones from Redis are
        dropped.
    """
    return RedisBackplane(url, metrics, reactor, maxQueue, maxLine)


@functools.cache
def _redisFactories() -> tuple[
    Callable[[RedisBackplane], Any], Callable[[RedisBackplane], Any]
]:
    """
    The factories of a L{RedisBackplane}'s two connections, on
    C{txredisapi}: built at the first start, not at import (C{txredisapi}
    imports the global reactor).

    Both connections are made with C{factory.startConnecting(endpoint)}, the
    library's supported way (its factories are not C{ClientFactory}s, so the
    old C{reactor.connectTCP} recipe fails): a C{ClientService} per
    connection reconnects with backoff.  Payloads stay bytes
    (C{charset=None}) and are never taken for numbers
    (C{convertNumbers=False}).

    C{hiredis} is a dependency: with it importable,
    C{txredisapi.RedisProtocol} is its C{HiredisProtocol}, which parses a
    whole read at once; the pure-Python parser pauses the transport and
    waits a reactor turn after every bulk string.

    @return: A function building the publishing connection's factory (it
        selects the URL's database) and one building the subscribing
        connection's, each from the backplane.
    """
    import txredisapi

    class Reporting:
        """
        What both connections do: tell the backplane once usable, and when
        lost.
        """

        factory: Any
        connected: int

        def connectionMade(self) -> Any:
            d = super().connectionMade()  # type: ignore[misc]
            self.whenConnected().addCallback(self._usable)  # type: ignore[attr-defined]
            return d

        def _usable(self, protocol: Any) -> None:
            # Not from inside makeConnection (txredisapi's own pool waits a
            # turn for the same reason): ClientService does not know this
            # connection yet.
            self.factory.backplane.reactor.callLater(0, self.usable)

        def usable(self) -> None:
            """
            The connection is usable.
            """

        def connectionLost(self, why: Failure) -> None:
            self.factory.backplane.connectionLost(self, why)
            super().connectionLost(why)  # type: ignore[misc]

    class Publisher(Reporting, txredisapi.RedisProtocol):  # type: ignore[misc]
        """
        The connection that publishes.
        """

        def usable(self) -> None:
            if self.connected:
                self.factory.backplane.publisherReady(self)

    class Subscriber(Reporting, txredisapi.SubscriberProtocol):  # type: ignore[misc]
        """
        The connection that subscribes to C{PREFIX.*} by pattern.
        """

        def usable(self) -> None:
            if not self.connected:
                return
            backplane = self.factory.backplane
            # psubscribe takes a list: given bytes, it iterates them.
            d = self.psubscribe([backplane.channelStart + b"*"])

            def subscribed(reply: object) -> None:
                if isinstance(reply, Exception):
                    failed(Failure(reply))
                else:
                    backplane.subscribed(self)

            def failed(failure: Failure) -> None:
                # LOADING, a closed connection...: start over.
                if self.transport is not None:
                    self.transport.loseConnection()

            d.addCallbacks(subscribed, failed)

        def messageReceived(
            self, pattern: bytes, channel: bytes, message: bytes
        ) -> None:
            self.factory.backplane.messageReceived(channel, message)

    class PublisherFactory(txredisapi.RedisFactory):  # type: ignore[misc]
        """
        Builds the publishing connection; a refused password or database
        stops it.
        """

        protocol = Publisher

        def connectionError(self, why: str) -> None:
            self.backplane.authFailed(why)
            super().connectionError(why)

    class SubscriberFactory(txredisapi.SubscriberFactory):  # type: ignore[misc]
        """
        Builds the subscribing connection; a refused password stops it.
        """

        protocol = Subscriber

        def connectionError(self, why: str) -> None:
            self.backplane.authFailed(why)
            super().connectionError(why)

    def prepare(factory: Any, backplane: RedisBackplane) -> Any:
        """
        Give a factory its backplane and the URL's credentials; bytes in and
        out.
        """
        url = backplane.url
        factory.backplane = backplane
        factory.charset = None
        factory.convertNumbers = False
        factory.password = url.password
        factory.username = url.username
        # Nobody waits for the pool to fill; a refused password ends up here.
        factory.deferred.addErrback(lambda failure: None)
        return factory

    def publisherFactory(backplane: RedisBackplane) -> Any:
        """
        The factory of the publishing connection (it selects the URL's
        database).
        """
        url = backplane.url
        factory = PublisherFactory(
            url.display(),
            url.db,
            1,
            isLazy=True,
            charset=None,
            password=url.password,
            convertNumbers=False,
            username=url.username,
        )
        return prepare(factory, backplane)

    def subscriberFactory(backplane: RedisBackplane) -> Any:
        """
        The factory of the subscribing connection.
        """
        return prepare(SubscriberFactory(isLazy=True), backplane)

    return publisherFactory, subscriberFactory
