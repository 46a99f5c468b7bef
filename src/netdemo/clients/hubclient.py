# -*- test-case-name: tests.test_cli_hub -*-
"""
What the hub clients C{netdemo chat}, C{tail} and C{pub} share: one
connection to the hub (L{HubConnection}), a session that survives the hub
going away (L{HubSession}), standard input as lines (L{StdinLines}), and
their common options.

The hub's grammar is L{netdemo.hubwire} (C{docs/protocol.md}).  What the
clients rely on: every command gets exactly one C{+OK} or C{-ERR} line, in
order, and no other line starts with either; deliveries are
C{<identity> text} (default topic) or C{[topic] <identity> text}; notices
start with C{*}.

C{chat} and C{tail} keep their session alive across restarts of the hub with
L{ClientService} (exponential backoff) and set it up again after every
reconnection (nickname, subscriptions); both send C{/ping} now and then so
that a quiet session outlives the hub's idle timeout.  Everything they say
goes through the L{Console} they are given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from netdemo.clients.common import (
    CommandError,
    Console,
    formatHostPort,
    positive,
    why,
)
from netdemo.hubwire import ERR, LineBuffer, isAnswer

__all__ = [
    "CONNECT_TIMEOUT",
    "KEEPALIVE_OPTION",
    "LOGIN_OPTIONS",
    "TIMEOUT_OPTION",
    "HubConnection",
    "HubSession",
    "StdinLines",
    "isGreeting",
    "logIn",
    "readLogin",
    "reason",
    "standardIO",
    "text",
]

#: Longest line accepted from the hub; the hub's own lines are far shorter.
MAX_HUB_LINE = 1 << 20

#: Seconds allowed for one connection attempt.
CONNECT_TIMEOUT = 10.0


def reason(failure: Failure) -> str:
    """
    The first line of what a L{Failure} says.
    """
    return why(failure.value or Exception())


def text(line: bytes) -> str:
    """
    A line from the hub, as text to show.
    """
    return line.decode("utf-8", "replace")


def isGreeting(line: bytes) -> bool:
    """
    Whether a line from the hub is its greeting (L{netdemo.hubwire.greeting}).
    """
    return line.startswith(b"* welcome to ")


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

#: C{--keepalive}, of C{chat} and C{tail}.
KEEPALIVE_OPTION: list[Any] = [
    "keepalive",
    "k",
    60.0,
    "Seconds between /ping commands that keep a quiet connection open past "
    "the hub's idle timeout",
    _keepaliveCoerce,
]

#: C{--timeout}, of C{chat} and C{tail}.
TIMEOUT_OPTION: list[Any] = [
    "timeout",
    "W",
    CONNECT_TIMEOUT,
    "Seconds to wait for a connection, the hub's greeting and the answers "
    "that set the session up",
    positive(float, "a number above 0"),
]


#: C{--user}, C{--password-file} and C{--token-file}, of C{chat}, C{tail}
#: and C{pub}: a secret is read from a file, never given on the command
#: line (where C{ps} and the shell's history would show it).
LOGIN_OPTIONS: list[list[Any]] = [
    [
        "user",
        None,
        None,
        "Log in to the hub (one run with --hub-auth) as USER, with the secret "
        "of --password-file or --token-file",
    ],
    ["password-file", None, None, "File whose first line is USER's password"],
    ["token-file", None, None, "File whose first line is USER's token"],
]

#: The longest secret read from a file.
MAX_SECRET = 4096


def readLogin(options: Any) -> None:
    """
    Check C{--user}, C{--password-file} and C{--token-file}, and read the
    secret: C{options["login"]} becomes the C{/login} line to send, or
    L{None}.

    @raise usage.UsageError: One line naming the option that is wrong.
    """
    from twisted.python import usage

    user = options["user"]
    files = [
        (name, options[name])
        for name in ("password-file", "token-file")
        if options[name] is not None
    ]
    options["login"] = None
    if user is None:
        if files:
            raise usage.UsageError(f"--{files[0][0]} needs --user")
        return
    if not user or any(c.isspace() for c in user):
        raise usage.UsageError(f"--user {user!r} is not a user name")
    if len(files) != 1:
        raise usage.UsageError("--user needs one of --password-file and --token-file")
    name, path = files[0]
    try:
        with open(path, "rb") as f:
            first = f.read(MAX_SECRET + 2).split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as e:
        raise usage.UsageError(
            f"--{name} {path!r}: cannot read it ({e.strerror or e})"
        ) from None
    if not first.strip():
        raise usage.UsageError(f"--{name} {path!r}: its first line is empty")
    if len(first) > MAX_SECRET:
        raise usage.UsageError(
            f"--{name} {path!r}: its first line is longer than {MAX_SECRET} bytes"
        )
    options["login"] = b"/login " + user.encode("utf-8") + b" " + first


async def logIn(connection: HubConnection, options: Any) -> None:
    """
    Log in as C{--user}, if given (the first command of every connection).

    @raise CommandError: The hub refused the login.
    """
    line = options.get("login")
    if line is None:
        return
    answer = await connection.command(line)
    if answer.startswith(ERR):
        raise CommandError(
            f"the hub refused the login as {options['user']}: {text(answer)}"
        )


class HubConnection(Protocol):
    """
    One connection to the hub: splits what the hub says into lines, pairs
    answers with the commands sent (in order), and hands every other line
    to C{onLine}.

    @ivar lost: Whether the connection is closed.
    @ivar lostReason: Why, once it is.
    @ivar greeting: Fires with the first line the hub sends (its greeting,
        or the reason it refuses the connection); with C{b""} if the
        connection is lost first.
    @ivar closed: Fires once the connection is closed.
    """

    def __init__(
        self,
        console: Console,
        onLine: Callable[[bytes], None],
        onLost: Callable[[HubConnection, Failure], None],
        onMade: Callable[[HubConnection], None] | None = None,
        onBatch: Callable[[], None] | None = None,
    ) -> None:
        self.console = console
        self.onLine = onLine
        self.onLost = onLost
        self.onMade = onMade
        self.onBatch = onBatch
        self._lines = LineBuffer()
        self._pending: deque[Deferred[bytes]] = deque()
        self._keepalive: LoopingCall | None = None
        self.lost = False
        self.lostReason: Failure | None = None
        self.greeting: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.onMade is not None:
            self.onMade(self)

    def dataReceived(self, data: bytes) -> None:
        lines = self._lines.feed(data)
        if lines:
            for line in lines:
                first = not self.greeting.called
                if isAnswer(line) and self._pending:
                    self._pending.popleft().callback(line)
                else:
                    self.onLine(line)
                if first:
                    # After the line is shown: the greeting comes before
                    # "connected", with or without a nickname to take.
                    self.greeting.callback(line)
            if self.onBatch is not None:
                self.onBatch()
        if len(self._lines.partial) > MAX_HUB_LINE:
            self.console.note(f"the hub sent a line longer than {MAX_HUB_LINE} bytes")
            self.abort()

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

    def abort(self) -> None:
        """
        Close the connection now, if it is still open.
        """
        if self.transport is not None and self.connected:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(ConnectionDone())
        self.lost = True
        self.lostReason = reason
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
    when it loses and regains the hub.

    @ivar connection: The connection that is set up, or L{None}.
    @ivar final: Set when the next close is the end of the session (a
        C{/quit} or Ctrl-C), not a reason to reconnect.
    @ivar ended: Fires once the session has ended.
    """

    def __init__(
        self,
        reactor: Any,
        console: Console,
        host: str,
        port: int,
        onLine: Callable[[bytes], None],
        setUp: Callable[[HubConnection, bool], Deferred[None]],
        keepalive: float,
        timeout: float = CONNECT_TIMEOUT,
        onBatch: Callable[[], None] | None = None,
        clock: Any = None,
        tls: Any = None,
    ) -> None:
        """
        @param clock: What times the set-up, the keepalive and the retries
            (the reactor unless given).
        @param tls: Connect over TLS with this connection creator
            (L{netdemo.clients.tlsclient.clientTLS}).
        """
        from netdemo.clients.tlsclient import clientEndpoint

        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self.console = console
        self.target = formatHostPort(host, port)
        self.setUp = setUp
        self.keepalive = keepalive
        self.timeout = timeout
        self.connection: HubConnection | None = None
        self.final = False
        self.connections = 0
        self.ended: Deferred[None] = Deferred()
        self._latest: HubConnection | None = None
        self._setUpError: Exception | None = None
        endpoint = clientEndpoint(reactor, host, port, timeout, tls)
        factory = _HubFactory(
            lambda: HubConnection(console, onLine, self._lost, self._made, onBatch)
        )
        self.service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=10.0, factor=2.0),
            clock=self.clock,
            prepareConnection=self._prepare,
        )
        self._trigger = reactor.addSystemEventTrigger(
            "before", "shutdown", self._shuttingDown
        )

    @classmethod
    def fromOptions(
        cls,
        reactor: Any,
        console: Console,
        options: Any,
        onLine: Callable[[bytes], None],
        setUp: Callable[[HubConnection, bool], Deferred[None]],
        onBatch: Callable[[], None] | None = None,
    ) -> HubSession:
        """
        A session to the hub a command's options name (C{host}, C{port},
        C{keepalive}, C{timeout}).
        """
        return cls(
            reactor,
            console,
            options["host"],
            options["port"],
            onLine,
            setUp,
            options["keepalive"],
            options["timeout"],
            onBatch,
            tls=getattr(options, "tlsClient", None),
        )

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
            connection.keepAlive(self.keepalive, self.clock)
            again = "connected" if first else "reconnected"
            self.console.note(f"{again} to {self.target}")

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError, DeferredTimeout):
                problem = CommandError(
                    f"no answer from {self.target} within {self.timeout:g} s"
                )
            elif failure.check(CommandError):
                problem = failure.value  # type: ignore[assignment]
            else:
                problem = CommandError(
                    f"{self.target} closed the connection ({reason(failure)})"
                )
            if first:
                self._setUpError = problem
            else:
                self.console.note(f"{problem}; reconnecting")
            connection.close()

        async def prepare() -> None:
            greeting = await connection.greeting
            if connection.lost:
                lost = connection.lostReason
                raise CommandError(
                    f"{self.target} closed the connection without a greeting"
                    + (
                        f" ({reason(lost)})"
                        if lost is not None and not lost.check(ConnectionDone)
                        else ""
                    )
                )
            if greeting.startswith(ERR):
                raise CommandError(
                    f"{self.target} refused the connection: {text(greeting)}"
                )
            await self.setUp(connection, first)

        preparing = Deferred.fromCoroutine(prepare())
        preparing.addTimeout(self.timeout, self.clock)
        return preparing.addCallbacks(ready, failed)

    def _lost(self, connection: HubConnection, failure: Failure) -> None:
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
        self.console.note(
            f"lost connection to {self.target} ({reason(failure)}); reconnecting"
        )

    async def stop(self) -> None:
        """
        End the session: close the connection and stop reconnecting.
        """
        self.final = True
        if self._trigger is not None:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        await self.service.stopService()
        if not self.ended.called:
            self.ended.callback(None)


@implementer(IHalfCloseableProtocol)
class StdinLines(Protocol):
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
        self._lines = LineBuffer()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            self.onLine(line)

    def readConnectionLost(self) -> None:
        for line in self._lines.end():
            self.onLine(line)
        self.onEnd()

    def writeConnectionLost(self) -> None:
        self.onStdoutGone()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


def standardIO(protocol: Protocol, console: Console, reactor: Any) -> Any:
    """
    Read standard input into C{protocol}.

    @return: The transport: it pauses and resumes reading, and what is
        written to it goes to the console's byte stream, through Twisted's
        non-blocking writer (a slow reader of the output never blocks the
        reactor; its going away is reported to C{protocol}).
    """
    from twisted.internet.stdio import StandardIO

    output = console.bytesOut()
    output.flush()
    # mypy reads the Windows StandardIO, which has no descriptors to give.
    return StandardIO(  # type: ignore[call-arg]
        protocol, stdout=output.fileno(), reactor=reactor
    )
