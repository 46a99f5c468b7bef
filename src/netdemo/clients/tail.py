# -*- test-case-name: tests.test_cli_hub -*-
"""
C{netdemo tail HOST:PORT [--sub PATTERN]...}: subscribe to the pub/sub hub
and print every message delivered, as the hub sent it or as JSON.

Deliveries go to the console's byte output, byte for byte; notices to its
notices.  When nobody reads the output any more (C{| head}), tail ends
quietly.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import usage

from netdemo.clients.common import (
    CommandError,
    Console,
    GnuOptions,
    countCoerce,
    parseHostPort,
    plural,
    whenInterrupted,
)
from netdemo.clients.hubclient import (
    KEEPALIVE_OPTION,
    LOGIN_OPTIONS,
    TIMEOUT_OPTION,
    HubConnection,
    HubSession,
    isGreeting,
    logIn,
    readLogin,
    text,
)
from netdemo.clients.tlsclient import TLSClientOptions
from netdemo.hubwire import (
    DEFAULT_TOPIC,
    ERR,
    Delivery,
    parseDelivery,
    patternMatches,
)

__all__ = ["TailOptions", "asJSON", "runTail", "topicMatches"]


def _historyCoerce(value: str) -> int:
    """
    Coerce C{--history}: a whole number, at least 0.
    """
    return countCoerce(value)


class TailOptions(TLSClientOptions, GnuOptions):
    """
    C{netdemo tail HOST:PORT [--sub PATTERN]... [--history N] [--json]}.
    """

    synopsis = "HOST:PORT [--sub PATTERN]... [--history N] [--json] [--tls ...]"
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
        "  netdemo tail 127.0.0.1:8008 -s '>' --json | jq .text\n"
        "  netdemo tail 127.0.0.1:8008 -s 'lab.>' --user al --password-file pw"
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
        KEEPALIVE_OPTION,
        TIMEOUT_OPTION,
        *LOGIN_OPTIONS,
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
            self["subs"] = [DEFAULT_TOPIC.decode()]
        for pattern in self["subs"]:
            if not pattern or any(c.isspace() for c in pattern):
                raise usage.UsageError(f"--sub {pattern!r} is not a pattern")
        readLogin(self)


def topicMatches(pattern: str, topic: str) -> bool:
    """
    Whether a hub pattern matches a topic (C{*} one token, a final C{>}
    one or more).
    """
    return patternMatches(pattern.encode().split(b"."), topic.encode().split(b"."))


def asJSON(delivery: Delivery, received: datetime, history: bool) -> str:
    """
    A delivery as one JSON object (one line): C{topic}, C{identity},
    C{text} (invalid UTF-8 replaced), C{received} (UTC, ISO 8601) and
    C{history} (whether the line was replayed from the hub's history).
    """
    stamp = received.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps(
        {
            "topic": delivery.topic.decode("ascii", "replace"),
            "identity": delivery.identity.decode("utf-8", "replace"),
            "text": delivery.text.decode("utf-8", "replace"),
            "received": stamp,
            "history": history,
        },
        ensure_ascii=False,
    )


class Tail:
    """
    The state of a C{netdemo tail} run.

    @ivar stopped: Fires when the run should end (Ctrl-C, or nobody reads
        the output).
    """

    def __init__(self, reactor: Any, options: TailOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.patterns: list[str] = options["subs"]
        self.messages = 0
        self.replayed = 0
        self.replaying = False
        self.out = console.bytesOut()
        self.session = HubSession.fromOptions(
            reactor, console, options, self.hubLine, self.setUp, self.flush
        )
        self.stopped: Deferred[None] = Deferred()

    def hubLine(self, line: bytes) -> None:
        """
        Print a delivery; notices and stray lines are notices.
        """
        delivery = parseDelivery(line)
        if delivery is None:
            settingUp = self.session.connection is None
            if not isGreeting(line) and not (settingUp and line.startswith(ERR)):
                self.console.note(f"hub: {text(line)}")
            return
        self.messages += 1
        if self.replaying:
            self.replayed += 1
        if self.options["json"]:
            received = datetime.now(timezone.utc)
            self.write(asJSON(delivery, received, self.replaying).encode() + b"\n")
        else:
            self.write(line + b"\n")

    def write(self, data: bytes) -> None:
        """
        Write to the output; when its reader has gone (C{| head}), stop.
        """
        try:
            self.out.write(data)
        except BrokenPipeError:
            self.outputGone()

    def flush(self) -> None:
        """
        Flush the output (after each read from the hub).
        """
        try:
            self.out.flush()
        except BrokenPipeError:
            self.outputGone()

    def outputGone(self) -> None:
        """
        Nobody reads the output any more: end quietly.  If it is a
        descriptor (standard output), point it at C{/dev/null}, so that
        what is still buffered can be flushed at exit without an error.
        """
        try:
            descriptor = self.out.fileno()
        except (AttributeError, OSError, ValueError):
            descriptor = None
        if descriptor is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, descriptor)
            os.close(devnull)
        if not self.stopped.called:
            self.stopped.callback(None)

    async def _setUp(self, connection: HubConnection, first: bool) -> None:
        """
        Unsubscribe from the default topic unless asked for, subscribe to
        every pattern, replay the history on the first connection.
        """
        await logIn(connection, self.options)
        wanted = [p.encode("utf-8") for p in self.patterns]
        if DEFAULT_TOPIC not in wanted:
            await connection.command(b"/unsub " + DEFAULT_TOPIC)
        for pattern in wanted:
            answer = await connection.command(b"/sub " + pattern)
            if answer.startswith(ERR):
                if first:
                    raise CommandError(
                        f"the hub refused --sub {text(pattern)!r}: {text(answer)}"
                    )
                self.console.note(f"subscription: {text(answer)}")
        if first and self.options["history"]:
            await self._replay(connection)

    async def _replay(self, connection: HubConnection) -> None:
        """
        Replay the history of every topic that the hub keeps history for and
        a pattern matches.
        """
        answer = await connection.command(b"/topics")
        _, _, known = text(answer).partition("with history:")
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

    def summary(self) -> str:
        """
        The closing notice.
        """
        return (
            f"tail of {self.session.target} ended: "
            f"{plural(self.messages, 'message')} ({self.replayed} from history), "
            f"{plural(max(self.session.connections - 1, 0), 'reconnection')}"
        )


async def runTail(reactor: Any, options: TailOptions, console: Console) -> int:
    """
    Run C{netdemo tail}.

    @return: The exit status.
    """
    tail = Tail(reactor, options, console)
    interrupted = whenInterrupted(reactor)

    def stop(_: object) -> None:
        if not tail.stopped.called:
            tail.stopped.callback(None)

    interrupted.addCallback(stop)
    await tail.session.start()
    await tail.stopped
    await tail.session.stop()
    tail.flush()
    console.note(tail.summary())
    return 0
