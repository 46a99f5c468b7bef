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
    "LOGIN_BUSY",
    "LOGIN_FAILED",
    "LOGIN_NEEDED",
    "MAX_COUNT_DIGITS",
    "MAX_SEQ_DIGITS",
    "MAX_TOPIC",
    "OK",
    "PUBLISHED",
    "SHUTTING_DOWN",
    "Close",
    "Command",
    "Delivery",
    "Event",
    "DEFAULT_BUDGET",
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
    "epochChanged",
    "epochGone",
    "gap",
    "missed",
    "greeting",
    "hasControls",
    "historyAnswer",
    "isAnswer",
    "isCommand",
    "isDotted",
    "isIdentity",
    "isNick",
    "isNode",
    "isPattern",
    "isQuit",
    "isReservedNick",
    "isTopic",
    "joined",
    "left",
    "linePrefix",
    "nickKey",
    "ok",
    "parseCount",
    "parseDelivery",
    "patternMatches",
    "permissionDenied",
    "presenceSummary",
    "refused",
    "renamed",
    "sequenced",
    "sequencedBlock",
    "splitSender",
    "subscriptionDropped",
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

# An identity as it travels between hubs: no space, no angle bracket and no
# control character (checked apart: see isIdentity).
_IDENTITY_CHARS = rb"[^\s<>\x00-\x1f\x7f]{1,64}"
_IDENTITY = re.compile(_IDENTITY_CHARS + rb"\Z")
_SENDER = re.compile(rb"<(%s)> ?" % _IDENTITY_CHARS)

# A delivery as clients see it: "<identity> text" or "[topic] <identity> text".
# With /seq on, "#SEQ " before either.
_DELIVERY = re.compile(
    rb"\A(?:#(?:(?P<seq>[0-9]{1,18})|(?P<local>-)) )?"
    rb"(?:\[(?P<topic>[^\]\s]+)\] )?<(?P<identity>[^>\s]+)> (?P<text>.*)\Z",
    re.S,
)

#: The C0 controls that are escaped in relayed text (all but tab, and DEL),
#: but LF: to check the complete lines of one read at once.
_C0_BUT_LF = bytes(range(0x00, 0x09)) + bytes(range(0x0B, 0x20)) + b"\x7f"

#: The other characters escaped in relayed text, as UTF-8: the C1 controls
#: (U+0080-U+009F, e.g. U+009B, a terminal's one-byte CSI) and the bidi
#: controls, which reorder how a line is shown (U+061C, U+200E, U+200F,
#: U+202A-U+202E, U+2066-U+2069).  Searched only in text that is not all
#: ASCII (L{hasControls}).
_UNSAFE_UTF8 = re.compile(
    rb"\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xaa-\xae]|\xe2\x81[\xa6-\xa9]"
)

#: Everything escaped in relayed text.
_CONTROLS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|" + _UNSAFE_UTF8.pattern)


def hasControls(block: bytes) -> bool:
    """
    Whether C{block} (lines joined by LF) holds anything that relayed text
    escapes (L{escapeControls}).

    The hub's fast path calls this once over each read of plain lines:
    C{bytes.translate} finds a C0 control at C speed (about ten times faster
    than a character class in a regular expression), and only a read that is
    not all ASCII is searched for the UTF-8 sequences.
    """
    if len(block.translate(None, _C0_BUT_LF)) != len(block):
        return True
    return not block.isascii() and _UNSAFE_UTF8.search(block) is not None


# ---------------------------------------------------------------------------
# Tokens, topics, patterns, identities


def isTopic(value: bytes, anyLength: bool = False) -> bool:
    """
    Whether C{value} is a topic: tokens joined by dots, at most
    L{MAX_TOPIC} bytes, wherever a client names one (C{/pub}, C{/who},
    C{/history}).  C{anyLength} is for other dotted names (L{isDotted}).
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


#: What makes nicknames look alike, folded for uniqueness (L{nickKey}):
#: case, and the ASCII lookalikes I, l, 1 (and i), O and 0.
_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZi10", b"abcdefghljklmnopqrstuvwxyzllo"
)


def nickKey(nick: bytes) -> bytes:
    """
    What two nicknames share when they look alike, so that only one of
    them may be in use at a time: lower case, with C{I}, C{l}, C{1} and
    C{i} folded into one letter, C{O} and C{0} into another, and C{rn} into
    C{m}, C{vv} into C{w} (C{alice}, C{Alice}, C{aIice} and C{a1ice} have
    one key).  Lookalikes outside ASCII cannot occur: nicknames are ASCII.
    """
    return nick.translate(_FOLD).replace(b"rn", b"m").replace(b"vv", b"w")


#: The nicknames no client may take, as keys: identities the hub or the
#: backplane shows for others (C{redis}: lines published to Redis without
#: a name), and the hub's own voice.
RESERVED_NICKS = (b"redis", b"netdemo", b"server")
_RESERVED_KEYS = frozenset(map(nickKey, RESERVED_NICKS))

#: What no nickname may start with, as a key: C{client-N} is the identity
#: of the clients without an address (UNIX sockets), and of every client
#: without a nickname under C{--hide-addresses}.
_RESERVED_PREFIX = nickKey(b"client-")


def isReservedNick(nick: bytes) -> bool:
    """
    Whether no client may take C{nick}: it looks like C{redis}, C{netdemo},
    C{server} or C{client-} followed by anything.
    """
    key = nickKey(nick)
    return key in _RESERVED_KEYS or key.startswith(_RESERVED_PREFIX)


def isNode(value: bytes) -> bool:
    """
    Whether C{value} names a hub on the backplane: one token of at most 64
    bytes.
    """
    return _NODE.match(value) is not None


def isIdentity(value: bytes) -> bool:
    """
    Whether C{value} may be shown as a sender: 1 to 64 bytes, neither
    whitespace, angle brackets nor anything L{escapeControls} escapes.
    """
    return _IDENTITY.match(value) is not None and (
        value.isascii() or _UNSAFE_UTF8.search(value) is None
    )


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
    One escaped character: a C0 control or DEL as C{\\xHH} (its byte), a C1
    or bidi control as C{\\uHHHH} (its code point).
    """
    found = match.group()
    if len(found) == 1:
        return b"\\x%02x" % found[0]
    return b"\\u%04x" % ord(found.decode("utf-8"))


def escapeControls(line: bytes) -> bytes:
    """
    Escape what could change how a terminal shows a line: C0 controls but
    tab, and DEL, as C{\\xHH}; C1 controls (U+0080-U+009F) and bidi controls
    (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), in UTF-8, as
    C{\\uHHHH}.

    Everything else, invalid UTF-8 included, is left as it is.
    """
    return _CONTROLS.sub(_escape, line)


def escapeLines(block: bytes) -> list[bytes]:
    """
    The lines of C{block} (split on LF, empty ones kept), escaped
    (L{escapeControls}).
    """
    lines = block.split(b"\n")
    if hasControls(block):
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
    start with (one space after it, optional; NAME an L{isIdentity}).

    @return: The name (or L{None}) and the rest of the text.
    """
    match = _SENDER.match(text)
    if match is None or not isIdentity(match.group(1)):
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


def presenceSummary(joins: int, leaves: int, renames: int, connected: int) -> bytes:
    """
    The one presence notice that tells of several joins, leaves and renames
    (C{* 212 joined, 3 left (4998 connected)}); a count of 0 is left out.
    """
    parts = [
        b"%d %s" % (count, what)
        for count, what in (
            (joins, b"joined"),
            (leaves, b"left"),
            (renames, b"renamed"),
        )
        if count
    ]
    return b"* %s (%d connected)" % (b", ".join(parts), connected)


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

#: The answer to a failed C{/login}: whether the name or the secret was
#: wrong is not said.
LOGIN_FAILED = b"-ERR login failed"

#: The answer to a C{/login} that was not checked because too many logins
#: wait to be (it may be tried again).
LOGIN_BUSY = b"-ERR login busy, try again"

#: What a client that has not logged in is told after the greeting when it
#: may do nothing else (C{--hub-auth} without C{[anonymous]}).
LOGIN_NEEDED = b"* this hub needs a login: /login USER SECRET"


def permissionDenied(what: bytes) -> bytes:
    """
    The answer to a refused action: C{-ERR permission denied: publish
    lab.x}, C{... subscribe PATTERN}, C{... nick NAME}.
    """
    return err(b"permission denied: " + what)


def subscriptionDropped(pattern: bytes) -> bytes:
    """
    The notice of a subscription dropped because the client's rights no
    longer allow it (the accounts file was reloaded).
    """
    return b"* subscription to " + pattern + b" dropped: permission denied"


#: The answer to a malformed nickname.
BAD_NICK = b"-ERR bad nick: 1-32 letters, digits, _ or -, starting with a letter"

#: The most digits a count given by a client is read with; a count with
#: more means "as many as there are" (Python refuses to read integers of
#: more than 4,300 digits, and no count here needs 10).
MAX_COUNT_DIGITS = 9


def parseCount(word: bytes, maxDigits: int = MAX_COUNT_DIGITS) -> int | None:
    """
    A number given by a peer: ASCII digits, read only when there are at
    most C{maxDigits} of them (the length is checked before C{int}).

    @return: The number; -1 for more digits (for a count: as many as there
        are); L{None} when C{word} is not digits.
    """
    if not word.isdigit():
        return None
    if len(word) > maxDigits:
        return -1
    return int(word)


#: The most digits a sequence number given by a client is read with
#: (more is a usage error): a topic would need 10**18 lines.
MAX_SEQ_DIGITS = 18


def sequenced(first: int, entries: Sequence[bytes]) -> list[bytes]:
    """
    Delivered lines (without their ends) numbered from C{first}, each as
    C{#SEQ LINE}: what a client with C{/seq on} gets.
    """
    return [b"#%d %s" % pair for pair in enumerate(entries, first)]


def sequencedBlock(first: int, prefix: bytes, lines: Sequence[bytes]) -> bytes:
    """
    A batch of lines published on one topic, each after C{prefix} and
    numbered from C{first} (C{#SEQ PREFIX LINE}), with their ends: one
    write's worth, shared by every client with C{/seq on}.  With C{first}
    0 the lines have no number (shared history: delivered while Redis was
    down, local only): each is C{#- PREFIX LINE}.
    """
    if not first:
        return b"".join([b"#- %s%s\n" % (prefix, line) for line in lines])
    return b"".join(
        [b"#%d %s%s\n" % (seq, prefix, line) for seq, line in enumerate(lines, first)]
    )


def gap(topic: bytes, first: int) -> bytes:
    """
    The notice that a replay of C{topic}'s history does not reach back to
    the position asked for: its first line is numbered C{first}.
    """
    return b"* gap: history of %s starts at seq %d" % (topic, first)


def missed(topic: bytes, start: int, end: int) -> bytes:
    """
    The notice that the lines of C{topic} numbered C{start} to C{end} were
    not delivered live by this hub (shared history: its subscription to
    Redis was down); C{/history since} gives them.
    """
    return b"* gap: seq %d to %d of %s not delivered, see /history since %d %s" % (
        start,
        end,
        topic,
        start - 1,
        topic,
    )


def epochGone(epoch: bytes) -> bytes:
    """
    The notice that a resume's position (C{/history since SEQ@EPOCH}) is of
    an epoch the shared history no longer has: what follows is all there
    is.
    """
    return b"* gap: epoch %s is gone" % (epoch,)


def epochChanged(epoch: bytes) -> bytes:
    """
    The notice to clients with C{/seq on} that the shared history lost its
    past (Redis lost it): numbers start again in epoch C{epoch}.
    """
    return b"* epoch changed to %s" % (epoch,)


def historyAnswer(
    count: int, last: int, since: int | None = None, epoch: bytes = b""
) -> bytes:
    """
    The answer after a replay: C{+OK history K lines, last seq S}, or
    after C{/history since SEQ}
    C{+OK history K lines since SEQ, last seq S, epoch E}.
    """
    if since is None:
        return b"+OK history %d lines, last seq %d" % (count, last)
    return b"+OK history %d lines since %d, last seq %d, epoch %s" % (
        count,
        since,
        last,
        epoch,
    )


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


#: Lines of the slow path read by one L{HubReader.feed} or
#: L{HubReader.next} call, unless told otherwise.
DEFAULT_BUDGET = 1000


class HubReader:
    """
    The hub's side of one connection: bytes in, events out.

    A read of plain lines (the fast path) becomes one L{Publish} event,
    however many lines it holds.  Any other read is read line by line, at
    most C{budget} lines per call: the complete lines past the budget wait
    (L{waiting}) for the next call of L{next}, so that the caller can
    spread the work of a large read over several turns of its event loop.

    @ivar maxLine: The longest line accepted, without its end.
    @ivar budget: Lines of the slow path read per call at most.
    @ivar buffer: The partial line so far.
    @ivar partialTicks: Line sweeps since the partial line began (the hub
        counts them; a new partial line starts again at 0).
    """

    __slots__ = (
        "_after",
        "_index",
        "_lines",
        "_stash",
        "budget",
        "buffer",
        "maxLine",
        "partialTicks",
    )

    def __init__(self, maxLine: int, budget: int = DEFAULT_BUDGET) -> None:
        self.maxLine = maxLine
        self.budget = budget
        self.buffer = b""
        self.partialTicks = 0
        # Complete lines not read yet, from _index on; then the event that
        # ends them (a line too long), if any.
        self._lines: list[bytes] | None = None
        self._index = 0
        self._after: Event | None = None
        # Bytes fed while lines were waiting, in order.
        self._stash: list[bytes] = []

    @property
    def waiting(self) -> bool:
        """
        Whether input was kept for L{next}: complete lines past the budget,
        or bytes given to L{stash}.
        """
        return self._lines is not None or bool(self._stash)

    def discard(self) -> None:
        """
        Forget the partial line and everything waiting.
        """
        self.buffer = b""
        self._lines = None
        self._after = None
        self._stash = []

    def stash(self, data: bytes) -> None:
        """
        Keep the bytes of a read for L{next}, after what is waiting, without
        reading them now.
        """
        self._stash.append(data)

    def next(self) -> list[Event]:
        """
        The events of the next lines that waited, within the budget.

        @return: The events, in order (none when nothing waits); the list
            must not be changed.
        """
        if self._lines is not None:
            return self._slice()
        if self._stash:
            data = b"".join(self._stash)
            self._stash = []
            return self.feed(data)
        return _NOTHING

    def feed(self, data: bytes) -> list[Event]:
        """
        Take the bytes of one read.  While input waits (L{waiting}) they are
        only kept, as by L{stash}, and read by L{next}.

        @return: The events of the lines it completed, in order, within the
            budget; the list must not be changed.
        """
        if self._lines is not None or self._stash:
            self._stash.append(data)
            return _NOTHING
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
        if len(rest) > limit:
            rest = b""
            self._after = LINE_TOO_LONG
        self.buffer = rest
        return self.lines(data)

    def lines(self, data: bytes) -> list[Event]:
        """
        The events of complete lines (C{data} ends in LF), within the
        budget.
        """
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        lines = data.split(b"\n")
        lines.pop()
        maxLine = self.maxLine
        if (
            (len(data) - len(lines) > maxLine and max(map(len, lines)) > maxLine)
            or data[0] == 0x2F  # "/"
            or b"\n/" in data
            or b"close" in data
            or data[0] == 0x0A
            or b"\n\n" in data
            or hasControls(data)
        ):
            self._lines = lines
            self._index = 0
            return self._slice()
        after = self._after
        if after is not None:
            self._after = None
            return [Publish(DEFAULT_TOPIC, lines), after]
        return [Publish(DEFAULT_TOPIC, lines)]

    def _slice(self) -> list[Event]:
        """
        Read the waiting lines one by one, at most L{budget} of them:
        commands, blank lines, long lines, control characters.  Consecutive
        publications to one topic still make one event.
        """
        lines = self._lines
        assert lines is not None
        start = self._index
        stop = min(len(lines), start + max(1, self.budget))
        maxLine = self.maxLine
        events: list[Event] = []
        batch: Publish | None = None
        for i in range(start, stop):
            line = lines[i]
            if len(line) > maxLine:
                events.append(LINE_TOO_LONG)
                self.discard()
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
                self.discard()
                return events
            if hasControls(line):
                line = escapeControls(line)
            if batch is None or batch.topic != topic:
                batch = Publish(topic, [])
                events.append(batch)
            batch.lines.append(line)
            if topic is not DEFAULT_TOPIC:
                batch.acks += 1
        if stop < len(lines):
            self._index = stop
            return events
        self._lines = None
        after = self._after
        if after is not None:
            self._after = None
            events.append(after)
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
    @ivar seq: Its sequence number on its topic (with C{/seq on}), or
        L{None}.
    @ivar local: Whether the hub marked it as local only (C{#- }): with a
        shared history, delivered by its hub while Redis was down, never
        numbered.
    """

    topic: bytes
    identity: bytes
    text: bytes
    seq: int | None = None
    local: bool = False


def parseDelivery(line: bytes) -> Delivery | None:
    """
    Parse a delivered message, or return L{None} for any other line
    (notices, answers).
    """
    match = _DELIVERY.match(line)
    if match is None:
        return None
    seq = match["seq"]
    return Delivery(
        match["topic"] or DEFAULT_TOPIC,
        match["identity"],
        match["text"],
        None if seq is None else int(seq),
        match["local"] is not None,
    )


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
