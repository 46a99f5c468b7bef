# -*- test-case-name: tests.test_cli_hub -*-
"""
C{netdemo pub HOST:PORT TOPIC [MESSAGE | -]}: publish to a topic of the
pub/sub hub and exit once the hub has acknowledged every message.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.failure import Failure

from netdemo.clients.common import (
    CommandError,
    Console,
    GnuOptions,
    formatHostPort,
    parseHostPort,
    positive,
    why,
)
from netdemo.clients.hubclient import (
    LOGIN_OPTIONS,
    HubConnection,
    StdinLines,
    logIn,
    readLogin,
    reason,
    standardIO,
    text,
)
from netdemo.clients.tlsclient import TLSClientOptions, clientEndpoint
from netdemo.hubwire import ERR, SHUTTING_DOWN

__all__ = ["PubOptions", "runPub"]

#: C{/pub} commands sent ahead of their answers before stdin is paused.
PUB_WINDOW = 1000


class PubOptions(TLSClientOptions, GnuOptions):
    """
    C{netdemo pub HOST:PORT TOPIC [MESSAGE | -]}.
    """

    synopsis = "HOST:PORT TOPIC [MESSAGE... | -] [--timeout SECONDS] [--tls ...]"
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
        "  tail -f app.log | netdemo pub 127.0.0.1:8008 logs.app -\n"
        "  netdemo pub 127.0.0.1:8008 lab.rack7.t 21 --user s7 --token-file s7.tok"
    )
    optParameters: list[list[Any]] = [
        [
            "timeout",
            "W",
            10.0,
            "Seconds to wait for the hub's answer",
            positive(float, "a number above 0"),
        ],
        *LOGIN_OPTIONS,
    ]

    def parseArgs(self, target: str, topic: str, *message: str) -> None:  # type: ignore[override]
        self["host"], self["port"] = parseHostPort(target)
        if not topic or any(c.isspace() for c in topic):
            raise usage.UsageError(f"topic {topic!r} is not a topic")
        self["topic"] = topic
        joined = " ".join(message)
        if message == ("-",) or not message:
            self["message"] = None
        elif not joined.strip():
            raise usage.UsageError("the message is empty")
        else:
            self["message"] = joined

    def postOptions(self) -> None:
        readLogin(self)


class Publisher:
    """
    Send C{/pub} commands, at most L{PUB_WINDOW} ahead of their answers,
    and count the acknowledgements.

    @ivar done: Fires with the number acknowledged, or fails with
        L{CommandError}.
    @ivar input: What to pause while too many answers are awaited.
    """

    def __init__(
        self, clock: Any, connection: HubConnection, topic: bytes, timeout: float
    ) -> None:
        self.clock = clock
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

    def publish(self, line: bytes) -> None:
        """
        Publish one message (empty lines are skipped).
        """
        if not line.strip() or self.done.called:
            return
        self.sent += 1
        number = self.sent
        self.connection.command(self.prefix + line).addCallbacks(
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
            self._timer = self.clock.callLater(self.timeout, self._expired)

    def _disarm(self) -> None:
        """
        Stop the answer timer.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _answered(self, number: int, answer: bytes) -> None:
        """
        The answer to message C{number} arrived.
        """
        if answer.startswith(ERR):
            self._fail(f"the hub refused message {number}: {text(answer)}")
            return
        self.acknowledged += 1
        self._disarm()
        if self.outstanding:
            self._arm()
        if self._paused and self.outstanding < PUB_WINDOW // 2:
            self._paused = False
            self.input.resumeProducing()
        self._check()

    def _lost(self, failure: Failure) -> None:
        """
        The connection was closed before every answer came.
        """
        self._fail(
            f"the hub closed the connection ({reason(failure)}) with "
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
        self._disarm()
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
            self._disarm()
            self.done.callback(self.acknowledged)


async def runPub(reactor: Any, options: PubOptions, console: Console) -> int:
    """
    Run C{netdemo pub}.

    @return: The exit status.
    """
    from twisted.internet.endpoints import connectProtocol

    host, port = options["host"], options["port"]
    target = formatHostPort(host, port)

    def hubLine(line: bytes) -> None:
        if line.startswith((ERR, SHUTTING_DOWN)):
            console.note(f"hub: {text(line)}")

    connection = HubConnection(console, hubLine, lambda c, r: None)
    endpoint = clientEndpoint(
        reactor, host, port, options["timeout"], options.tlsClient
    )
    try:
        await connectProtocol(endpoint, connection)
    except Exception as e:
        raise CommandError(f"cannot connect to {target}: {why(e)}") from None
    try:
        await logIn(connection, options)
    except CommandError as e:
        connection.abort()
        await connection.closed
        raise CommandError(f"{target}: {e}") from None
    except Exception as e:
        raise CommandError(f"{target} closed the connection ({why(e)})") from None
    publisher = Publisher(
        reactor, connection, options["topic"].encode("utf-8"), options["timeout"]
    )
    if options["message"] is not None:
        for line in options["message"].encode("utf-8").split(b"\n"):
            publisher.publish(line)
        publisher.ended()
    else:
        stdin = StdinLines(publisher.publish, publisher.ended)
        publisher.input = standardIO(stdin, console, reactor)
    try:
        await publisher.done
    except CommandError as e:
        connection.abort()
        await connection.closed
        raise CommandError(f"{target}: {e}") from None
    connection.close()
    await connection.closed
    return 0
