# -*- test-case-name: tests.test_hubwire -*-
"""
The pub/sub hub's grammar, without I/O: what the hub reads, what it writes,
and how its clients read it back (C{docs/protocol.md} is the
specification).

Bytes go in and events come out (L{HubReader.feed}); replies, notices and
deliveries are built by the functions below.  Nothing here touches a socket,
a reactor or a clock, so the grammar is shared by the hub
(L{netdemo.pubsub}), the Redis backplane (L{netdemo.backplane}) and the
C{netdemo chat}, C{tail} and C{pub} clients, and tested with plain calls.

How reading stays fast (the hub's hot path): one C{bytes.split} per read;
the common case, a read of plain lines, is recognised with a few substring
tests over the whole read and becomes one L{Publish} event holding every
line, so no Python code runs per line; in other reads the lines that go to
one topic in a row still become one event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from attrs import define, frozen

__all__ = [
    "BAD_NICK",
    "BYE",
    "CLOSE",
    "DEFAULT_TOPIC",
    "ERR",
    "LINE_TIMED_OUT",
    "LINE_TOO_LONG",
    "MAX_TOPIC",
    "OK",
    "PUBLISHED",
    "SHUTTING_DOWN",
    "Close",
    "Command",
    "Delivery",
    "Event",
    "HubReader",
    "LineBuffer",
    "LineTooLong",
    "Publish",
    "Reply",
    "badTopic",
    "closing",
    "dropped",
    "err",
    "escapeControls",
    "escapeLines",
    "greeting",
    "isAnswer",
    "isCommand",
    "isDotted",
    "isIdentity",
    "isNick",
    "isNode",
    "isPattern",
    "isQuit",
    "isTopic",
    "joined",
    "left",
    "linePrefix",
    "ok",
    "parseDelivery",
    "patternMatches",
    "refused",
    "renamed",
    "splitSender",
    "textLines",
    "tooLong",
    "unknownCommand",
    "usage",
]

#: The topic that plain lines are published to and that every client is
#: subscribed to when it connects.
DEFAULT_TOPIC = b"chat"

#: The longest topic or pattern, in bytes.
MAX_TOPIC = 255

#: The first bytes of answers to commands; no other line starts so.
OK = b"+OK"
ERR = b"-ERR"

# The grammar's tokens: a topic is tokens joined by dots; a pattern may use
# "*" for one token and a final ">" for the rest; a nickname is a token
# that starts with a letter; a node (a hub on the backplane) is one token.
_TOKEN_CHARS = rb"A-Za-z0-9_\-"
_TOKEN = rb"[%s]+" % _TOKEN_CHARS
_TOPIC = re.compile(rb"%s(?:\.%s)*\Z" % (_TOKEN, _TOKEN))
_PATTERN = re.compile(rb"(?:%s|\*)(?:\.(?:%s|\*))*(?:\.>)?\Z|>\Z" % (_TOKEN, _TOKEN))
_NICK = re.compile(rb"[A-Za-z][%s]{0,31}\Z" % _TOKEN_CHARS)
_NODE = re.compile(rb"[%s]{1,64}\Z" % _TOKEN_CHARS)

# An identity as it travels between hubs: no space and no angle bracket.
_IDENTITY_CHARS = rb"[^\s<>]{1,64}"
_IDENTITY = re.compile(_IDENTITY_CHARS + rb"\Z")
_SENDER = re.compile(rb"<(%s)> ?" % _IDENTITY_CHARS)

# A delivery as clients see it: "<identity> text" or "[topic] <identity> text".
_DELIVERY = re.compile(
    rb"\A(?:\[(?P<topic>[^\]\s]+)\] )?<(?P<identity>[^>\s]+)> (?P<text>.*)\Z", re.S
)

#: Control characters that are escaped in relayed text: all C0 controls but
#: tab (LF ends a line and never reaches here), and DEL.
_CONTROLS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: The same, but LF: to check the complete lines of one read at once.
_CONTROLS_BUT_LF = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


# ---------------------------------------------------------------------------
# Tokens, topics, patterns, identities


def isTopic(value: bytes, anyLength: bool = False) -> bool:
    """
    Whether C{value} is a topic: tokens joined by dots, at most
    L{MAX_TOPIC} bytes (or of any length: C{/who} and C{/history} only look
    topics up).
    """
    if len(value) > MAX_TOPIC and not anyLength:
        return False
    return _TOPIC.match(value) is not None


def isPattern(value: bytes) -> bool:
    """
    Whether C{value} is a subscription pattern (C{*} one token, a final
    C{>} the rest), at most L{MAX_TOPIC} bytes.
    """
    return len(value) <= MAX_TOPIC and _PATTERN.match(value) is not None


def isNick(value: bytes) -> bool:
    """
    Whether C{value} is a nickname: a letter, then up to 31 letters, digits,
    C{_} or C{-}.
    """
    return _NICK.match(value) is not None


def isNode(value: bytes) -> bool:
    """
    Whether C{value} names a hub on the backplane: one token of at most 64
    bytes.
    """
    return _NODE.match(value) is not None


def isIdentity(value: bytes) -> bool:
    """
    Whether C{value} may be shown as a sender: 1 to 64 bytes, neither
    whitespace nor angle brackets.
    """
    return _IDENTITY.match(value) is not None


def isDotted(value: str) -> bool:
    """
    Whether a text is tokens joined by dots, of any length (a backplane's
    channel prefix).
    """
    return value.isascii() and isTopic(value.encode("ascii"), anyLength=True)


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


# ---------------------------------------------------------------------------
# Text


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


def escapeLines(block: bytes) -> list[bytes]:
    """
    The lines of C{block} (split on LF, empty ones kept), their control
    characters escaped.
    """
    lines = block.split(b"\n")
    if _CONTROLS_BUT_LF.search(block) is not None:
        lines = [_CONTROLS.sub(_escape, line) for line in lines]
    return lines


def textLines(text: bytes) -> list[bytes]:
    """
    The non-empty lines of a text (lines end in LF or CRLF), their control
    characters escaped.
    """
    if b"\r" in text:
        text = text.replace(b"\r\n", b"\n")
    return [_CONTROLS.sub(_escape, line) for line in text.split(b"\n") if line]


def splitSender(text: bytes) -> tuple[bytes | None, bytes]:
    """
    Split the C{<NAME> } that a text published from outside the hubs may
    start with (one space after it, optional).

    @return: The name (or L{None}) and the rest of the text.
    """
    match = _SENDER.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


# ---------------------------------------------------------------------------
# What the hub writes


def linePrefix(topic: bytes, identity: bytes) -> bytes:
    """
    What precedes each line that C{identity} published on C{topic}.
    """
    if topic == DEFAULT_TOPIC:
        return b"<" + identity + b"> "
    return b"[" + topic + b"] <" + identity + b"> "


def greeting(identity: bytes, serial: int, connected: int) -> bytes:
    """
    The first line a client gets.
    """
    return b"* welcome to netdemo pubsub, you are %s (client #%d, %d connected)" % (
        identity,
        serial,
        connected,
    )


def joined(identity: bytes, connected: int) -> bytes:
    """
    The presence notice of a client that connected.
    """
    return b"* %s joined (%d connected)" % (identity, connected)


def left(identity: bytes, connected: int) -> bytes:
    """
    The presence notice of a client that left.
    """
    return b"* %s left (%d connected)" % (identity, connected)


def renamed(old: bytes, new: bytes) -> bytes:
    """
    The presence notice of a client that took a nickname.
    """
    return b"* %s is now %s" % (old, new)


def dropped(count: int) -> bytes:
    """
    What a slow subscriber is told when it catches up (drop-oldest).
    """
    return b"* dropped %d lines (slow consumer)" % (count,)


#: Sent to every client when the hub stops.
SHUTTING_DOWN = b"* server shutting down"

#: The answer to C{/quit} and C{close}.
BYE = b"+OK bye"

#: The answer to each C{/pub} line.
PUBLISHED = b"+OK"

#: Why a partial line was refused.
LINE_TIMED_OUT = b"-ERR line not completed in time, closing"

#: The answer to a malformed nickname.
BAD_NICK = b"-ERR bad nick: 1-32 letters, digits, _ or -, starting with a letter"


def refused(reason: str) -> bytes:
    """
    The one line a refused connection gets (with its LF).
    """
    return b"-ERR refused: %s\n" % (reason.encode(),)


def closing(reason: str) -> bytes:
    """
    The one line a connection closed by the hub gets (with its LF).
    """
    return b"-ERR closing: %s\n" % (reason.encode(),)


def tooLong(maxLine: int) -> bytes:
    """
    Why an overlong line was refused.
    """
    return b"-ERR line longer than %d bytes, closing" % (maxLine,)


def ok(text: bytes) -> bytes:
    """
    A command's success.
    """
    return OK + b" " + text


def err(text: bytes) -> bytes:
    """
    A command's failure.
    """
    return ERR + b" " + text


def usage(synopsis: bytes) -> bytes:
    """
    The answer to a command given the wrong arguments.
    """
    return err(b"usage: " + synopsis)


def unknownCommand(word: bytes) -> bytes:
    """
    The answer to a command that does not exist.
    """
    return err(b"unknown command " + escapeControls(word[:64]))


def badTopic(topic: bytes) -> bytes:
    """
    The answer to C{/pub} with a malformed topic.
    """
    return err(b"bad topic " + escapeControls(topic))


# ---------------------------------------------------------------------------
# What the hub reads


@define
class Publish:
    """
    Lines to publish on one topic (consecutive lines of one read).

    @ivar acks: How many of them came as C{/pub} lines, each to be answered
        L{PUBLISHED} once they are published.
    """

    topic: bytes
    lines: list[bytes]
    acks: int = 0


@frozen
class Command:
    """
    A command line: C{/NAME ARG}.

    @ivar name: The command's name, lower case, without its slash.
    @ivar arg: The rest of the line, stripped.
    @ivar word: The first word as it came, for L{unknownCommand}.
    """

    name: bytes
    arg: bytes
    word: bytes


@frozen
class Reply:
    """
    A line the grammar answers by itself (a bad topic).
    """

    line: bytes


@frozen
class Close:
    """
    The client said C{close}: answer L{BYE} and close.  It is the last
    event of the read, and the connection's: feed nothing more.
    """


@frozen
class LineTooLong:
    """
    A line longer than the limit: refuse it and close.  The lines before
    it count; it is the last event of the read, and the connection's: feed
    nothing more.
    """


#: The only instances needed.
CLOSE = Close()
LINE_TOO_LONG = LineTooLong()

Event = Publish | Command | Reply | Close | LineTooLong

_NOTHING: list[Event] = []


class HubReader:
    """
    The hub's side of one connection: bytes in, events out.

    @ivar maxLine: The longest line accepted, without its end.
    @ivar buffer: The partial line so far.
    @ivar partialTicks: Line sweeps since the partial line began (the hub
        counts them; a new partial line starts again at 0).
    """

    __slots__ = ("buffer", "maxLine", "partialTicks")

    def __init__(self, maxLine: int) -> None:
        self.maxLine = maxLine
        self.buffer = b""
        self.partialTicks = 0

    def discard(self) -> None:
        """
        Forget the partial line.
        """
        self.buffer = b""

    def feed(self, data: bytes) -> list[Event]:
        """
        Take the bytes of one read.

        @return: The events of the lines it completed, in order; the list
            must not be changed.
        """
        end = data.rfind(b"\n")
        buffer = self.buffer
        limit = self.maxLine + 1  # room for a CR
        if end < 0:
            if not buffer:
                self.partialTicks = 0
                buffer = data
            else:
                buffer += data
            if len(buffer) > limit:
                self.buffer = b""
                return [LINE_TOO_LONG]
            self.buffer = buffer
            return _NOTHING
        self.partialTicks = 0
        if buffer:
            data = buffer + data
            end += len(buffer)
        rest = b""
        if end + 1 < len(data):
            rest = data[end + 1 :]
            data = data[: end + 1]
        events = self.lines(data)
        if events and type(events[-1]) in (Close, LineTooLong):
            rest = b""
        elif len(rest) > limit:
            rest = b""
            events = [*events, LINE_TOO_LONG]
        self.buffer = rest
        return events

    def lines(self, data: bytes) -> list[Event]:
        """
        The events of complete lines: C{data} ends in LF.
        """
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        lines = data.split(b"\n")
        lines.pop()
        maxLine = self.maxLine
        if len(data) - len(lines) > maxLine and max(map(len, lines)) > maxLine:
            return self._slowLines(lines)
        if (
            data[0] == 0x2F  # "/"
            or b"\n/" in data
            or b"close" in data
            or data[0] == 0x0A
            or b"\n\n" in data
            or _CONTROLS_BUT_LF.search(data) is not None
        ):
            return self._slowLines(lines)
        return [Publish(DEFAULT_TOPIC, lines)]

    def _slowLines(self, lines: list[bytes]) -> list[Event]:
        """
        Read lines one by one: commands, blank lines, long lines, control
        characters.  Consecutive publications to one topic still make one
        event.
        """
        maxLine = self.maxLine
        events: list[Event] = []
        batch: Publish | None = None
        for line in lines:
            if len(line) > maxLine:
                events.append(LINE_TOO_LONG)
                return events
            if not line:
                continue
            topic = DEFAULT_TOPIC
            if line[0] == 0x2F:  # "/"
                if line.startswith(b"//"):
                    line = line[1:]
                elif line[:5].lower() == b"/pub " and line.count(b" ") >= 2:
                    _, topic, line = line.split(b" ", 2)
                    if not isTopic(topic):
                        batch = None
                        events.append(Reply(badTopic(topic)))
                        continue
                else:
                    batch = None
                    events.append(_command(line))
                    continue
            elif line == b"close":
                events.append(CLOSE)
                return events
            if _CONTROLS.search(line) is not None:
                line = escapeControls(line)
            if batch is None or batch.topic != topic:
                batch = Publish(topic, [])
                events.append(batch)
            batch.lines.append(line)
            if topic is not DEFAULT_TOPIC:
                batch.acks += 1
        return events


def _command(line: bytes) -> Command:
    """
    A command line (it starts with C{/}) as a L{Command}.
    """
    parts = line.split(None, 1)
    arg = parts[1].strip() if len(parts) > 1 else b""
    return Command(parts[0][1:].lower(), arg, parts[0])


# ---------------------------------------------------------------------------
# How clients read the hub


class LineBuffer:
    """
    A stream split into lines (ending in LF or CRLF), for the clients.

    @ivar partial: The incomplete last line so far.
    """

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take more of the stream.

        @return: The lines it completed, without their ends.
        """
        if b"\n" not in data:
            self.partial += data
            return []
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def end(self) -> list[bytes]:
        """
        The stream ended: its last line, if it had no end.
        """
        last, self.partial = self.partial, b""
        return [last] if last else []


@frozen
class Delivery:
    """
    A message as the hub delivered it.

    @ivar topic: The topic it was published to.
    @ivar identity: Its sender: a nickname or C{host:port}.
    @ivar text: The text, byte for byte as the hub relayed it.
    """

    topic: bytes
    identity: bytes
    text: bytes


def parseDelivery(line: bytes) -> Delivery | None:
    """
    Parse a delivered message, or return L{None} for any other line
    (notices, answers).
    """
    match = _DELIVERY.match(line)
    if match is None:
        return None
    return Delivery(match["topic"] or DEFAULT_TOPIC, match["identity"], match["text"])


def isAnswer(line: bytes) -> bool:
    """
    Whether a line from the hub is the answer to a command.
    """
    return line.startswith((OK, ERR))


def isCommand(line: bytes) -> bool:
    """
    Whether a line sent to the hub gets an answer (is a command).
    """
    return (line.startswith(b"/") and not line.startswith(b"//")) or line == b"close"


def isQuit(line: bytes) -> bool:
    """
    Whether a line sent to the hub makes it close the connection.
    """
    return line == b"close" or line.split(b" ", 1)[0].lower() == b"/quit"
