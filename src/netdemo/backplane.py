# -*- test-case-name: tests.test_backplane,tests.test_backplane_limits -*-
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

What comes from Redis is as untrusted as what comes from a socket, and
bounded the same way (L{netdemo.limits.BackplaneLimits}): a message longer
than C{maxMessage} bytes is refused as a whole (on the Redis connection its
bytes are dropped as they arrive, L{SubscriberReader}, so it is never held in
memory); lines longer than the hub's C{--max-line} are dropped; and a
message whose delivery would hand one subscriber more than the hub's
C{--max-pending} at once is refused.  A hub splits its own publications so
that the other hubs never refuse them.  Redis is pinged on both connections
(C{pingInterval}, C{pingTimeout}): a Redis that stops answering (frozen,
partitioned) is reported down and the connections are made again.

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
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import evolve, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from netdemo.hubwire import (
    MAX_SEQ_DIGITS,
    MAX_TOPIC,
    escapeControls,
    escapeLines,
    isDotted,
    isIdentity,
    isNode,
    isTopic,
    linePrefix,
    splitSender,
    textLines,
)
from netdemo.limits import BackplaneLimits, HubLimits
from netdemo.logs import RateLimitedLog
from netdemo.metrics import IMetrics, sampleOf
from netdemo.streams import (
    EPOCH_SCRIPT,
    PUBLISH_SCRIPT,
    READ_SCRIPT,
    Script,
    isEpoch,
    metaKey,
    parsePublishAnswer,
    parseReadAnswer,
    seqField,
    streamKey,
)

__all__ = [
    "BackplaneURL",
    "IBackplane",
    "MemoryBackplane",
    "MemoryBus",
    "Message",
    "RedisBackplane",
    "SubscriberReader",
    "buildBackplaneService",
    "decodeMessage",
    "encodeMessage",
    "parseBackplaneURL",
]

SERVICE_NAME = "backplane"

#: The first token of a hub's message.
HEADER = b"netdemo/1"

#: The first token of a hub's message numbered by Redis (shared history,
#: L{netdemo.streams}): its header also carries the topic's first number and
#: the epoch.
HEADER_NUMBERED = b"netdemo/2"

#: Room the first number and the epoch take in a numbered message's header.
_NUMBERED_ROOM = 20 + 64 + 2

#: Reads of the shared history unanswered at once, at most.
MAX_READS = 64

#: The hub's own messages whose sender is remembered until they come back
#: through the subscription, at most.
MAX_ORIGINS = 4096

#: The channel prefix when the URL gives none.
DEFAULT_PREFIX = "netdemo"

#: The identity of lines published to Redis without one.
EXTERNAL_IDENTITY = b"redis"

#: PUBLISH commands sent and not yet answered, at most.
WINDOW = 256

#: Nodes whose last message number is remembered.
MAX_NODES = 4096

#: Why lines are dropped, as the C{reason} label says (C{too-large} counts
#: messages: their lines are never read).
DROP_REASONS = (
    "down",
    "queue-full",
    "error",
    "duplicate",
    "bad-message",
    "too-long",
    "too-large",
    "epoch",
)

#: Numbered messages held while their epoch is checked with Redis, at most.
MAX_AWAITING = 1024

#: Epochs replaced by a newer one that are remembered (their messages, still
#: in flight, are dropped without asking Redis).
MAX_RETIRED = 16

#: Room for a message's header line: C{netdemo/1}, the node, the number (20
#: digits at most), the identity, three spaces and the LF.
_HEADER_ROOM = len(HEADER) + 24

#: How much longer than the hub's longest line the largest message must be
#: (C{--backplane-max-message}): room for the header of a message of one
#: line.
MESSAGE_ROOM = 256

#: Bulk strings start with these RESP type bytes (C{$}, and RESP3's C{=}
#: and C{!}): a length line, then that many bytes and a CRLF.
_BULK_TYPES = frozenset(b"$=!")

#: Arrays (C{*}, and RESP3's sets, pushes and maps) start with these: a
#: count line, then that many elements (twice that many for a map).
_AGGREGATE_TYPES = frozenset(b"*~>%")

#: The longest prefix of a delivered line: C{[TOPIC] <IDENTITY> }, with a
#: 255-byte topic and a 64-byte identity.
_MAX_PREFIX = len(linePrefix(b"t" * MAX_TOPIC, b"i" * 64))

#: The most one byte of a payload from Redis can cost each subscriber: a
#: line of its own with the longest prefix and its LF, or a control
#: character escaped as C{\\xHH}.
_WORST_BYTE = _MAX_PREFIX + 5

#: How a pub/sub message that matched a pattern starts.
_PMESSAGE = b"*4\r\n$8\r\npmessage\r\n"

Receiver = Callable[[bytes, bytes, list[bytes]], None]

#: Takes lines numbered by Redis: topic, identity, lines, the first number
#: (0: not numbered, delivered on this hub only), the epoch, the local
#: client that published them (or L{None}), and whether they come with the
#: script's answer (C{True}) or through the subscription; answers whether
#: it delivered them.
OrderedReceiver = Callable[[bytes, bytes, list[bytes], int, bytes, object, bool], bool]


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
    @ivar first: The number of the first line on its topic, given by Redis
        (shared history), or 0.
    @ivar epoch: The epoch of that number, or empty.
    """

    node: bytes | None
    seq: int
    identity: bytes
    lines: list[bytes]
    first: int = 0
    epoch: bytes = b""


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
    numbered = payload.startswith(HEADER_NUMBERED + b" ")
    if numbered or payload.startswith(HEADER + b" "):
        head, _, body = payload.partition(b"\n")
        parts = head.split(b" ")
        if (
            len(parts) != (6 if numbered else 4)
            or not isNode(parts[1])
            or not parts[2].isdigit()
            or not isIdentity(parts[3])
            or not body
        ):
            return None
        if not numbered:
            return Message(parts[1], int(parts[2]), parts[3], escapeLines(body))
        if (
            not parts[4].isdigit()
            or len(parts[4]) > MAX_SEQ_DIGITS
            or not isEpoch(parts[5])
            or not int(parts[4])
        ):
            return None
        return Message(
            parts[1],
            int(parts[2]),
            parts[3],
            escapeLines(body),
            int(parts[4]),
            parts[5],
        )
    sender, text = splitSender(payload)
    lines = textLines(text)
    if not lines:
        return None
    return Message(None, 0, sender or EXTERNAL_IDENTITY, lines)


class SubscriberReader:
    """
    The bytes the subscribing Redis connection reads, on their way to the
    RESP parser: the pub/sub messages among them are taken out here, the
    rest passes on unchanged, and no bulk string longer than C{maxBulk}
    bytes is ever held.

    Only the framing is read, never the bytes of a bulk string: every RESP
    element starts with a line (a type byte and a length, a number or a
    simple string, then CRLF), and after a bulk string's line come its
    length in bytes and a CRLF.  An array's line says how many elements
    follow.  The cost is a few operations per element, none per byte.

      - A complete C{pmessage} reply (C{*4}, C{pmessage}, the pattern, the
        channel, the payload) within the bound comes out as a
        C{(channel, payload)} tuple: the parser and C{txredisapi}'s reply
        handling never see it, which saves more than this costs.
      - A bulk string longer than C{maxBulk} is dropped as its bytes
        arrive, and the parser gets the integer reply C{:SIZE} in its
        place: a message whose payload is too large reaches
        C{messageReceived} as its size (an C{int}).  The parsers the
        connection would otherwise use (C{hiredis}, C{txredisapi}'s own)
        hold a whole bulk string, whatever its size, before anything can
        look at it: up to Redis's C{proto-max-bulk-len} (512 MB by default).
      - Everything else (the answers to C{PSUBSCRIBE} and C{PING}, a
        message cut by the end of a read) passes on to the parser as it is.

    A line that is not complete yet is held back, at most L{MAX_LINE} bytes.

    @ivar refused: How many bulk strings were dropped.
    """

    #: The longest element line held back while incomplete.
    MAX_LINE = 1 << 16

    def __init__(self, maxBulk: int) -> None:
        self.maxBulk = maxBulk
        self.refused = 0
        # An element line not complete yet; bytes of a bulk string still to
        # come in the next reads, to pass on or to drop; elements still to
        # come in the reply the parser is reading.
        self._partial = b""
        self._passing = 0
        self._dropping = 0
        self._owed = 0

    def feed(self, data: bytes) -> list[bytes | tuple[bytes, bytes]]:
        """
        Take the bytes of one read.

        @return: In order, the bytes to hand to the parser and the
            C{(channel, payload)} of the messages taken out.
        @raise ValueError: When the bytes are not RESP: a line longer than
            L{MAX_LINE}, or a length that is not a number.
        """
        if self._partial:
            data = self._partial + data
            self._partial = b""
        size = len(data)
        # Where the next element starts; past the end while a bulk string
        # goes on into the next read.
        pos = self._passing
        start = 0
        dropping = self._dropping
        if dropping:
            if dropping > size:
                self._dropping = dropping - size
                return []
            pos = start = dropping
            self._dropping = 0
        out: list[bytes | tuple[bytes, bytes]] = []
        find = data.find
        startswith = data.startswith
        maxBulk = self.maxBulk
        limit = self.MAX_LINE
        owed = self._owed
        while pos < size:
            if not owed and startswith(_PMESSAGE, pos):
                # A whole message in this read: take it out.
                spans = []
                at = pos + len(_PMESSAGE)
                for _ in range(3):
                    end = find(b"\r\n", at, at + 21)
                    if end < 0 or data[at] != 0x24:  # "$"
                        break
                    length = int(data[at + 1 : end])
                    at = end + length + 4
                    if not 0 <= length <= maxBulk or at > size:
                        break
                    spans.append((end + 2, at - 2))
                else:
                    if start < pos:
                        out.append(data[start:pos])
                    (_, _), (c0, c1), (p0, p1) = spans
                    out.append((data[c0:c1], data[p0:p1]))
                    pos = start = at
                    continue
            end = find(b"\r\n", pos, pos + limit)
            if end < 0:
                if size - pos >= limit:
                    raise ValueError(f"a RESP line longer than {limit} bytes")
                self._partial = data[pos:]
                break
            if owed:
                owed -= 1
            kind = data[pos]
            if kind in _BULK_TYPES:
                # int() refuses what is not a number; what it takes and
                # Redis would never send (" 5", "+5") the parser refuses.
                length = int(data[pos + 1 : end])
                if length > maxBulk:
                    if start < pos:
                        out.append(data[start:pos])
                    out.append(b":%d\r\n" % length)
                    self.refused += 1
                    pos = start = end + length + 4
                    if pos > size:
                        self._dropping = pos - size
                        start = size
                elif length >= 0:
                    pos = end + length + 4
                else:
                    pos = end + 2
                continue
            if kind in _AGGREGATE_TYPES:
                count = int(data[pos + 1 : end])
                if count > 0:
                    owed += count * (2 if kind == 0x25 else 1)  # "%": pairs
            pos = end + 2
        self._owed = owed
        self._passing = max(pos - size, 0)
        stop = size - len(self._partial)
        if start < stop:
            out.append(data if start == 0 and stop == size else data[start:stop])
        return out


class IBackplane(Interface):
    """
    What a hub sees of its backplane.
    """

    def attach(receiver: Receiver) -> None:
        """
        Hand the lines of other nodes to C{receiver(topic, identity, lines)}.
        """

    def attachOrdered(
        receiver: OrderedReceiver, epochSeen: Callable[[bytes], None]
    ) -> None:
        """
        Hand lines numbered by Redis (shared history) to C{receiver}, and
        Redis's epoch, whenever it is learnt, to C{epochSeen}.
        """

    def publish(
        topic: bytes, identity: bytes, lines: Sequence[bytes], origin: object = None
    ) -> bool:
        """
        Send lines published on this node to the other nodes.  Never blocks
        and never fails: what cannot be sent is dropped and counted.

        @param origin: The local client that published them.
        @return: Whether the backplane delivers them to this node too, once
            Redis has numbered them (to the L{OrderedReceiver}); if not, the
            hub delivers them itself, now.
        """


class _Backplane(Service):
    """
    What every backplane does: encode, split, decode, bound, drop echoes
    and duplicates, count.

    @ivar maxLine: The hub's longest line: longer ones from other nodes are
        dropped.
    @ivar maxPending: The hub's C{--max-pending}: a message whose delivery
        would hand one subscriber more is refused (and this node's own
        publications are split so that other nodes need not refuse them).
    @ivar maxMessage: The largest message taken from or sent to the other
        nodes, in bytes.
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
    #: Whether numbered messages are handed on with their numbers (else this
    #: node cannot use the shared history, and delivers them unnumbered).
    numbering = True

    def __init__(
        self,
        prefix: str,
        metrics: IMetrics,
        hubLimits: HubLimits,
        limits: BackplaneLimits,
        seconds: Callable[[], float],
        node: bytes | None = None,
        serviceName: str = SERVICE_NAME,
    ) -> None:
        self.setName(serviceName)
        self.serviceName = serviceName
        self.prefix = prefix.encode("ascii")
        self.channelStart = self.prefix + b"."
        self.metrics = metrics
        self.maxLine = hubLimits.maxLine
        self.maxPending = hubLimits.maxPending
        self.maxMessage = limits.maxMessage
        # Payloads up to this size cannot hand a subscriber more than
        # maxPending, whatever they hold: no need to count.
        self._smallPayload = self.maxPending // _WORST_BYTE - 1
        self._refusals = RateLimitedLog(self._log, seconds)
        self.node = node if node is not None else secrets.token_hex(8).encode()
        self.seq = 0
        self.sentLines = 0
        self.receivedLines = 0
        self.gaps = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._receiver: Receiver | None = None
        self._ordered: OrderedReceiver | None = None
        self._epochSeen: Callable[[bytes], None] | None = None
        # This node's numbered messages not yet back from the subscription:
        # their number -> the local client that published them.
        self._origins: dict[int, object] = {}
        # The highest number of this node's numbered messages that came
        # back through the subscription: Redis ran their scripts.
        self._echoed = 0
        # This node's numbered messages delivered at the script's answer:
        # when they come back, they are dropped unread.
        self._skipEcho: dict[int, object] = {}
        self._ownNumbered = b"%s %s " % (HEADER_NUMBERED, self.node)
        self._ownPlain = b"%s %s " % (HEADER, self.node)
        # The shared history's epoch, as last learnt from Redis, and the one
        # to store when Redis has none.
        self.epoch = b""
        self.epochCandidate = newEpoch()
        self.epochChanges = 0
        self._retired: dict[bytes, None] = {}
        # Numbered messages of an epoch not confirmed by Redis yet.
        self._awaiting: deque[tuple[bytes, Message, object]] = deque()
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

    def attachOrdered(
        self, receiver: OrderedReceiver, epochSeen: Callable[[bytes], None]
    ) -> None:
        """
        Hand lines numbered by Redis (shared history) to C{receiver}, and
        the epoch Redis has, whenever it is learnt, to C{epochSeen}.
        """
        self._ordered = receiver
        self._epochSeen = epochSeen

    def publish(
        self,
        topic: bytes,
        identity: bytes,
        lines: Sequence[bytes],
        origin: object = None,
    ) -> bool:
        self._publishPlain(topic, identity, lines)
        return False

    def _publishPlain(
        self, topic: bytes, identity: bytes, lines: Sequence[bytes]
    ) -> None:
        """
        Publish lines as a plain hub message (C{netdemo/1}), split if need
        be.
        """
        channel = self.channelStart + topic
        count = len(lines)
        self.seq += 1
        payload = encodeMessage(self.node, self.seq, identity, lines)
        size = len(payload)
        # What a receiving hub hands each subscriber is at most the payload
        # plus one prefix per line (the header is longer than the last LF).
        maxPending = self.maxPending
        if size <= self.maxMessage and (
            size + count * _MAX_PREFIX <= maxPending
            or size + count * len(linePrefix(topic, identity)) <= maxPending
        ):
            self.send(channel, payload, count)
            return
        prefix = len(linePrefix(topic, identity))
        self.seq -= 1
        for part in self._split(lines, prefix, len(self.node) + len(identity)):
            self.seq += 1
            message = encodeMessage(self.node, self.seq, identity, part)
            self.send(channel, message, len(part))

    def _split(
        self, lines: Sequence[bytes], prefix: int, names: int
    ) -> list[Sequence[bytes]]:
        """
        Split a publication into parts that each make a message of at most
        C{maxMessage} bytes and hand a subscriber at most C{maxPending}.

        @param prefix: The length of the prefix of each line as delivered.
        @param names: The length of the node and identity in the header.
        """
        room = _HEADER_ROOM + names
        parts: list[Sequence[bytes]] = []
        start = 0
        size = delivered = room
        for i, line in enumerate(lines):
            cost = len(line) + 1
            if i > start and (
                size + cost > self.maxMessage
                or delivered + cost + prefix > self.maxPending
            ):
                parts.append(lines[start:i])
                start = i
                size = delivered = room
            size += cost
            delivered += cost + prefix
        parts.append(lines[start:])
        return parts

    def send(self, channel: bytes, payload: bytes, lines: int) -> None:
        """
        Send one message (C{lines} lines) to every node.
        """
        raise NotImplementedError()

    def messageReceived(self, channel: bytes, payload: bytes) -> None:
        """
        A message came from the backplane: hand it to the hub unless it is
        this node's own, a duplicate, malformed or too large.
        """
        if len(payload) > self.maxMessage:
            self.messageTooLarge(channel, len(payload))
            return
        if payload.startswith(self._ownPlain):
            # This node's own plain message, back: dropped unread.
            return
        if self._skipEcho and payload.startswith(self._ownNumbered):
            # This node's own batch, back: if it was delivered already, its
            # number says so, without reading its lines.
            start = len(self._ownNumbered)
            number = payload[start : payload.find(b" ", start)]
            if number.isdigit():
                seq = int(number)
                self._echoed = max(self._echoed, seq)
                if seq in self._skipEcho:
                    del self._skipEcho[seq]
                    return
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
                if message.first and self._ordered is not None:
                    self._echoed = max(self._echoed, message.seq)
                    origin = self._origins.pop(message.seq, None)
                    self._numbered(topic, message, origin)
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
            if message.first:
                # Numbered lines go whole or not at all.
                kept = []
            self.dropped["too-long"] += len(lines) - len(kept)
            if not kept:
                return
            lines = kept
        if len(payload) > self._smallPayload:
            prefix = linePrefix(topic, message.identity)
            delivered = sum(map(len, lines)) + len(lines) * (len(prefix) + 1)
            if delivered > self.maxPending:
                bound = self.maxPending
                self._refuse(
                    channel, delivered, "to each subscriber", "--max-pending", bound
                )
                return
        if message.first and self._ordered is not None:
            self.receivedLines += len(lines)
            if len(lines) != len(message.lines):
                message = evolve(message, lines=lines)
            self._numbered(topic, message, None)
            return
        receiver = self._receiver
        if receiver is None:
            return
        self.receivedLines += len(lines)
        receiver(topic, message.identity, lines)

    def _numbered(self, topic: bytes, message: Message, origin: object) -> None:
        """
        Hand a numbered message from the subscription to the hub if it is
        of the epoch Redis has; hold it while an epoch never seen is checked
        with Redis (anyone who may PUBLISH could name any epoch); drop it if
        its epoch was replaced.
        """
        assert self._ordered is not None
        epoch = message.epoch
        if not self.numbering:
            self._unnumbered(topic, message)
        elif epoch == self.epoch:
            self._ordered(
                topic,
                message.identity,
                message.lines,
                message.first,
                epoch,
                origin,
                False,
            )
        elif epoch in self._retired or len(self._awaiting) >= MAX_AWAITING:
            self.dropped["epoch"] += len(message.lines)
        else:
            self._awaiting.append((topic, message, origin))
            self.checkEpoch()

    def checkEpoch(self) -> None:
        """
        Ask Redis for its epoch (held messages wait for the answer).  Here,
        with no Redis to ask, the epoch of the first held message is taken.
        """
        if self._awaiting:
            self._noteEpoch(self._awaiting[0][1].epoch)

    def _unnumbered(self, topic: bytes, message: Message) -> None:
        """
        Hand a numbered message to the hub without its number: this node
        cannot use the shared history (Redis refused it the scripts).
        """
        if message.node != self.node and self._receiver is not None:
            self._receiver(topic, message.identity, message.lines)

    def _flushAwaiting(self) -> None:
        """
        The epoch is known: hand the held messages of it to the hub, drop
        the others.
        """
        awaiting, self._awaiting = self._awaiting, deque()
        for topic, message, origin in awaiting:
            if not self.numbering:
                self._unnumbered(topic, message)
            elif message.epoch == self.epoch and self._ordered is not None:
                self._ordered(
                    topic,
                    message.identity,
                    message.lines,
                    message.first,
                    message.epoch,
                    origin,
                    False,
                )
            else:
                self.dropped["epoch"] += len(message.lines)

    def _noteEpoch(self, epoch: bytes) -> None:
        """
        Redis's epoch is C{epoch} (from Redis itself: a script's answer, a
        read, the check): if it changed, count it and tell the hub; then
        the messages held for it go on.
        """
        if epoch == self.epoch:
            if self._awaiting:
                self._flushAwaiting()
            return
        if self.epoch:
            self._retired[self.epoch] = None
            if len(self._retired) > MAX_RETIRED:
                del self._retired[next(iter(self._retired))]
            self.epochChanges += 1
            self._log.warn(
                "backplane: the shared history's epoch changed from {old} to {new} "
                "(Redis lost it); positions of the old epoch are gone",
                event="backplane_epoch_changed",
                old=self.epoch.decode(),
                new=epoch.decode(),
            )
        self._retired.pop(epoch, None)
        self.epoch = epoch
        if epoch == self.epochCandidate:
            self.epochCandidate = newEpoch()
        if self._epochSeen is not None:
            self._epochSeen(epoch)
        if self._awaiting:
            self._flushAwaiting()

    def messageTooLarge(self, channel: bytes, size: int) -> None:
        """
        Refuse a message of C{size} bytes, more than C{maxMessage}.
        """
        self._refuse(channel, size, "long", "--backplane-max-message", self.maxMessage)

    def _refuse(
        self, channel: bytes, size: int, what: str, bound: str, limit: int
    ) -> None:
        """
        Count a refused message, and log it at a bounded rate.
        """
        self.dropped["too-large"] += 1
        shown = escapeControls(channel[: len(self.channelStart) + MAX_TOPIC])
        self._refusals.emit(
            "too-large",
            LogLevel.warn,
            "backplane: refused a message from Redis on {channel} ({size} bytes "
            "{what}, more than {bound} {limit})",
            event="backplane_too_large",
            channel=shown.decode("utf-8", "replace"),
            size=size,
            what=what,
            bound=bound,
            limit=limit,
        )


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
        hubLimits: HubLimits | None = None,
        limits: BackplaneLimits | None = None,
        node: bytes | None = None,
        seconds: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            prefix,
            metrics,
            hubLimits or HubLimits(),
            limits or BackplaneLimits(),
            seconds,
            node,
        )
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


class _Batch:
    """
    Lines of one publication on their way to the publishing script.

    @ivar seq: This node's message number.
    @ivar origin: The local client that published them.
    """

    __slots__ = ("identity", "lines", "origin", "seq", "topic")

    def __init__(
        self,
        topic: bytes,
        identity: bytes,
        lines: list[bytes],
        seq: int,
        origin: object,
    ) -> None:
        self.topic = topic
        self.identity = identity
        self.lines = lines
        self.seq = seq
        self.origin = origin


#: What the publishing connection sends: a plain message (channel, payload,
#: lines) or a batch for the script.
_Item = tuple[bytes, bytes, int] | _Batch


def _itemSize(item: _Item) -> int:
    """
    The bytes C{item} holds.
    """
    if type(item) is _Batch:
        return sum(map(len, item.lines)) + len(item.lines)
    return len(item[1])  # type: ignore[index]


def _itemLines(item: _Item) -> int:
    """
    The lines C{item} holds.
    """
    if type(item) is _Batch:
        return len(item.lines)
    return item[2]  # type: ignore[index]


def _errorText(failure: Failure) -> str:
    """
    The text of a Redis error answer.
    """
    args = getattr(failure.value, "args", None)
    text = args[0] if args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)


def newEpoch() -> bytes:
    """
    A new epoch: 16 random hexadecimal digits.
    """
    return secrets.token_hex(8).encode("ascii")


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
    at most C{WINDOW} commands are unanswered at once, and past
    C{maxQueue} bytes queued or unanswered new messages are dropped.  While
    Redis is unreachable, messages are dropped at once (at most once:
    nothing is replayed).

    Liveness: every C{pingInterval} seconds each connection that works
    sends C{PING}; a new connection must have its first commands answered
    (the password, the database, the subscription, a C{PING}) before it
    counts.  Redis has C{pingTimeout} seconds to answer; if it does not
    (frozen, or the network lost), the backplane is reported down and the
    connection is aborted, to be made again.

    @ivar url: Where Redis is.
    @ivar publisher: The publishing connection, once Redis answered on it.
    @ivar subscriber: The subscribing connection, once subscribed.
    @ivar inFlight: C{PUBLISH} commands sent and not answered yet.
    @ivar silentConnections: Connections given up since the backplane was
        last up because Redis did not answer on them (they slow down the
        reconnection attempts as failed attempts do).
    """

    def __init__(
        self,
        url: BackplaneURL,
        metrics: IMetrics,
        reactor: Any,
        limits: BackplaneLimits | None = None,
        hubLimits: HubLimits | None = None,
        node: bytes | None = None,
    ) -> None:
        limits = limits or BackplaneLimits()
        super().__init__(
            url.prefix, metrics, hubLimits or HubLimits(), limits, reactor.seconds, node
        )
        self.url = url
        self.reactor = reactor
        self.maxQueue = limits.maxQueue
        self.pingInterval = limits.pingInterval
        self.pingTimeout = limits.pingTimeout
        self.publisher: Any = None
        self.subscriber: Any = None
        self.inFlight = 0
        self._inFlightBytes = 0
        self._queue: deque[_Item] = deque()
        self._queued = 0
        self._factories: list[Any] = []
        self._deadlines: dict[Any, Any] = {}
        self._heartbeat: LoopingCall | None = None
        self._outage = False
        self._refused = False
        self._stopping = False
        self.silentConnections = 0
        # Shared history (netdemo.streams).
        self.streams = limits.history
        self.keep = (hubLimits or HubLimits()).history
        self.metaKey = metaKey(self.prefix)
        self._scriptsReady = False
        self._scriptsRefused = False
        self._epochCheck = False
        self.streamLines = 0
        self.localLines = 0
        self.scriptErrors = 0
        self.historyReads = 0
        self.readTimeouts = 0
        self.readsInFlight = 0

    def _collect(self) -> list[Any]:
        samples = super()._collect()
        if not self.streams:
            return samples
        service = self.serviceName
        samples.extend(
            sampleOf(name, value, service=service)
            for name, value in (
                ("netdemo_backplane_history_up", int(self.sequencing())),
                ("netdemo_backplane_stream_lines_total", self.streamLines),
                ("netdemo_backplane_local_lines_total", self.localLines),
                ("netdemo_backplane_script_errors_total", self.scriptErrors),
                ("netdemo_backplane_history_reads_total", self.historyReads),
                ("netdemo_backplane_history_read_timeouts_total", self.readTimeouts),
                ("netdemo_backplane_epoch_changes_total", self.epochChanges),
            )
        )
        return samples

    @property
    def queuedBytes(self) -> int:
        """
        Bytes waiting to be published, or published and not answered yet.
        """
        return self._queued + self._inFlightBytes

    # Publishing.

    def sequencing(self) -> bool:
        """
        Whether lines published now go through Redis's numbering (shared
        history on, the publishing connection up, the scripts loaded).
        """
        return self.publisher is not None and self._scriptsReady

    def publish(
        self,
        topic: bytes,
        identity: bytes,
        lines: Sequence[bytes],
        origin: object = None,
    ) -> bool:
        if not self.sequencing():
            if self.streams and self.publisher is None:
                # Redis down: delivered on this hub only, not numbered.
                self.localLines += len(lines)
            self._publishPlain(topic, identity, lines)
            return False
        count = len(lines)
        names = len(self.node) + len(identity) + _NUMBERED_ROOM
        size = sum(map(len, lines)) + count + _HEADER_ROOM + names
        if size <= self.maxMessage and (
            size + count * _MAX_PREFIX <= self.maxPending
            or size + count * len(linePrefix(topic, identity)) <= self.maxPending
        ):
            parts: Sequence[Sequence[bytes]] = (lines,)
        else:
            parts = self._split(lines, len(linePrefix(topic, identity)), names)
        for part in parts:
            self.seq += 1
            self._enqueue(_Batch(topic, identity, list(part), self.seq, origin))
        return True

    def send(self, channel: bytes, payload: bytes, lines: int) -> None:
        if self.publisher is None:
            self.dropped["down"] += lines
            return
        self._enqueue((channel, payload, lines))

    def _enqueue(self, item: _Item) -> None:
        """
        Send a message (a plain one, or a batch for the script) now, or queue
        it behind those waiting; past C{maxQueue} bytes it is dropped (a
        batch is then delivered here only).
        """
        size = _itemSize(item)
        waiting = self._queued + self._inFlightBytes
        if waiting and waiting + size > self.maxQueue:
            self._undelivered(item, "queue-full")
            return
        if self._queue or self.inFlight >= WINDOW:
            self._queue.append(item)
            self._queued += size
            return
        self._execute(item)

    def _execute(self, item: _Item) -> None:
        """
        Send one message to Redis: C{PUBLISH}, or the publishing script.
        """
        size = _itemSize(item)
        try:
            if type(item) is _Batch:
                args = self._scriptArgs(item)
                d = self.publisher.execute_command(*PUBLISH_SCRIPT.evalsha(*args))
            else:
                assert type(item) is tuple
                channel, payload, _ = item
                d = self.publisher.execute_command("PUBLISH", channel, payload)
        except Exception:
            self._undelivered(item, "down")
            return
        self.inFlight += 1
        self._inFlightBytes += size
        d.addCallbacks(
            self._published,
            self._notPublished,
            callbackArgs=(item, size),
            errbackArgs=(item, size),
        )

    def _scriptArgs(self, batch: _Batch) -> tuple[list[bytes], list[bytes]]:
        """
        The keys and arguments of the publishing script for C{batch}.
        """
        topic = batch.topic
        header = b"%s %s %d %s " % (
            HEADER_NUMBERED,
            self.node,
            batch.seq,
            batch.identity,
        )
        args = [
            seqField(topic),
            b"%d" % self.keep,
            self.channelStart + topic,
            header,
            self.epochCandidate,
            batch.identity,
            *batch.lines,
        ]
        return [self.metaKey, streamKey(self.prefix, topic)], args

    def _published(self, result: object, item: _Item, size: int) -> None:
        self.inFlight -= 1
        self._inFlightBytes -= size
        if type(item) is _Batch:
            self._scripted(result, item)
        elif isinstance(result, Exception):
            self.dropped["error"] += _itemLines(item)
        else:
            self.sentLines += _itemLines(item)
        self._pump()

    def _scripted(self, result: object, batch: _Batch) -> None:
        """
        The publishing script answered: the batch was numbered, stored and
        published; deliver it here if its turn has come.
        """
        answer = parsePublishAnswer(result)
        if answer is None:
            self._scriptFailed(f"unexpected answer {str(result)[:80]}")
            self._undelivered(batch, "error")
            return
        first, epoch = answer
        count = len(batch.lines)
        self.sentLines += count
        self.streamLines += count
        self._noteEpoch(epoch)
        if self._ordered is not None and self._ordered(
            batch.topic, batch.identity, batch.lines, first, epoch, batch.origin, True
        ):
            done = self._skipEcho
        else:
            # Delivered when it comes back through the subscription.
            done = self._origins
        done[batch.seq] = batch.origin
        if len(done) > MAX_ORIGINS:
            del done[next(iter(done))]

    def _notPublished(self, failure: Failure, item: _Item, size: int) -> None:
        self.inFlight -= 1
        self._inFlightBytes -= size
        if type(item) is _Batch and self._noScript(failure):
            # Redis lost the scripts (restarted, SCRIPT FLUSH): send this one.
            keys, args = self._scriptArgs(item)
            try:
                d = self.publisher.execute_command(*PUBLISH_SCRIPT.eval(keys, args))
            except Exception:
                self._undelivered(item, "down")
            else:
                self.inFlight += 1
                self._inFlightBytes += size
                d.addCallbacks(
                    self._published,
                    self._notPublished,
                    callbackArgs=(item, size),
                    errbackArgs=(item, size),
                )
            return
        if self.publisher is None:
            self._undelivered(item, "down")
        else:
            if type(item) is _Batch:
                self._scriptFailed(failure.getErrorMessage())
            self._undelivered(item, "error")
        self._pump()

    @staticmethod
    def _noScript(failure: Failure) -> bool:
        """
        Whether Redis answered C{NOSCRIPT}.
        """
        return _errorText(failure).startswith("NOSCRIPT")

    def _undelivered(self, item: _Item, reason: str) -> None:
        """
        A message did not reach Redis: count its lines as dropped; a batch's
        lines are still delivered on this hub (not numbered, marked).
        """
        lines = _itemLines(item)
        if type(item) is _Batch and item.seq <= self._echoed:
            # Its answer was lost, but the subscription brought it back:
            # Redis numbered it and this hub delivered it so.
            self.sentLines += lines
            return
        self.dropped[reason] += lines
        if type(item) is _Batch and self._ordered is not None:
            self.localLines += lines
            self._ordered(
                item.topic, item.identity, item.lines, 0, b"", item.origin, True
            )

    def _scriptFailed(self, why: str) -> None:
        """
        Count a script error and log it at a bounded rate.
        """
        self.scriptErrors += 1
        self._refusals.emit(
            "script",
            LogLevel.error,
            "backplane: the history script failed on {url} ({why}); the lines "
            "are delivered on this hub only",
            event="backplane_script_error",
            url=self.url.display(),
            why=why,
        )

    def _pump(self) -> None:
        """
        Send queued messages while the window allows.
        """
        queue = self._queue
        while queue and self.inFlight < WINDOW and self.publisher is not None:
            item = queue.popleft()
            self._queued -= _itemSize(item)
            self._execute(item)

    def _dropQueue(self) -> None:
        queue, self._queue = self._queue, deque()
        self._queued = 0
        for item in queue:
            self._undelivered(item, "down")

    def checkEpoch(self) -> None:
        """
        Ask Redis for its epoch (C{HGET PREFIX:meta epoch}), one question at
        a time; held messages go on (or are dropped) with the answer, or are
        dropped if none comes.
        """
        if self._epochCheck or not self._awaiting or self.publisher is None:
            # Without a publishing connection they wait for the next one:
            # its set-up learns the epoch.
            return
        self._epochCheck = True

        def parse(reply: object) -> bytes:
            if not isEpoch(reply):
                raise ValueError("no epoch in Redis")
            assert isinstance(reply, bytes)
            return reply

        def answered(epoch: bytes) -> None:
            self._epochCheck = False
            self._noteEpoch(epoch)

        def failed(failure: Failure) -> None:
            self._epochCheck = False
            self._flushAwaiting()

        self._timed(
            self.publisher.execute_command(b"HGET", self.metaKey, b"epoch"), parse
        ).addCallbacks(answered, failed)

    # Shared history: reading.

    def read(self, topic: bytes, after: int | None, count: int) -> Deferred[Any] | None:
        """
        Read C{topic}'s stream: its C{count} last lines, only those
        numbered after C{after} unless it is L{None}.

        @return: A L{Deferred} firing with a L{netdemo.streams.ReadAnswer}
            (or failing: an error, no answer within C{pingTimeout}), or
            L{None} when it cannot be read now (Redis down, no shared
            history, L{MAX_READS} reads unanswered).
        """
        start = b"-" if after is None else b"%d" % (after + 1)
        keys = [self.metaKey, streamKey(self.prefix, topic)]
        args = [seqField(topic), start, b"%d" % max(count, 1)]
        maxLine = self.maxLine

        def parse(reply: object) -> Any:
            answer = parseReadAnswer(reply, maxLine)
            if answer.epoch:
                self._noteEpoch(answer.epoch)
            return answer

        return self._bounded(READ_SCRIPT, keys, args, parse)

    def topics(self, count: int) -> Deferred[Any] | None:
        """
        Up to about C{count} topics that have a counter in Redis (one
        C{HSCAN} step).

        @return: A L{Deferred} firing with a list of topics, or L{None} as
            for L{read}.
        """
        if not self.sequencing() or self.readsInFlight >= MAX_READS:
            return None

        def parse(reply: object) -> list[bytes]:
            if not isinstance(reply, list) or len(reply) != 2:
                raise ValueError("not an answer to HSCAN")
            found = reply[1] if isinstance(reply[1], list) else []
            return [
                name[4:]
                for name in found[::2]
                if isinstance(name, bytes)
                and name.startswith(b"seq:")
                and isTopic(name[4:])
            ]

        command = [b"HSCAN", self.metaKey, b"0", b"MATCH", b"seq:*", b"COUNT", count]
        return self._timed(self.publisher.execute_command(*command), parse)

    def _bounded(
        self,
        script: Script,
        keys: list[bytes],
        args: list[bytes],
        parse: Callable[[object], Any],
    ) -> Deferred[Any] | None:
        """
        Run a reading script (once more as C{EVAL} on C{NOSCRIPT}), at most
        L{MAX_READS} at once, its answer awaited for C{pingTimeout}.
        """
        if not self.sequencing() or self.readsInFlight >= MAX_READS:
            return None
        publisher = self.publisher
        try:
            d = publisher.execute_command(*script.evalsha(keys, args))
        except Exception:
            return None

        def retry(failure: Failure) -> Any:
            if self._noScript(failure) and publisher.connected:
                return publisher.execute_command(*script.eval(keys, args))
            return failure

        d.addErrback(retry)
        return self._timed(d, parse)

    def _timed(self, d: Deferred[Any], parse: Callable[[object], Any]) -> Deferred[Any]:
        """
        A L{Deferred} that fires with C{parse} of what C{d} fires with, or
        fails once C{pingTimeout} has passed; C{d} counts as a read in
        flight until it fires.
        """
        self.readsInFlight += 1
        self.historyReads += 1
        out: Deferred[Any] = Deferred()

        def answered(result: object) -> None:
            self.readsInFlight -= 1
            if timer.active():
                timer.cancel()
            if out.called:
                return
            if isinstance(result, Failure):
                out.errback(result)
                return
            try:
                value = parse(result)
            except Exception as e:
                # Whatever Redis answered, the reader gets an answer.
                out.errback(Failure(e))
            else:
                out.callback(value)

        def late() -> None:
            self.readTimeouts += 1
            text = f"no answer from Redis within {self.pingTimeout:g} s"
            out.errback(Failure(TimeoutError(text)))

        timer = self.reactor.callLater(self.pingTimeout, late)
        d.addBoth(answered)
        return out

    # Liveness.

    def connecting(self, protocol: Any) -> None:
        """
        A connection was made: Redis must answer its first commands within
        C{pingTimeout}.
        """
        self._expect(protocol, "connecting")

    def publisherUsable(self, protocol: Any) -> None:
        """
        The publishing connection is set up (password, database): it
        counts once Redis answers a C{PING} on it.
        """
        self._ping(protocol, self._prepareHistory)

    def _prepareHistory(self, protocol: Any) -> None:
        """
        Load the shared history's scripts and learn (or set) the epoch on
        the publishing connection; then it is ready.  A Redis that refuses
        scripts (an ACL, say) leaves the backplane without shared history,
        said once.
        """
        if not self.streams:
            self.publisherReady(protocol)
            return
        self._expect(protocol, "connecting")
        execute = protocol.execute_command
        try:
            loads = [
                execute(b"SCRIPT", b"LOAD", script.body)
                for script in (PUBLISH_SCRIPT, READ_SCRIPT)
            ]
            loads.append(
                execute(*EPOCH_SCRIPT.eval([self.metaKey], [self.epochCandidate]))
            )
        except Exception:
            return
        from twisted.internet.defer import gatherResults

        def ready(answers: list[object]) -> None:
            self._answered(protocol)
            epoch = answers[-1]
            if not protocol.connected:
                return
            if isEpoch(epoch):
                assert isinstance(epoch, bytes)
                self._scriptsReady = self.numbering = True
                self._noteEpoch(epoch)
            else:
                self._refuseScripts(f"unexpected answer {str(epoch)[:80]}")
            self.publisherReady(protocol)

        def refused(failure: Failure) -> None:
            self._answered(protocol)
            if not protocol.connected:
                return
            value = failure.value
            inner = getattr(value, "subFailure", None)
            self._refuseScripts(_errorText(inner) if inner is not None else str(value))
            self.publisherReady(protocol)

        gatherResults(loads, consumeErrors=True).addCallbacks(ready, refused)

    def _refuseScripts(self, why: str) -> None:
        """
        Redis refused the shared history's scripts: plain pub/sub only
        (logged once per run of the hub, counted each time).
        """
        self._scriptsReady = False
        self.numbering = False
        self.scriptErrors += 1
        if self._awaiting:
            self._flushAwaiting()
        if self._scriptsRefused:
            return
        self._scriptsRefused = True
        self._log.error(
            "backplane: {url} refused the shared history's scripts ({why}); lines "
            "still cross between hubs, history stays on each hub (see the ACL "
            "in docs/scaling.md)",
            event="backplane_history_refused",
            url=self.url.display(),
            why=why,
        )

    def pingAll(self) -> None:
        """
        Ping Redis on each connection that counts, unless a ping or a first
        command is still unanswered there.
        """
        for protocol in (self.publisher, self.subscriber):
            if protocol is not None and protocol not in self._deadlines:
                self._ping(protocol)

    def _ping(self, protocol: Any, then: Callable[[Any], None] | None = None) -> None:
        """
        Send C{PING} on C{protocol}; when Redis answers, call C{then} with
        it.
        """
        self._expect(protocol, "PING")
        protocol.heartbeat().addCallback(self._pong, protocol, then)

    def _pong(
        self, answered: bool, protocol: Any, then: Callable[[Any], None] | None
    ) -> None:
        if not answered or not protocol.connected:
            return
        self._answered(protocol)
        if then is not None:
            then(protocol)

    def _expect(self, protocol: Any, what: str) -> None:
        """
        Redis must answer on C{protocol} within C{pingTimeout} (unless an
        answer is awaited there already).
        """
        if protocol not in self._deadlines:
            self._deadlines[protocol] = self.reactor.callLater(
                self.pingTimeout, self._silent, protocol, what
            )

    def _answered(self, protocol: Any) -> None:
        """
        Redis answered on C{protocol} (or it is gone): nothing is awaited.
        """
        call = self._deadlines.pop(protocol, None)
        if call is not None and call.active():
            call.cancel()

    def _silent(self, protocol: Any, what: str) -> None:
        """
        Redis did not answer on C{protocol} in time: report the backplane
        down and make the connection again.
        """
        del self._deadlines[protocol]
        self.silentConnections += 1
        if what == "PING":
            text = f"no answer to PING within {self.pingTimeout:g} s"
        else:
            text = f"no answer within {self.pingTimeout:g} s of connecting"
        reason = Failure(TimeoutError(text))
        self._down(reason)
        self.connectionLost(protocol, reason)
        transport = protocol.transport
        if transport is not None:
            transport.abortConnection()

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
        self._answered(protocol)
        self.subscriber = protocol
        self._check()

    def connectionLost(self, protocol: Any, reason: Failure) -> None:
        """
        One of the connections is gone (or one being set up failed); its
        slot reconnects by itself.
        """
        settingUp = protocol in self._deadlines
        self._answered(protocol)
        if protocol is self.publisher:
            self.publisher = None
            self._scriptsReady = False
            self._dropQueue()
        elif protocol is self.subscriber:
            self.subscriber = None
        elif not settingUp:
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
        self.silentConnections = 0
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
        self._heartbeat = LoopingCall(self.pingAll)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(self.pingInterval, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        self.up = False
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        for protocol in list(self._deadlines):
            self._answered(protocol)
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
    limits: BackplaneLimits,
    hubLimits: HubLimits,
) -> RedisBackplane:
    """
    Build the Redis backplane service (named C{backplane}); hand it to
    L{netdemo.pubsub.buildPubSubService} too.

    @param url: Where Redis is, the password included.
    @param metrics: Where to report.
    @param reactor: The reactor to connect and time with.
    @param limits: The backplane's bounds: its queue, its largest message,
        its pings.
    @param hubLimits: The hub's: lines longer than its C{maxLine} from
        Redis are dropped, messages that would hand a subscriber more than
        its C{maxPending} refused.
    """
    return RedisBackplane(url, metrics, reactor, limits, hubLimits)


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
    waits a reactor turn after every bulk string.  Either would hold a
    whole bulk string, however large, before handing it on: the
    subscribing connection reads through a L{SubscriberReader}, which
    hands the messages to the backplane itself and a message over
    C{maxMessage} to the parser as its size.

    @return: A function building the publishing connection's factory (it
        selects the URL's database) and one building the subscribing
        connection's, each from the backplane.
    """
    import txredisapi

    class Reporting:
        """
        What both connections do: tell the backplane when made, once usable,
        and when lost; ping.
        """

        factory: Any
        connected: int

        def connectionMade(self) -> Any:
            self.factory.backplane.connecting(self)
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

        def heartbeat(self) -> Deferred[bool]:
            """
            Send C{PING}.

            @return: A Deferred that fires with C{True} when Redis answers
                (any answer, an error too: Redis is there), C{False} when
                the connection is lost first.
            """

            def failed(failure: Failure) -> bool:
                return not failure.check(txredisapi.ConnectionError)

            execute: Callable[..., Any] = self.execute_command  # type: ignore[attr-defined]
            d: Deferred[Any] = maybeDeferred(execute, "PING")
            return d.addCallbacks(lambda answer: True, failed)

    class Publisher(Reporting, txredisapi.RedisProtocol):  # type: ignore[misc]
        """
        The connection that publishes.
        """

        def usable(self) -> None:
            if self.connected:
                self.factory.backplane.publisherUsable(self)

    class Subscriber(Reporting, txredisapi.SubscriberProtocol):  # type: ignore[misc]
        """
        The connection that subscribes to C{PREFIX.*} by pattern, reading
        through a L{SubscriberReader}.
        """

        reader: SubscriberReader | None = None

        def connectionMade(self) -> Any:
            self.reader = SubscriberReader(self.factory.backplane.maxMessage)
            return super().connectionMade()

        def dataReceived(self, data: bytes, unpause: bool = False) -> None:
            # The pure-Python parser hands itself back what it held
            # (unpause): that was read already.
            if unpause or self.reader is None:
                super().dataReceived(data, unpause)
                return
            try:
                items = self.reader.feed(data)
            except ValueError:
                self.transport.loseConnection()
                return
            backplane = self.factory.backplane
            for item in items:
                if type(item) is tuple:
                    backplane.messageReceived(item[0], item[1])
                else:
                    super().dataReceived(item)

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
            self, pattern: bytes, channel: bytes | int, message: bytes | int
        ) -> None:
            backplane = self.factory.backplane
            if isinstance(channel, bytes) and isinstance(message, bytes):
                backplane.messageReceived(channel, message)
            else:
                # The reader dropped one of them (the int is its size).
                size = message if isinstance(message, int) else channel
                shown = channel if isinstance(channel, bytes) else b"?"
                backplane.messageTooLarge(shown, size)

    class Retrying:
        """
        What both factories do: tell the backplane when Redis refuses the
        password or the database (txredisapi stops retrying), and back off
        while Redis accepts connections but does not answer on them.
        """

        backplane: RedisBackplane

        def connectionError(self, why: str) -> None:
            self.backplane.authFailed(why)
            super().connectionError(why)  # type: ignore[misc]

        def retryDelay(self, attempt: int) -> float:
            # txredisapi's backoff starts again at its first delay once a
            # connection is set up, but one that Redis then never answered
            # on (a frozen Redis) is no success: count those too.
            attempt = max(attempt, self.backplane.silentConnections)
            delay: float = super().retryDelay(attempt)  # type: ignore[misc]
            return delay

    class PublisherFactory(Retrying, txredisapi.RedisFactory):  # type: ignore[misc]
        """
        Builds the publishing connection; a refused password or database
        stops it.
        """

        protocol = Publisher
        noisy = False

    class SubscriberFactory(Retrying, txredisapi.SubscriberFactory):  # type: ignore[misc]
        """
        Builds the subscribing connection; a refused password stops it.
        """

        protocol = Subscriber
        noisy = False

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
