# -*- test-case-name: tests.test_webhub -*-
"""
The hub in the browser, on the C{--http} listeners: C{/hub/ws}
(WebSocket), C{/hub/events} (Server-Sent Events) and the C{/hub} page.

Each WebSocket and each event stream is a hub client like any other
(L{netdemo.hubgate.IHubGate.attach}): identity, presence, history,
commands, limits, the slow-consumer policy, metrics and logs are the hub's.
What differs is its transport, a L{HubTransport}, which

  - turns what the hub writes (whole lines) into the client's framing,
    built once per delivery and shared by every client of that framing
    (L{TextFrames}, L{JSONFrames}; event streams add their own C{id:}
    lines, L{EventStream});
  - maps flow control onto the HTTP connection: the hub client is the
    streaming producer of the request, so when the socket's buffer fills
    Twisted's HTTP channel pauses it, and what it is sent meanwhile counts
    against C{--max-pending} exactly as for a TCP subscriber (cut, or
    drop-oldest); the hub holding a client's input pauses reading from the
    socket.

C{/hub/ws} (Twisted's C{twisted.web.websocket}, wsproto underneath) has two
modes:

  - C{text} (the default): each message is one hub line, in either
    direction, in the exact grammar of C{docs/protocol.md}, commands
    included;
  - C{json} (C{?format=json}): deliveries are
    C{{"topic", "from", "seq", "time", "text"}}, answers
    C{{"ok": true|false, "text"}}, notices C{{"notice"}}; the client sends
    C{{"topic", "text"}} to publish and C{{"command", "arg"}} for a command.

C{/hub/events?sub=PATTERN[&sub=...]}: each delivery is an event whose
C{id:} carries the history's epoch and the position of each topic the
stream has seen (at most L{MAX_ID_TOPICS} topics and L{MAX_ID_BYTES}
bytes), so a browser that reconnects (C{Last-Event-ID}) is replayed what
it missed from the hub's history (C{/history since}), or gets a C{gap}
event when history no longer holds it; a comment every L{HEARTBEAT}
seconds.

Bounds: at most C{--http-hub-streams} WebSockets and event streams at once
(C{503} past it, counted as C{hub-streams}); an incoming WebSocket message
of more than L{messageLimit} bytes closes the connection (1009), a message
that is not one line (or, in JSON mode, not a valid object) is answered
with an error; both counted in C{netdemo_http_hub_bad_messages_total}.  A
request whose C{Origin} is not the page's own nor one of C{--http-origin}
is answered C{403} and counted as C{origin}.

The status page's hub panel (busiest topics, who is connected) is made
here too (L{HubWeb.panel}), from the gate.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import (
    IConsumer,
    IProducer,
    IPushProducer,
    ITCPTransport,
    ITransport,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto.utilities import LocalProtocolError
from zope.interface import implementer

from netdemo import hubwire
from netdemo.dashboard import COUNT, formatCount, formatRate
from netdemo.hubgate import IHubGate
from netdemo.internals import boundWebSocketMessages, directTransport, writeNow
from netdemo.logs import RateLimitedLog, formatAddress
from netdemo.metrics import IMetrics

__all__ = [
    "HEARTBEAT",
    "MAX_STREAMS",
    "TOP_TOPICS",
    "EventStream",
    "HubTransport",
    "HubWeb",
    "JSONFrames",
    "TextFrames",
    "messageLimit",
    "textFrame",
]

#: WebSockets and event streams open at once, by default
#: (C{--http-hub-streams}).
MAX_STREAMS = 1000

#: Seconds between two heartbeat comments of an event stream.
HEARTBEAT = 15.0

#: Patterns one event stream may subscribe to.
MAX_SUBS = 32

#: Topics whose position an event's C{id:} carries, at most, and its size.
MAX_ID_TOPICS = 32
MAX_ID_BYTES = 2048

#: What the browser waits before it reconnects an event stream.
RETRY_MS = 2000

#: Topics listed on the status page's hub panel, busiest first, and
#: nicknames.
TOP_TOPICS = 20
MAX_PRESENT = 50

#: Seconds over which the panel's lines/s are measured, at least.
RATE_WINDOW = 2.0

#: Why a WebSocket message was refused (C{reason} of
#: C{netdemo_http_hub_bad_messages_total}).
BAD_MESSAGE_REASONS = ("too-big", "lines", "json")


def messageLimit(maxLine: int) -> int:
    """
    The longest WebSocket message accepted for a hub whose lines are at
    most C{maxLine} bytes: room for a JSON object whose text escapes every
    character (C{\\uXXXX}), and its names.
    """
    return 6 * maxLine + 1024


def textFrame(payload: bytes) -> bytes:
    """
    One unmasked, final WebSocket text frame (RFC 6455, 5.2) carrying
    C{payload} (UTF-8): what a server sends.
    """
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def _utf8(data: bytes) -> bytes:
    """
    C{data} as valid UTF-8 (a text frame must be): invalid bytes replaced.
    """
    if data.isascii():
        return data
    return data.decode("utf-8", "replace").encode("utf-8")


def _lines(data: bytes) -> list[bytes]:
    """
    The lines of what the hub writes (whole lines with their LF).
    """
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


class _LastBlock:
    """
    What the last block the hub wrote became: a fan-out writes the same
    C{bytes} object to every subscriber, so it is encoded once for all of
    them.  The block itself is kept, so its identity cannot be reused.
    """

    __slots__ = ("data", "out")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.out: Any = None


class TextFrames:
    """
    The C{text} mode: each line one text frame.
    """

    def __init__(self) -> None:
        self._last = _LastBlock()

    def __call__(self, data: bytes) -> bytes:
        last = self._last
        if data is last.data:
            return last.out  # type: ignore[no-any-return]
        data8 = _utf8(data)
        if data8.count(b"\n") == 1 and data8[-1] == 0x0A:
            out = textFrame(data8[:-1])
        else:
            out = b"".join(map(textFrame, _lines(data8)))
        last.data, last.out = data, out
        return out


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def lineObject(line: bytes, now: float) -> dict[str, Any]:
    """
    One line the hub sent, as the JSON mode's object.
    """
    delivery = hubwire.parseDelivery(line)
    if delivery is not None:
        found = {
            "topic": _text(delivery.topic),
            "from": _text(delivery.identity),
            "seq": delivery.seq,
            "time": now,
            "text": _text(delivery.text),
        }
        if delivery.local:
            # Delivered by this hub alone while the shared history was
            # down (C{#- }): no number.
            found["local"] = True
        return found
    if line.startswith(hubwire.OK):
        return {"ok": True, "text": _text(line[4:])}
    if line.startswith(hubwire.ERR):
        return {"ok": False, "text": _text(line[5:])}
    if line.startswith(b"* "):
        return {"notice": _text(line[2:])}
    return {"line": _text(line)}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


class JSONFrames:
    """
    The C{json} mode: each line one text frame holding a JSON object
    (L{lineObject}).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._last = _LastBlock()
        self.clock = clock

    def __call__(self, data: bytes) -> bytes:
        last = self._last
        if data is last.data:
            return last.out  # type: ignore[no-any-return]
        now = round(self.clock(), 3)
        out = b"".join(
            textFrame(_dumps(lineObject(line, now))) for line in _lines(data)
        )
        last.data, last.out = data, out
        return out


#: What an event stream makes of a line that is not a numbered delivery:
#: an event as it is, the new epoch of the shared history, the answer to a
#: replay (C{/history}).
_PLAIN = 0
_EPOCH = -1
_ANSWER = -2

#: Numbered deliveries an event stream holds back while it waits for its
#: replays (L{EventStream}), at most.
MAX_HELD = 10000


class _Events:
    """
    The lines of a block as the event streams see them, parsed once for
    all streams: C{(topic, seq, data)} for a numbered delivery (C{data}
    the JSON object), C{(None, 0, event)} for anything else (a whole
    event), C{(None, -1, epoch)} for the notice that the shared history's
    epoch changed, C{(None, -2, event)} for the answer to a replay, and
    C{(topic, -first, event)} for the notice that a replay of C{topic}
    starts at C{first}.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._last = _LastBlock()
        self.clock = clock

    def parse(self, data: bytes) -> list[tuple[bytes | None, int, bytes]]:
        last = self._last
        if data is last.data:
            return last.out  # type: ignore[no-any-return]
        now = round(self.clock(), 3)
        out: list[tuple[bytes | None, int, bytes]] = []
        for line in _lines(data):
            delivery = hubwire.parseDelivery(line)
            if delivery is not None:
                body = _dumps(lineObject(line, now))
                if delivery.seq is not None:
                    out.append((delivery.topic, delivery.seq, body))
                else:
                    # Not numbered (a local line): no id, the browser's
                    # last id stays.
                    out.append((None, _PLAIN, b"data: " + body + b"\n\n"))
                continue
            gap = _GAP.match(line)
            missed = _MISSED.match(line) if gap is None else None
            if gap is not None:
                event = b"event: gap\ndata: " + _dumps(
                    {"topic": _text(gap[1]), "first": int(gap[2])}
                )
                out.append((gap[1], -int(gap[2]), event + b"\n\n"))
                continue
            if missed is not None:
                # Lines this hub did not get from Redis (shared history):
                # what the stream has next of the topic comes after them.
                event = b"event: gap\ndata: " + _dumps(
                    {
                        "topic": _text(missed[3]),
                        "first": int(missed[2]) + 1,
                        "missed": [int(missed[1]), int(missed[2])],
                    }
                )
            else:
                event = b"event: hub\ndata: " + _dumps(lineObject(line, now))
                changed = _EPOCH_CHANGED.match(line)
                if changed is not None:
                    out.append((None, _EPOCH, changed[1]))
                elif line.startswith(_REPLAY_ANSWERS):
                    out.append((None, _ANSWER, event + b"\n\n"))
                    continue
            out.append((None, _PLAIN, event + b"\n\n"))
        last.data, last.out = data, out
        return out


#: The notice that a replay does not reach back far enough
#: (L{hubwire.gap}).
_GAP = re.compile(rb"\* gap: history of (\S+) starts at seq ([0-9]{1,18})\Z")

#: The notice that lines were not delivered live by this hub (shared
#: history; L{hubwire.missed}).
_MISSED = re.compile(
    rb"\* gap: seq ([0-9]{1,18}) to ([0-9]{1,18}) of (\S+) not delivered"
)

#: The answers to C{/history}: a replay, or its refusal.
_REPLAY_ANSWERS = (b"+OK history ", b"-ERR permission denied: history ")

#: The notice that the shared history's epoch changed
#: (L{hubwire.epochChanged}).
_EPOCH_CHANGED = re.compile(rb"\* epoch changed to ([0-9A-Za-z]{1,64})\Z")


def parseEventId(value: bytes | None) -> tuple[str, dict[bytes, int], bool]:
    """
    A C{Last-Event-ID}: the epoch, the position of each topic (at most
    L{MAX_ID_TOPICS}), and whether it names every topic of the stream that
    had lines (L{COMPLETE} after the epoch); anything malformed is left
    out.
    """
    if not value or len(value) > MAX_ID_BYTES:
        return "", {}, False
    words = value.split(b" ")
    epoch = words[0]
    complete = epoch.endswith(COMPLETE)
    if complete:
        epoch = epoch[: -len(COMPLETE)]
    positions: dict[bytes, int] = {}
    for word in words[1 : MAX_ID_TOPICS + 1]:
        topic, _, number = word.rpartition(b"=")
        if hubwire.isTopic(topic) and number.isdigit() and len(number) <= 18:
            positions[topic] = int(number)
        else:
            complete = False
    return epoch.decode("ascii", "replace"), positions, complete


#: After the epoch in an event id: the id names every topic of the stream
#: that had lines when it was sent (so a topic it does not name got its
#: first lines after).
COMPLETE = b"!"


class EventStream:
    """
    What one event stream is sent: each delivery an event with its C{id:}
    (the epoch, then C{TOPIC=SEQ} for each topic seen, the most recent
    last), shared parsing (L{_Events}), its own positions.

    A stream that resumes is subscribed, then replayed what it missed; with
    a shared history the replay is read from Redis meanwhile, so a live
    line may come before the replayed ones, or again after them.  Until
    its C{pending} replays are answered, a stream holds back a line that
    does not follow its topic's position (at most L{MAX_HELD}), and it
    never sends a line at or before its topic's position twice.

    @ivar complete: Whether the positions name every topic of the stream
        that had lines: until one is left out of the id (its bounds).
    @ivar pending: Replays asked for and not answered yet.
    """

    def __init__(
        self,
        events: _Events,
        epoch: str,
        positions: dict[bytes, int],
        complete: bool = False,
        pending: int = 0,
    ) -> None:
        self.events = events
        self.epoch = epoch.encode("ascii", "replace")
        self.positions = dict(positions)
        self.complete = complete
        self.pending = pending
        self.held: list[tuple[int, bytes, bytes]] = []
        self.delivered = 0

    def _value(self) -> bytes:
        head = self.epoch + COMPLETE if self.complete else self.epoch
        return b" ".join([head, *(b"%s=%d" % i for i in self.positions.items())])

    def eventId(self) -> bytes:
        """
        The id of the next event (positions left out past the bounds).
        """
        positions = self.positions
        while len(positions) > MAX_ID_TOPICS:
            del positions[next(iter(positions))]
            self.complete = False
        value = self._value()
        while len(value) > MAX_ID_BYTES and len(positions) > 1:
            del positions[next(iter(positions))]
            self.complete = False
            value = self._value()
        return value

    def __call__(self, data: bytes) -> bytes:
        out: list[bytes] = []
        positions = self.positions
        for topic, seq, body in self.events.parse(data):
            if topic is None:
                if seq == _EPOCH:
                    # The shared history starts again: positions of the
                    # old epoch mean nothing.
                    self.epoch = body
                    positions.clear()
                    self.complete = False
                    self._release(out)
                    continue
                out.append(body)
                if seq == _ANSWER and self.pending:
                    self.pending -= 1
                    if not self.pending:
                        self._release(out)
                continue
            if seq < 0:
                # The replay of topic starts at -seq: what comes before
                # it is gone.
                if positions.get(topic, 0) < -seq - 1:
                    positions[topic] = -seq - 1
                out.append(body)
                continue
            self._deliver(topic, seq, body, out)
        return b"".join(out)

    def _deliver(self, topic: bytes, seq: int, body: bytes, out: list[bytes]) -> None:
        """
        Send one numbered delivery, unless it was sent already; while
        replays are pending, hold it back if lines before it are missing.
        """
        positions = self.positions
        position = positions.get(topic)
        if position is not None:
            if seq <= position:
                return
            if self.pending and seq > position + 1:
                self.held.append((seq, topic, body))
                if len(self.held) > MAX_HELD:
                    self._release(out)
                return
        while True:
            positions.pop(topic, None)
            positions[topic] = seq
            self.delivered += 1
            out.append(b"id: " + self.eventId() + b"\ndata: " + body + b"\n\n")
            if not self.held:
                return
            # A line held back that follows now.
            following = [h for h in self.held if h[0] == seq + 1 and h[1] == topic]
            if not following:
                return
            self.held.remove(following[0])
            seq, _, body = following[0]

    def _release(self, out: list[bytes]) -> None:
        """
        Send what was held back, in order (the replays are answered: what
        is still missing is not coming).
        """
        held, self.held = self.held, []
        pending, self.pending = self.pending, 0
        for seq, topic, body in sorted(held, key=lambda h: (h[1], h[0])):
            self._deliver(topic, seq, body, out)
        # Past MAX_HELD, nothing more is held for this resume.
        self.pending = pending if len(held) <= MAX_HELD else 0


@implementer(ITransport, IConsumer, IPushProducer)
class HubTransport:
    """
    The transport of a hub client on an HTTP connection (a WebSocket or an
    event stream): what the hub writes is encoded (C{encode}) and written to
    the connection; the client is the request's streaming producer, so the
    HTTP channel pauses it while the socket's buffer is full.

    @ivar wire: The WebSocket transport, for a graceful close; L{None} for
        an event stream.
    """

    disconnecting = False

    def __init__(
        self,
        request: Request,
        encode: Callable[[bytes], bytes],
        wire: WebSocketTransport | None = None,
    ) -> None:
        self.request = request
        channel: Any = request.channel
        self.tcp: Any = channel.transport
        self.watcher = getattr(channel, "watcher", None)
        self.encode = encode
        self.wire = wire
        self._direct = directTransport(self.tcp)
        #: The socket, for the hub's send-buffer bound (as for TCP).
        self.socket = getattr(self.tcp, "socket", None)
        if ITCPTransport.providedBy(self.tcp):
            # Twisted's HTTP channel turns Nagle's algorithm off; the hub's
            # TCP clients have it on, so that a fan-out's small writes make
            # fewer segments (bench/webfanout.py: server CPU per delivery
            # to 100 WebSocket subscribers 112 ns with it off, 79 with it
            # on, against 66-76 for TCP subscribers).
            self.tcp.setTcpNoDelay(False)
        if wire is not None and self._direct is not None and self.watcher is not None:
            self.write = self._writeFrames  # type: ignore[method-assign]

    def _writeFrames(self, data: bytes) -> None:
        """
        L{write} for a WebSocket on plain TCP (the common case): the frames
        go to the socket at once.
        """
        out = self.encode(data)
        writeNow(self._direct, out)  # type: ignore[arg-type]
        self.watcher.written += len(out)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        out = self.encode(data)
        if out:
            self.raw(out)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def raw(self, out: bytes) -> None:
        """
        Write C{out} as it is (frames, events), counted as the HTTP
        connection's output.
        """
        direct = self._direct
        if self.wire is None:
            request = self.request
            if direct is None or not request.startedWriting:
                request.write(out)
                self._count(out)
                return
            # Past the head, an event goes to the socket at once, as a TCP
            # subscriber's line does (Request.write would queue it for the
            # next turn, so a burst would pause the stream sooner).
            if request.chunked:
                out = b"%x\r\n%s\r\n" % (len(out), out)
            writeNow(direct, out)
        elif direct is not None:
            writeNow(direct, out)
        else:
            self.tcp.write(out)
        self._count(out)

    def _count(self, out: bytes) -> None:
        watcher = self.watcher
        if watcher is not None:
            watcher.written += len(out)
            watcher.streamed += len(out)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.request.unregisterProducer()

    # The hub holding the client's input: stop reading the socket (an
    # event stream's input is only what the server gave its client).

    def pauseProducing(self) -> None:
        if self.wire is not None:
            self.tcp.pauseProducing()

    def resumeProducing(self) -> None:
        if self.wire is not None:
            self.tcp.resumeProducing()

    def stopProducing(self) -> None:
        self.abortConnection()

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        self.disconnecting = True
        wire = self.wire
        if wire is not None:
            try:
                wire.loseConnection(1000)
            except LocalProtocolError:
                # Closed by the peer already: wsproto refuses a second close.
                pass
            else:
                return
        self.tcp.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.tcp.abortConnection()

    def getPeer(self) -> Any:
        return self.tcp.getPeer()

    def getHost(self) -> Any:
        return self.tcp.getHost()


class HubSocket:
    """
    One C{/hub/ws} WebSocket (a C{twisted.web.websocket}
    C{WebSocketProtocol}): a hub client whose lines are messages.
    """

    client: Any = None
    wire: Any = None
    _closing = False

    def __init__(self, web: HubWeb, request: Request, json: bool) -> None:
        self.web = web
        self.request = request
        self.json = json

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.wire = transport
        boundWebSocketMessages(
            transport, messageLimit(self.web.gate.maxLine), self._tooBig
        )

    def negotiationFinished(self) -> None:
        web = self.web
        encode = web.jsonFrames if self.json else web.textFrames
        transport = HubTransport(self.request, encode, self.wire)
        self.client = web.gate.attach(transport, web.peerOf(self.request))
        if self.json:
            self.client.dataReceived(b"/seq on\n")

    def _tooBig(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.web.badMessage("too-big", self.request)
        try:
            self.wire.loseConnection(1009)
        except LocalProtocolError:
            self.web.abort(self.request)

    def textMessageReceived(self, message: str) -> None:
        self.bytesMessageReceived(message.encode("utf-8"))

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        client = self.client
        if self._closing or client is None:
            return
        line = bytes(data)
        if self.json:
            parsed = self._fromJSON(line)
            if parsed is None:
                return
            line = parsed
        elif line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if b"\n" in line or b"\r" in line:
            self._refuse("lines", b"one line per message")
            return
        client.dataReceived(line + b"\n")

    def _fromJSON(self, data: bytes) -> bytes | None:
        """
        The hub line a JSON-mode message stands for, or L{None} (refused).
        """
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            # Bad JSON, or nested deeper than Python parses.
            value = None
        if isinstance(value, dict):
            command = value.get("command")
            arg = value.get("arg", "")
            topic = value.get("topic", hubwire.DEFAULT_TOPIC.decode())
            text = value.get("text")
            if (
                isinstance(command, str)
                and command.isalpha()
                and command.isascii()
                and len(command) <= 32
                and isinstance(arg, str)
                and text is None
            ):
                line = ("/" + command + (" " + arg if arg else "")).encode("utf-8")
                return line
            if command is None and isinstance(text, str) and isinstance(topic, str):
                return b"/pub " + topic.encode("utf-8") + b" " + text.encode("utf-8")
        self._refuse(
            "json",
            b'a JSON object: {"topic": T, "text": S} or {"command": C, "arg": A}',
        )
        return None

    def _refuse(self, reason: str, why: bytes) -> None:
        self.web.badMessage(reason, self.request)
        if self.client is not None and not self.client.gone:
            self.client.reply(hubwire.err(b"bad message: " + why))

    def pongReceived(self, payload: bytes) -> None:
        """
        Pongs are not asked for.
        """

    def connectionLost(self, reason: Any) -> None:
        self.web.streamClosed()
        client, self.client = self.client, None
        if client is not None:
            client.connectionLost(reason)


def isHandshake(request: Request) -> bool:
    """
    Whether C{request} asks for a WebSocket as RFC 6455 (4.2.1) says: an
    upgrade to C{websocket}, version 13, with a key.
    """
    upgrade = (request.getHeader(b"upgrade") or b"").lower()
    connection = (request.getHeader(b"connection") or b"").lower()
    return (
        upgrade == b"websocket"
        and b"upgrade" in [c.strip() for c in connection.split(b",")]
        and request.getHeader(b"sec-websocket-version") == b"13"
        and bool(request.getHeader(b"sec-websocket-key"))
    )


class _SocketFactory:
    """
    A C{WebSocketServerFactory} for one request already checked.
    """

    def __init__(self, web: HubWeb) -> None:
        self.web = web

    def buildProtocol(self, request: Request) -> HubSocket:
        mode = request.args.get(b"format", [b"text"])[0]
        return HubSocket(self.web, request, mode == b"json")


class HubWeb:
    """
    The hub's paths on the HTTP service (L{netdemo.web.StatusResource}
    hands it every request under C{/hub}).

    @ivar gate: The hub.
    @ivar origins: The origins allowed besides the page's own
        (C{--http-origin}), lower case, without a final C{/}.
    @ivar maxStreams: WebSockets and event streams open at once, at most.
    @ivar open: How many are open.
    """

    _log = Logger()

    def __init__(
        self,
        gate: IHubGate,
        metrics: IMetrics,
        clock: Any,
        origins: Iterable[str] = (),
        maxStreams: int = MAX_STREAMS,
        serviceName: str = "http",
        page: bytes = b"",
    ) -> None:
        self.gate = gate
        self.metrics = metrics
        self.clock = clock
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self.maxStreams = maxStreams
        self.serviceName = serviceName
        self.page = page
        self.open = 0
        self.textFrames = TextFrames()
        self.jsonFrames = JSONFrames(clock.seconds)
        self.events = _Events(clock.seconds)
        self.streams: dict[HubTransport, None] = {}
        self.refuse: Callable[[str, Any], None] = self._countRefusal
        self._socket = WebSocketResource(_SocketFactory(self))
        self._heartbeat: LoopingCall | None = None
        self._snapshot: tuple[float, dict[bytes, int]] = (0.0, {})
        self._rates: dict[bytes, float] = {}
        self._logLimited = RateLimitedLog(self._log, clock.seconds)
        for reason in BAD_MESSAGE_REASONS:
            metrics.inc(
                "netdemo_http_hub_bad_messages_total",
                0,
                service=serviceName,
                reason=reason,
            )

    def _countRefusal(self, reason: str, peer: Any) -> None:
        self.metrics.inc(
            "netdemo_refused_total", service=self.serviceName, reason=reason
        )

    def peerOf(self, request: Request) -> Any:
        """
        The client's address, as the HTTP service knows it (after a PROXY
        header).
        """
        watcher = getattr(request.channel, "watcher", None)
        peer = getattr(watcher, "peer", None)
        return peer if peer is not None else request.getClientAddress()

    def badMessage(self, reason: str, request: Request) -> None:
        """
        Count and log (at a bounded rate) a refused WebSocket message.
        """
        self.metrics.inc(
            "netdemo_http_hub_bad_messages_total",
            service=self.serviceName,
            reason=reason,
        )
        self._logLimited.emit(
            ("bad-message", reason),
            LogLevel.warn,
            "{service}: {peer} sent a bad hub message ({reason})",
            event="hub_bad_message",
            service=self.serviceName,
            peer=formatAddress(self.peerOf(request)),
            reason=reason,
        )

    def originAllowed(self, request: Request) -> bool:
        """
        Whether the request's C{Origin} (if it has one: browsers send it
        with every WebSocket and every cross-origin request) is the page's
        own or one of L{origins}.
        """
        origin = request.getHeader(b"origin")
        if origin is None:
            return True
        seen = origin.decode("latin-1").lower().rstrip("/")
        if seen in self.origins:
            return True
        host = request.getHeader(b"host")
        if host is None:
            return False
        scheme = "https" if request.isSecure() else "http"
        return seen == f"{scheme}://{host.decode('latin-1').lower()}"

    def _plain(self, request: Request, code: int, text: bytes) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text

    def render(self, request: Request, path: str) -> Any:
        """
        Answer a request for C{path} (C{/hub}, C{/hub/ws}, C{/hub/events}).
        """
        if path == "/hub":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return self.page
        if path not in ("/hub/ws", "/hub/events"):
            return self._plain(request, 404, b"not found\n")
        if not self.originAllowed(request):
            self.refuse("origin", self.peerOf(request))
            return self._plain(request, 403, b"origin not allowed\n")
        if request.method == b"HEAD":
            return b""
        if self.open >= self.maxStreams:
            self.refuse("hub-streams", self.peerOf(request))
            request.setHeader(b"retry-after", b"30")
            return self._plain(request, 503, b"too many hub streams\n")
        if path == "/hub/ws":
            if not isHandshake(request):
                # Twisted's resource would log each one as an error.
                return self._plain(
                    request, 400, b"a WebSocket handshake (version 13) is expected\n"
                )
            answer = self._socket.render(request)
            if answer is NOT_DONE_YET:
                self.open += 1
            return answer
        return self._eventStream(request)

    def abort(self, request: Request) -> None:
        """
        Close C{request}'s connection now.
        """
        transport: Any = request.channel.transport
        if transport is not None:
            transport.abortConnection()

    def panel(self, now: float) -> dict[str, Any]:
        """
        The status page's hub panel: the busiest topics (lines/s over the
        last L{RATE_WINDOW} seconds or more, then the most lines), with
        their subscribers and history; how many clients are connected and
        their nicknames.
        """
        rows = self.gate.topics()
        then, seen = self._snapshot
        if now - then >= RATE_WINDOW or now < then:
            elapsed = now - then
            rates = {}
            if seen and elapsed > 0:
                for topic, _, _, last in rows:
                    before = seen.get(topic)
                    if before is not None and last >= before:
                        rates[topic] = (last - before) / elapsed
            self._rates = rates
            self._snapshot = (now, {row[0]: row[3] for row in rows})
        rates = self._rates
        rows.sort(key=lambda row: (-rates.get(row[0], 0.0), -row[3], row[0]))
        topics = []
        for topic, subscribers, kept, last in rows[:TOP_TOPICS]:
            rate = rates.get(topic)
            topics.append(
                {
                    "topic": _text(topic),
                    "subscribers": subscribers,
                    "rate": rate,
                    "rate_text": formatRate(rate, COUNT),
                    "history": kept,
                    "history_text": formatCount(kept),
                    "last_seq": last,
                    "last_seq_text": formatCount(last),
                }
            )
        connected, nicks = self.gate.present(MAX_PRESENT)
        return {
            "topics": topics,
            "topic_count": len(rows),
            "connected": connected,
            "present": [_text(n) for n in nicks],
        }

    def streamClosed(self) -> None:
        self.open -= 1

    # Server-Sent Events.

    def _eventStream(self, request: Request) -> Any:
        """
        Start an event stream: a hub client subscribed to the C{sub}
        patterns, numbered (C{/seq on}), replayed what it missed if it
        resumes (C{Last-Event-ID}).
        """
        patterns = request.args.get(b"sub", [])
        if not patterns or len(patterns) > MAX_SUBS:
            return self._plain(
                request, 400, b"give 1 to %d sub=PATTERN parameters\n" % MAX_SUBS
            )
        for pattern in patterns:
            if not hubwire.isPattern(pattern):
                return self._plain(
                    request,
                    400,
                    b"sub: a pattern of tokens a.b.c, * one token, > the rest\n",
                )
        commands: list[bytes] = []
        user = request.args.get(b"user", [b""])[0]
        token = request.args.get(b"token", [b""])[0]
        if user or token:
            if not (user and token) or b"\n" in user + token or b" " in user:
                return self._plain(request, 400, b"give both user= and token=\n")
            commands.append(b"/login " + user + b" " + token)
        commands.append(b"/seq on")
        if hubwire.DEFAULT_TOPIC not in patterns:
            commands.append(b"/unsub " + hubwire.DEFAULT_TOPIC)
        commands.extend(b"/sub " + pattern for pattern in patterns)
        history = self.gate.history
        pending = 0
        epoch, positions, complete = parseEventId(request.getHeader(b"last-event-id"))
        split = [p.split(b".") for p in patterns]

        def matching(topic: bytes) -> bool:
            return any(hubwire.patternMatches(p, topic.split(b".")) for p in split)

        positions = {t: seq for t, seq in positions.items() if matching(t)}
        if epoch:
            if epoch != history.epoch:
                # Another run of the hub (or another hub): its numbers mean
                # nothing here, and everything this one has of those topics
                # is after the client's position.
                positions = dict.fromkeys(positions, 0)
            replay = dict(positions)
            if complete:
                # The id named every topic the stream had seen lines of: a
                # topic it does not name got its first lines since.
                for topic in list(history.topics()):
                    if topic not in replay and matching(topic):
                        replay[topic] = 0
            for topic, seq in replay.items():
                commands.append(b"/history since %d %s" % (seq, topic))
            pending = len(replay)
            # A topic new to the stream is at 0 until its replay comes.
            positions = replay
            self.metrics.inc("netdemo_http_hub_resumes_total", service=self.serviceName)
        elif not (user or token):
            # A new stream: where each of its topics is now, so that a
            # resume can tell the topics that get their first lines later.
            # (Not while a login is pending: lines may come before the
            # subscriptions.)
            now = {t: history.lastSeq(t) for t in history.topics() if matching(t)}
            complete = len(now) <= MAX_ID_TOPICS
            positions = now if complete else {}
        self.open += 1
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"x-accel-buffering", b"no")
        stream = EventStream(self.events, history.epoch, positions, complete, pending)
        transport = HubTransport(request, stream)
        # An event without data sets the browser's last event id only.
        transport.raw(b"retry: %d\nid: %s\n\n" % (RETRY_MS, stream.eventId()))
        client = self.gate.attach(transport, self.peerOf(request))
        self.streams[transport] = None
        self._startHeartbeat()

        def finished(ignored: object) -> None:
            self.open -= 1
            self.streams.pop(transport, None)
            client.connectionLost(ignored)

        request.notifyFinish().addBoth(finished)
        client.dataReceived(b"\n".join(commands) + b"\n")
        return NOT_DONE_YET

    def _startHeartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = LoopingCall(self._beat)
            self._heartbeat.clock = self.clock
            self._heartbeat.start(HEARTBEAT, now=False)

    def _beat(self) -> None:
        """
        A comment to every event stream whose client is reading; stop when
        none is left.
        """
        if not self.streams:
            self.stop()
            return
        for transport in list(self.streams):
            if not transport.disconnecting:
                transport.raw(b": heartbeat\n\n")

    def stop(self) -> None:
        """
        Stop the heartbeat (the service stops; the streams close with their
        connections).
        """
        if self._heartbeat is not None:
            if self._heartbeat.running:
                self._heartbeat.stop()
            self._heartbeat = None
