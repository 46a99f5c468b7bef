# -*- test-case-name: tests.test_cli_hub -*-
"""
C{netdemo chat HOST:PORT}: a line client for the pub/sub hub that
reconnects.

Each line of standard input goes to the hub; everything the hub says goes to
the console's output; notices (lost, reconnected, the summary) to its
notices.  At the end of standard input it sends what is left, says C{/quit}
and ends once the hub has closed the connection, so it works in pipes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from zope.interface import implementer

from netdemo.clients.common import (
    CommandError,
    Console,
    GnuOptions,
    parseHostPort,
    plural,
    whenInterrupted,
)
from netdemo.clients.hubclient import (
    CONNECT_TIMEOUT,
    KEEPALIVE_OPTION,
    LOGIN_OPTIONS,
    TIMEOUT_OPTION,
    HubConnection,
    HubSession,
    StdinLines,
    isGreeting,
    logIn,
    readLogin,
    standardIO,
    text,
)
from netdemo.clients.tlsclient import TLSClientOptions
from netdemo.hubwire import ERR, isCommand, isQuit, parseDelivery

__all__ = ["ChatOptions", "runChat"]

#: Lines waiting to be sent (the hub away) past which standard input is
#: paused.
MAX_QUEUED_LINES = 10000

#: Seconds left to standard output to drain once the session ended.
DRAIN_OUTPUT = 2.0

_NICK_OK = b"+OK nick "


class ChatOptions(TLSClientOptions, GnuOptions):
    """
    C{netdemo chat HOST:PORT [--nick NAME]}.
    """

    synopsis = "HOST:PORT [--nick NAME] [--keepalive SECONDS] [--tls ...]"
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
        "  printf '/history 5\\n' | netdemo chat 127.0.0.1:8008\n"
        "  netdemo chat 127.0.0.1:8008 --user alice --password-file ~/.hubpw"
    )
    optParameters: list[list[Any]] = [
        ["nick", "n", None, "Nickname to take (again after every reconnection)"],
        KEEPALIVE_OPTION,
        TIMEOUT_OPTION,
        *LOGIN_OPTIONS,
    ]

    def parseArgs(self, target: str) -> None:  # type: ignore[override]
        self["host"], self["port"] = parseHostPort(target)

    def postOptions(self) -> None:
        readLogin(self)


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


class Chat:
    """
    The state of a C{netdemo chat} run.

    @ivar output: Standard input's transport: written to, it writes to the
        console's output; paused, it stops reading standard input.
    """

    def __init__(self, reactor: Any, options: ChatOptions, console: Console) -> None:
        self.reactor = reactor
        self.console = console
        self.options = options
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
        self._early: list[bytes] = []
        self._quitTimer: IDelayedCall | None = None
        self.session = HubSession.fromOptions(
            reactor, console, options, self.hubLine, self.setUp
        )

    def write(self, line: bytes) -> None:
        """
        Write one line to the output; keep it until there is one (while the
        session is being set up).
        """
        if self.output is not None:
            self.output.write(line + b"\n")
        elif len(self._early) < MAX_QUEUED_LINES:
            self._early.append(line)

    def attach(self, output: Any) -> None:
        """
        The output is there: write what came before it.
        """
        self.output = output
        early, self._early = self._early, []
        for line in early:
            self.write(line)

    def hubLine(self, line: bytes) -> None:
        """
        A line from the hub that is not an answer: show it (the greeting as
        a notice, with or without C{--nick}).
        """
        if isGreeting(line):
            self.console.note(f"hub: {text(line)}")
            return
        if parseDelivery(line) is not None:
            self.received += 1
        self.write(line)

    def _learnNick(self, answer: bytes) -> bytes:
        """
        Remember the nickname the hub confirmed, to take it again after a
        reconnection.
        """
        if answer.startswith(_NICK_OK):
            self.nick = answer[len(_NICK_OK) :]
        return answer

    def setUp(self, connection: HubConnection, first: bool) -> Deferred[None]:
        """
        Log in and take the nickname (again), then send what was typed
        meanwhile.
        """
        connection.transport.registerProducer(  # type: ignore[union-attr]
            _Throttle(self.throttle), True
        )
        return Deferred.fromCoroutine(self._setUp(connection, first))

    async def _setUp(self, connection: HubConnection, first: bool) -> None:
        """
        Log in (with C{--user}), take the nickname (with C{--nick}).
        """
        await logIn(connection, self.options)
        if self.nick is not None:
            answer = self._learnNick(await connection.command(b"/nick " + self.nick))
            if answer.startswith(ERR):
                if first:
                    raise CommandError(f"the hub refused the nickname: {text(answer)}")
                self.console.note(f"nickname: {text(answer)}")
        self.reactor.callLater(0, self.flush)

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
            # The hub closes after /quit; if it does not, abort.
            self._quitTimer = self.reactor.callLater(CONNECT_TIMEOUT, connection.abort)

    def ended(self) -> None:
        """
        Standard input ended.
        """
        self.inputEnded = True
        self.flush()

    def summary(self) -> str:
        """
        The closing notice.
        """
        return (
            f"chat with {self.session.target} ended: "
            f"{plural(self.sent, 'line')} sent, "
            f"{plural(self.received, 'message')} received, "
            f"{plural(max(self.session.connections - 1, 0), 'reconnection')}"
        )

    def done(self) -> None:
        """
        The session ended: no more timers.
        """
        if self._quitTimer is not None and self._quitTimer.active():
            self._quitTimer.cancel()


async def runChat(reactor: Any, options: ChatOptions, console: Console) -> int:
    """
    Run C{netdemo chat}.

    @return: The exit status.
    """
    chat = Chat(reactor, options, console)
    interrupted = whenInterrupted(reactor)

    def stdoutGone() -> None:
        if not interrupted.called:
            interrupted.callback(None)

    stdin = StdinLines(chat.typed, chat.ended, stdoutGone)
    await chat.session.start()
    chat.attach(standardIO(stdin, console, reactor))

    def stop(_: object) -> None:
        if not chat.session.ended.called:
            Deferred.fromCoroutine(chat.session.stop())

    interrupted.addCallback(stop)
    await chat.session.ended
    await chat.session.stop()
    chat.done()
    console.note(chat.summary())
    chat.output.loseConnection()

    def giveUp() -> None:
        if not stdin.closed.called:
            stdin.closed.callback(None)

    # The output is flushed by then unless its reader stopped reading.
    timer = reactor.callLater(DRAIN_OUTPUT, giveUp)
    await stdin.closed
    if timer.active():
        timer.cancel()
    return 0
