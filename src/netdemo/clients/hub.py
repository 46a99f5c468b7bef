# -*- test-case-name: tests.test_cli_hub -*-
"""
The pub/sub hub clients: C{netdemo chat}, C{netdemo tail} and
C{netdemo pub}.

The hub's grammar is in C{docs/protocol.md}.  What the clients rely on:
every command gets exactly one C{+OK} or C{-ERR} line, in order, and no
other line starts with either; deliveries are C{<identity> text} (default
topic) or C{[topic] <identity> text}; notices start with C{*}.

C{chat} and C{tail} keep their session alive across restarts of the hub with
L{ClientService} (exponential backoff) and set it up again after every
reconnection (nickname, subscriptions); both send C{/ping} now and then so
that a quiet session outlives the hub's idle timeout.
"""

from __future__ import annotations

import json
import re
import sys
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from attrs import frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from netdemo.clients.common import (
    CommandError,
    Console,
    GnuOptions,
    formatHostPort,
    parseHostPort,
    positive,
    whenInterrupted,
    why,
)

__all__ = [
    "ChatOptions",
    "Delivery",
    "HubConnection",
    "PubOptions",
    "TailOptions",
    "parseDelivery",
    "runChat",
    "runPub",
    "runTail",
]

#: The hub's default topic (see L{netdemo.pubsub.DEFAULT_TOPIC}).
DEFAULT_TOPIC = "chat"

#: Longest line accepted from the hub; the hub's own lines are far shorter.
MAX_HUB_LINE = 1 << 20

#: Seconds allowed for one connection attempt.
CONNECT_TIMEOUT = 10.0

#: Lines waiting to be sent (the hub away) past which standard input is
#: paused.
MAX_QUEUED_LINES = 10000

#: C{/pub} commands sent ahead of their answers before stdin is paused.
PUB_WINDOW = 1000

_DELIVERY = re.compile(
    rb"\A(?:\[(?P<topic>[^\]\s]+)\] )?<(?P<identity>[^>\s]+)> (?P<text>.*)\Z", re.S
)


def _reason(failure: Failure) -> str:
    """
    The first line of what a L{Failure} says.
    """
    return why(failure.value or Exception())


def note(message: str) -> None:
    """
    One status or error line on standard error.
    """
    print(f"netdemo: {message}", file=sys.stderr, flush=True)


@frozen
class Delivery:
    """
    A message as the hub delivered it.

    @ivar topic: The topic it was published to.
    @ivar identity: Its sender: a nickname or C{host:port}.
    @ivar text: The text, byte for byte as the hub relayed it.
    """

    topic: str
    identity: str
    text: bytes

    def asJSON(self, received: datetime, history: bool) -> str:
        """
        One JSON object (one line): C{topic}, C{identity}, C{text} (invalid
        UTF-8 replaced), C{received} (UTC, ISO 8601) and C{history} (whether
        the line was replayed from the hub's history).
        """
        stamp = received.isoformat(timespec="microseconds").replace("+00:00", "Z")
        return json.dumps(
            {
                "topic": self.topic,
                "identity": self.identity,
                "text": self.text.decode("utf-8", "replace"),
                "received": stamp,
                "history": history,
            },
            ensure_ascii=False,
        )


def parseDelivery(line: bytes) -> Delivery | None:
    """
    Parse a delivered message, or return L{None} for any other line
    (notices, answers).
    """
    match = _DELIVERY.match(line)
    if match is None:
        return None
    topic = match["topic"]
    return Delivery(
        topic=topic.decode("ascii", "replace") if topic else DEFAULT_TOPIC,
        identity=match["identity"].decode("utf-8", "replace"),
        text=match["text"],
    )


def isAnswer(line: bytes) -> bool:
    """
    Whether a line from the hub is the answer to a command.
    """
    return line.startswith((b"+OK", b"-ERR"))


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


class HubConnection(Protocol):
    """
    One connection to the hub: splits what the hub says into lines, pairs
    answers with the commands sent (in order), and hands every other line
    to C{onLine}.

    @ivar lost: Whether the connection is closed.
    @ivar greeting: Fires with the first line the hub sends (its greeting,
        or the reason it refuses the connection); with C{b""} if the
        connection is lost first.
    @ivar closed: Fires once the connection is closed.
    """

    def __init__(
        self,
        onLine: Callable[[bytes], None],
        onLost: Callable[[HubConnection, Failure], None],
        onMade: Callable[[HubConnection], None] | None = None,
        onBatch: Callable[[], None] | None = None,
    ) -> None:
        self.onLine = onLine
        self.onLost = onLost
        self.onMade = onMade
        self.onBatch = onBatch
        self._buffer = b""
        self._pending: deque[Deferred[bytes]] = deque()
        self._keepalive: LoopingCall | None = None
        self.lost = False
        self.greeting: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.onMade is not None:
            self.onMade(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" not in data:
            if len(self._buffer) > MAX_HUB_LINE:
                note(f"the hub sent a line longer than {MAX_HUB_LINE} bytes")
                self.transport.abortConnection()  # type: ignore[union-attr]
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not self.greeting.called:
                self.greeting.callback(line)
            if isAnswer(line) and self._pending:
                self._pending.popleft().callback(line)
            else:
                self.onLine(line)
        if self.onBatch is not None:
            self.onBatch()

    def send(self, line: bytes) -> None:
        """
        Send one line that gets no answer (a plain message).
        """
        self.transport.write(line + b"\n")  # type: ignore[union-attr]

    def command(self, line: bytes) -> Deferred[bytes]:
        """
        Send a command.

        @return: A L{Deferred} firing with its C{+OK} or C{-ERR} line, or
            failing if the connection is lost first.
        """
        answer: Deferred[bytes] = Deferred()
        self._pending.append(answer)
        self.send(line)
        return answer

    def keepAlive(self, interval: float, clock: Any) -> None:
        """
        Send C{/ping} every C{interval} seconds (0: never), so that the
        hub's idle timeout does not close a quiet connection.
        """
        if interval and self._keepalive is None:
            self._keepalive = LoopingCall(self._ping)
            self._keepalive.clock = clock
            self._keepalive.start(interval, now=False)

    def _ping(self) -> None:
        """
        Send one C{/ping}; its answer is dropped.
        """
        self.command(b"/ping").addErrback(lambda _: None)

    def close(self) -> None:
        """
        Close the connection (after what is queued was sent).
        """
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(ConnectionDone())
        self.lost = True
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        pending, self._pending = self._pending, deque()
        for answer in pending:
            answer.errback(reason)
        if not self.greeting.called:
            self.greeting.callback(b"")
        self.onLost(self, reason)
        self.closed.callback(None)


class _HubFactory(Factory):
    """
    Builds L{HubConnection}s with the given callbacks.
    """

    def __init__(self, build: Callable[[], HubConnection]) -> None:
        self.build = build

    def buildProtocol(self, addr: Any) -> HubConnection:
        connection = self.build()
        connection.factory = self
        return connection


class HubSession:
    """
    A session with the hub that survives the hub going away: a
    L{ClientService} reconnects with exponential backoff, C{setUp} runs after
    every connection (before it counts as connected), and the session says
    on standard error when it loses and regains the hub.

    @ivar connection: The connection that is set up, or L{None}.
    @ivar final: Set when the next close is the end of the session (a
        C{/quit} or Ctrl-C), not a reason to reconnect.
    @ivar ended: Fires once the session has ended.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        onLine: Callable[[bytes], None],
        setUp: Callable[[HubConnection, bool], Deferred[None]],
        keepalive: float,
        timeout: float = CONNECT_TIMEOUT,
        onBatch: Callable[[], None] | None = None,
    ) -> None:
        from twisted.internet.endpoints import HostnameEndpoint

        self.reactor = reactor
        self.target = formatHostPort(host, port)
        self.onLine = onLine
        self.setUp = setUp
        self.keepalive = keepalive
        self.timeout = timeout
        self.connection: HubConnection | None = None
        self.final = False
        self.connections = 0
        self.ended: Deferred[None] = Deferred()
        self._latest: HubConnection | None = None
        self._setUpError: Exception | None = None
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        factory = _HubFactory(
            lambda: HubConnection(onLine, self._lost, self._made, onBatch)
        )
        self.service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=10.0, factor=2.0),
            clock=reactor,
            prepareConnection=self._prepare,
        )
        reactor.addSystemEventTrigger("before", "shutdown", self._shuttingDown)

    def _shuttingDown(self) -> None:
        """
        The process is stopping (SIGTERM): connections lost now are no
        reason to reconnect.
        """
        self.final = True

    async def start(self) -> None:
        """
        Connect for the first time.

        @raise CommandError: If the first attempt fails, or the hub refuses
            the set-up (a bad nickname or pattern).
        """
        from twisted.internet.task import deferLater

        self.service.startService()
        try:
            await self.service.whenConnected(failAfterFailures=1)
            problem = self._setUpError
        except Exception as e:
            problem = CommandError(f"cannot connect to {self.target}: {why(e)}")
        if problem is not None:
            # Out of the service's state machine before stopping it.
            await deferLater(self.reactor, 0, lambda: None)
            await self.stop()
            raise problem

    def _made(self, connection: HubConnection) -> None:
        """
        A connection was made: it is the one C{_prepare} sets up next.
        """
        self._latest = connection

    def _prepare(self, proxy: Any) -> Deferred[None]:
        """
        Set a new connection up; never fails (L{ClientService} does not
        close a connection whose preparation failed), but remembers why
        the first set-up failed.
        """
        connection = self._latest
        assert connection is not None
        first = self.connections == 0

        def ready(_: object) -> None:
            if connection.lost:
                return
            self.connections += 1
            self.connection = connection
            connection.keepAlive(self.keepalive, self.reactor)
            if first:
                note(f"connected to {self.target}")
            else:
                note(f"reconnected to {self.target}")

        def failed(reason: Failure) -> None:
            if reason.check(CancelledError, DeferredTimeout):
                problem = CommandError(
                    f"no answer from {self.target} within {self.timeout:g} s"
                )
            elif reason.check(CommandError):
                problem = reason.value  # type: ignore[assignment]
            else:
                problem = CommandError(
                    f"{self.target} closed the connection ({_reason(reason)})"
                )
            if first:
                self._setUpError = problem
            else:
                note(f"{problem}; reconnecting")
            connection.close()

        async def prepare() -> None:
            greeting = await connection.greeting
            if connection.lost:
                raise CommandError(
                    f"{self.target} closed the connection without a greeting"
                )
            if greeting.startswith(b"-ERR"):
                text = greeting.decode("utf-8", "replace")
                raise CommandError(f"{self.target} refused the connection: {text}")
            await self.setUp(connection, first)

        preparing = Deferred.fromCoroutine(prepare())
        preparing.addTimeout(self.timeout, self.reactor)
        return preparing.addCallbacks(ready, failed)

    def _lost(self, connection: HubConnection, reason: Failure) -> None:
        """
        A connection was closed: say so, unless the session is ending.
        """
        if connection is not self.connection:
            return
        self.connection = None
        if self.final:
            if not self.ended.called:
                self.ended.callback(None)
            return
        note(f"lost connection to {self.target} ({_reason(reason)}); reconnecting")

    async def stop(self) -> None:
        """
        End the session: close the connection and stop reconnecting.
        """
        self.final = True
        await self.service.stopService()
        if not self.ended.called:
            self.ended.callback(None)


def _reportAnswer(what: str) -> Callable[[bytes], bytes]:
    """
    An answer callback that reports C{-ERR} answers on standard error.
    """

    def report(answer: bytes) -> bytes:
        if answer.startswith(b"-ERR"):
            note(f"{what}: {answer.decode('utf-8', 'replace')}")
        return answer

    return report


# ---------------------------------------------------------------------------
# chat


def _keepaliveCoerce(value: str) -> float:
    """
    Coerce C{--keepalive}: seconds, at least 0.
    """
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{value!r} is not a number of seconds of at least 0")
    return seconds


_keepaliveCoerce.coerceDoc = "0 turns it off."  # type: ignore[attr-defined]

_KEEPALIVE: list[Any] = [
    "keepalive",
    "k",
    60.0,
    "Seconds between /ping commands that keep a quiet connection open past "
    "the hub's idle timeout",
    _keepaliveCoerce,
]


_TIMEOUT: list[Any] = [
    "timeout",
    "W",
    CONNECT_TIMEOUT,
    "Seconds to wait for a connection, the hub's greeting and the answers "
    "that set the session up",
    positive(float, "a number above 0"),
]


class ChatOptions(GnuOptions):
    """
    C{netdemo chat HOST:PORT [--nick NAME]}.
    """

    synopsis = "HOST:PORT [--nick NAME] [--keepalive SECONDS]"
    longdesc = (
        "A line client for the pub/sub hub: each line of standard input goes "
        "to the hub (plain lines to the default topic, /commands as they are), "
        "everything the hub says goes to standard output. When the hub goes "
        "away, chat says so on standard error, reconnects with exponential "
        "backoff (up to 10 s apart) and sets its nickname again. At the end of "
        "standard input it sends what is left, says /quit and exits once the "
        "hub has closed the connection, so it works in pipes.\n\n"
        "Examples:\n"
        "  netdemo chat 127.0.0.1:8008 --nick alice\n"
        "  echo 'the build is green' | netdemo chat localhost:8008 -n ci\n"
        "  printf '/history 5\\n' | netdemo chat [::1]:8008"
    )
    optParameters: list[list[Any]] = [
        ["nick", "n", None, "Nickname to take (again after every reconnection)"],
        _KEEPALIVE,
        _TIMEOUT,
    ]

    def parseArgs(self, target: str) -> None:  # type: ignore[override]
        self["host"], self["port"] = parseHostPort(target)


@implementer(IHalfCloseableProtocol)
class _StdinLines(Protocol):
    """
    Standard input split into lines; the end of input (the last partial
    line included) and a closed standard output are reported separately.

    @ivar closed: Fires once standard input and output are both closed.
    """

    def __init__(
        self,
        onLine: Callable[[bytes], None],
        onEnd: Callable[[], None],
        onStdoutGone: Callable[[], None] = lambda: None,
    ) -> None:
        self.onLine = onLine
        self.onEnd = onEnd
        self.onStdoutGone = onStdoutGone
        self._buffer = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" not in data:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.onLine(line[:-1] if line.endswith(b"\r") else line)

    def readConnectionLost(self) -> None:
        if self._buffer:
            last, self._buffer = self._buffer, b""
            self.onLine(last)
        self.onEnd()

    def writeConnectionLost(self) -> None:
        self.onStdoutGone()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


@implementer(IPushProducer)
class _Throttle:
    """
    Registered on the hub's connection: told when the transport has too
    much unsent (pause) and when it has caught up (resume).
    """

    def __init__(self, throttle: Callable[[bool], None]) -> None:
        self.throttle = throttle

    def pauseProducing(self) -> None:
        self.throttle(True)

    def resumeProducing(self) -> None:
        self.throttle(False)

    def stopProducing(self) -> None:
        self.throttle(False)


class _Chat:
    """
    The state of a C{netdemo chat} run.
    """

    def __init__(self, reactor: Any, options: ChatOptions) -> None:
        self.reactor = reactor
        self.nick: bytes | None = (
            options["nick"].encode("utf-8") if options["nick"] else None
        )
        self.queued: deque[bytes] = deque()
        self.sent = 0
        self.received = 0
        self.inputEnded = False
        self.inputPaused = False
        self.throttled = False
        self.output: Any = None
        self.session = HubSession(
            reactor,
            options["host"],
            options["port"],
            self.hubLine,
            self.setUp,
            options["keepalive"],
            options["timeout"],
        )

    def write(self, line: bytes) -> None:
        """
        Write one line to standard output.
        """
        if self.output is not None:
            self.output.write(line + b"\n")

    def hubLine(self, line: bytes) -> None:
        """
        A line from the hub that is not an answer: show it.
        """
        if parseDelivery(line) is not None:
            self.received += 1
        self.write(line)

    def _learnNick(self, answer: bytes) -> bytes:
        """
        Remember the nickname the hub confirmed, to take it again after a
        reconnection.
        """
        if answer.startswith(b"+OK nick "):
            self.nick = answer[len(b"+OK nick ") :]
        return answer

    def setUp(self, connection: HubConnection, first: bool) -> Deferred[None]:
        """
        Take the nickname (again), then send what was typed meanwhile.
        """
        done: Deferred[None] = Deferred()
        connection.transport.registerProducer(  # type: ignore[union-attr]
            _Throttle(self.throttle), True
        )

        def named(answer: bytes) -> None:
            if answer.startswith(b"-ERR") and first:
                text = answer.decode("utf-8", "replace")
                done.errback(CommandError(f"the hub refused the nickname: {text}"))
                return
            _reportAnswer("nickname")(answer)
            self.reactor.callLater(0, self.flush)
            done.callback(None)

        if self.nick is None:
            self.reactor.callLater(0, self.flush)
            done.callback(None)
        else:
            connection.command(b"/nick " + self.nick).addCallback(
                self._learnNick
            ).addCallbacks(named, done.errback)
        return done

    def typed(self, line: bytes) -> None:
        """
        A line from standard input.
        """
        self.queued.append(line)
        self.flush()
        self.updateInput()

    def throttle(self, throttled: bool) -> None:
        """
        The hub's connection has (no longer) too much unsent.
        """
        self.throttled = throttled
        self.updateInput()

    def updateInput(self) -> None:
        """
        Pause standard input while the hub's connection has a backlog or
        too many lines wait to be sent; resume when neither holds.
        """
        pause = self.throttled or len(self.queued) >= MAX_QUEUED_LINES
        if self.output is None or pause == self.inputPaused:
            return
        self.inputPaused = pause
        if pause:
            self.output.pauseProducing()
        else:
            self.output.resumeProducing()

    def flush(self) -> None:
        """
        Send the queued lines if connected; at the end of input, quit.
        """
        connection = self.session.connection
        if connection is None or self.session.final:
            return
        while self.queued:
            line = self.queued.popleft()
            self.sent += 1
            if isQuit(line):
                self.session.final = True
            if isCommand(line):
                connection.command(line).addCallback(self._learnNick).addCallbacks(
                    self.write, lambda _: None
                )
            else:
                connection.send(line)
            if self.session.final:
                self.queued.clear()
                return
        self.updateInput()
        if self.inputEnded:
            self.session.final = True
            connection.command(b"/quit").addErrback(lambda _: None)
            self.reactor.callLater(CONNECT_TIMEOUT, self._closeNow, connection)

    def _closeNow(self, connection: HubConnection) -> None:
        """
        The hub did not close after C{/quit}: abort the connection.
        """
        if connection.transport is not None and connection.connected:
            connection.transport.abortConnection()  # type: ignore[attr-defined]

    def ended(self) -> None:
        """
        Standard input ended.
        """
        self.inputEnded = True
        self.flush()


async def runChat(
    reactor: Any, options: ChatOptions, console: Console | None = None
) -> int:
    """
    Run C{netdemo chat}.

    @return: The exit status.
    """
    from twisted.internet.stdio import StandardIO

    chat = _Chat(reactor, options)
    interrupted = whenInterrupted(reactor)

    def stdoutGone() -> None:
        if not interrupted.called:
            interrupted.callback(None)

    stdin = _StdinLines(chat.typed, chat.ended, stdoutGone)
    await chat.session.start()
    chat.output = StandardIO(stdin, reactor=reactor)

    def stop(_: object) -> None:
        if not chat.session.ended.called:
            Deferred.fromCoroutine(chat.session.stop())

    interrupted.addCallback(stop)
    await chat.session.ended
    note(
        f"chat with {chat.session.target} ended: {chat.sent} lines sent, "
        f"{chat.received} messages received, "
        f"{max(chat.session.connections - 1, 0)} reconnections"
    )
    chat.output.loseConnection()

    def giveUp() -> None:
        if not stdin.closed.called:
            stdin.closed.callback(None)

    # Standard output is flushed by then unless its reader stopped reading.
    reactor.callLater(2.0, giveUp)
    await stdin.closed
    return 0


# ---------------------------------------------------------------------------
# tail


def _historyCoerce(value: str) -> int:
    """
    Coerce C{--history}: a whole number, at least 0.
    """
    try:
        lines = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if lines < 0:
        raise ValueError(f"{value!r} is not a whole number of at least 0")
    return lines


class TailOptions(GnuOptions):
    """
    C{netdemo tail HOST:PORT [--sub PATTERN]... [--history N] [--json]}.
    """

    synopsis = "HOST:PORT [--sub PATTERN]... [--history N] [--json]"
    longdesc = (
        "Subscribe to the pub/sub hub and print every message delivered, one "
        "per line: as the hub sends it, or with --json as a JSON object with "
        "topic, identity, text, received (UTC) and history. Patterns follow "
        "the hub's rules (* one token, a final > one or more). Without --sub "
        "you get the default topic, chat. The subscriptions are renewed after "
        "every reconnection; /ping every --keepalive seconds keeps a quiet "
        "subscription open. --history N first replays the last N lines kept "
        "of every topic that a pattern matches (on the first connection "
        "only). Notices go to standard error; Ctrl-C prints a summary there.\n\n"
        "Examples:\n"
        "  netdemo tail 127.0.0.1:8008\n"
        "  netdemo tail localhost:8008 --sub 'lab.>' --sub alerts --history 10\n"
        "  netdemo tail [::1]:8008 -s '>' --json | jq .text"
    )
    optFlags = [["json", "j", "One JSON object per message"]]
    optParameters: list[list[Any]] = [
        [
            "history",
            None,
            0,
            "Lines of history to replay per matching topic first",
            _historyCoerce,
        ],
        _KEEPALIVE,
        _TIMEOUT,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["subs"] = []

    def opt_sub(self, pattern: str) -> None:
        """
        Subscribe to PATTERN (repeatable) [default: chat]
        """
        self["subs"].append(pattern)

    opt_s = opt_sub

    def parseArgs(self, target: str) -> None:  # type: ignore[override]
        self["host"], self["port"] = parseHostPort(target)

    def postOptions(self) -> None:
        if not self["subs"]:
            self["subs"] = [DEFAULT_TOPIC]
        for pattern in self["subs"]:
            if not pattern or any(c.isspace() for c in pattern):
                raise usage.UsageError(f"--sub {pattern!r} is not a pattern")


def topicMatches(pattern: str, topic: str) -> bool:
    """
    Whether a hub pattern matches a topic (C{*} one token, a final C{>}
    one or more).
    """
    from netdemo.pubsub import patternMatches

    return patternMatches(
        [t.encode() for t in pattern.split(".")], [t.encode() for t in topic.split(".")]
    )


class _Tail:
    """
    The state of a C{netdemo tail} run.
    """

    def __init__(self, reactor: Any, options: TailOptions) -> None:
        self.options = options
        self.patterns: list[str] = options["subs"]
        self.messages = 0
        self.replayed = 0
        self.replaying = False
        self.out = sys.stdout.buffer
        self.session = HubSession(
            reactor,
            options["host"],
            options["port"],
            self.hubLine,
            self.setUp,
            options["keepalive"],
            options["timeout"],
            onBatch=self.flush,
        )
        self.stopped: Deferred[None] = Deferred()

    def hubLine(self, line: bytes) -> None:
        """
        Print a delivery; notices and stray lines go to standard error.
        """
        delivery = parseDelivery(line)
        if delivery is None:
            setUp = self.session.connection is None
            if not line.startswith(b"* welcome to") and not (
                setUp and line.startswith(b"-ERR")
            ):
                note(f"hub: {line.decode('utf-8', 'replace')}")
            return
        self.messages += 1
        if self.replaying:
            self.replayed += 1
        if self.options["json"]:
            received = datetime.now(timezone.utc)
            self.write(delivery.asJSON(received, self.replaying).encode() + b"\n")
        else:
            self.write(line + b"\n")

    def write(self, data: bytes) -> None:
        """
        Write to standard output; when its reader has gone (C{| head}),
        stop.
        """
        try:
            self.out.write(data)
        except BrokenPipeError:
            self.outputGone()

    def flush(self) -> None:
        """
        Flush standard output (after each read from the hub).
        """
        try:
            self.out.flush()
        except BrokenPipeError:
            self.outputGone()

    def outputGone(self) -> None:
        """
        Nobody reads standard output any more: end quietly.
        """
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.out.fileno())
        os.close(devnull)
        if not self.stopped.called:
            self.stopped.callback(None)

    async def _setUp(self, connection: HubConnection, first: bool) -> None:
        """
        Unsubscribe from the default topic unless asked for, subscribe to
        every pattern, replay the history on the first connection.
        """
        wanted = [p.encode("utf-8") for p in self.patterns]
        answers = []
        if DEFAULT_TOPIC.encode() not in wanted:
            answers.append(
                await connection.command(b"/unsub " + DEFAULT_TOPIC.encode())
            )
        for pattern in wanted:
            answer = await connection.command(b"/sub " + pattern)
            if answer.startswith(b"-ERR"):
                text = answer.decode("utf-8", "replace")
                if first:
                    raise CommandError(f"the hub refused --sub {pattern!r}: {text}")
                note(f"subscription: {text}")
        if first and self.options["history"]:
            await self._replay(connection)

    async def _replay(self, connection: HubConnection) -> None:
        """
        Replay the history of every topic that the hub keeps history for and
        a pattern matches.
        """
        answer = await connection.command(b"/topics")
        _, _, known = answer.decode("utf-8", "replace").partition("with history:")
        topics = [
            t
            for t in known.split()
            if t != "..." and any(topicMatches(p, t) for p in self.patterns)
        ]
        for topic in topics:
            self.replaying = True
            try:
                await connection.command(
                    f"/history {self.options['history']} {topic}".encode()
                )
            finally:
                self.replaying = False

    def setUp(self, connection: HubConnection, first: bool) -> Deferred[None]:
        """
        Subscribe (again); on the first connection, replay the history.
        """
        return Deferred.fromCoroutine(self._setUp(connection, first))


async def runTail(
    reactor: Any, options: TailOptions, console: Console | None = None
) -> int:
    """
    Run C{netdemo tail}.

    @return: The exit status.
    """
    tail = _Tail(reactor, options)
    interrupted = whenInterrupted(reactor)

    def stop(_: object) -> None:
        if not tail.stopped.called:
            tail.stopped.callback(None)

    interrupted.addCallback(stop)
    await tail.session.start()
    await tail.stopped
    await tail.session.stop()
    tail.flush()
    note(
        f"tail of {tail.session.target} ended: {tail.messages} messages "
        f"({tail.replayed} from history), "
        f"{max(tail.session.connections - 1, 0)} reconnections"
    )
    return 0


# ---------------------------------------------------------------------------
# pub


class PubOptions(GnuOptions):
    """
    C{netdemo pub HOST:PORT TOPIC [MESSAGE | -]}.
    """

    synopsis = "HOST:PORT TOPIC [MESSAGE... | -] [--timeout SECONDS]"
    longdesc = (
        "Publish to a topic of the pub/sub hub and exit once the hub has "
        "acknowledged every message (+OK). MESSAGE is the rest of the command "
        "line, joined with spaces; with - (or no MESSAGE) each non-empty line "
        "of standard input is one message. Exit status: 0 when all were "
        "acknowledged, 2 on any error (refused connection, a -ERR answer, no "
        "answer within --timeout seconds).\n\n"
        "Examples:\n"
        "  netdemo pub 127.0.0.1:8008 lab.rack1.temp 21.5\n"
        "  netdemo pub localhost:8008 chat 'hello, everyone'\n"
        "  tail -f app.log | netdemo pub [::1]:8008 logs.app -"
    )
    optParameters: list[list[Any]] = [
        [
            "timeout",
            "W",
            10.0,
            "Seconds to wait for the hub's answer",
            positive(float, "a number above 0"),
        ],
    ]

    def parseArgs(self, target: str, topic: str, *message: str) -> None:  # type: ignore[override]
        self["host"], self["port"] = parseHostPort(target)
        if not topic or any(c.isspace() for c in topic):
            raise usage.UsageError(f"topic {topic!r} is not a topic")
        self["topic"] = topic
        text = " ".join(message)
        if message == ("-",) or not message:
            self["message"] = None
        elif not text.strip():
            raise usage.UsageError("the message is empty")
        else:
            self["message"] = text


class _Publisher:
    """
    Send C{/pub} commands, at most L{PUB_WINDOW} ahead of their answers,
    and count the acknowledgements.

    @ivar done: Fires with the number acknowledged, or fails with
        L{CommandError}.
    """

    def __init__(
        self, reactor: Any, connection: HubConnection, topic: bytes, timeout: float
    ) -> None:
        self.reactor = reactor
        self.connection = connection
        self.prefix = b"/pub " + topic + b" "
        self.timeout = timeout
        self.sent = 0
        self.acknowledged = 0
        self.inputEnded = False
        self.done: Deferred[int] = Deferred()
        self.input: Any = None
        self._timer: Any = None
        self._paused = False

    def publish(self, text: bytes) -> None:
        """
        Publish one message (empty lines are skipped).
        """
        if not text.strip() or self.done.called:
            return
        self.sent += 1
        number = self.sent
        self.connection.command(self.prefix + text).addCallbacks(
            lambda answer: self._answered(number, answer), self._lost
        )
        self._arm()
        if self.input is not None and self.outstanding >= PUB_WINDOW:
            self._paused = True
            self.input.pauseProducing()

    @property
    def outstanding(self) -> int:
        """
        Messages sent and not yet answered.
        """
        return self.sent - self.acknowledged

    def _arm(self) -> None:
        """
        Start the answer timer unless it runs.
        """
        if self._timer is None or not self._timer.active():
            self._timer = self.reactor.callLater(self.timeout, self._expired)

    def _answered(self, number: int, answer: bytes) -> None:
        """
        The answer to message C{number} arrived.
        """
        if answer.startswith(b"-ERR"):
            text = answer.decode("utf-8", "replace")
            self._fail(f"the hub refused message {number}: {text}")
            return
        self.acknowledged += 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.outstanding:
            self._arm()
        if self._paused and self.outstanding < PUB_WINDOW // 2:
            self._paused = False
            self.input.resumeProducing()
        self._check()

    def _lost(self, reason: Failure) -> None:
        """
        A connection was closed: say so, unless the session is ending.
        """
        self._fail(
            f"the hub closed the connection ({_reason(reason)}) with "
            f"{self.outstanding} of {self.sent} messages not acknowledged"
        )

    def _expired(self) -> None:
        """
        No answer came in time.
        """
        self._fail(f"no answer from the hub within {self.timeout:g} s")

    def _fail(self, message: str) -> None:
        """
        End with an error (once).
        """
        if not self.done.called:
            self.done.errback(CommandError(message))

    def ended(self) -> None:
        """
        No more messages.
        """
        self.inputEnded = True
        self._check()

    def _check(self) -> None:
        """
        Done when the input ended and every message was acknowledged.
        """
        if self.inputEnded and not self.outstanding and not self.done.called:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self.done.callback(self.acknowledged)


async def runPub(
    reactor: Any, options: PubOptions, console: Console | None = None
) -> int:
    """
    Run C{netdemo pub}.

    @return: The exit status.
    """
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
    from twisted.internet.stdio import StandardIO

    host, port = options["host"], options["port"]
    target = formatHostPort(host, port)

    def hubLine(line: bytes) -> None:
        if line.startswith((b"-ERR", b"* server")):
            note(f"hub: {line.decode('utf-8', 'replace')}")

    connection = HubConnection(hubLine, lambda c, r: None)
    endpoint = HostnameEndpoint(reactor, host, port, timeout=options["timeout"])
    try:
        await connectProtocol(endpoint, connection)
    except Exception as e:
        raise CommandError(f"cannot connect to {target}: {why(e)}") from None
    publisher = _Publisher(
        reactor, connection, options["topic"].encode("utf-8"), options["timeout"]
    )
    if options["message"] is not None:
        for line in options["message"].encode("utf-8").split(b"\n"):
            publisher.publish(line)
        publisher.ended()
    else:
        stdin = _StdinLines(publisher.publish, publisher.ended)
        publisher.input = StandardIO(stdin, reactor=reactor)
    try:
        await publisher.done
    except CommandError as e:
        connection.close()
        raise CommandError(f"{target}: {e}") from None
    connection.close()
    await connection.closed
    return 0
