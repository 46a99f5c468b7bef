"""
Tests for L{netdemo.logs}: L{jsonObserver} writes one JSON object per line;
addresses are written the way people type them; L{RateLimitedLog} bounds
floods of events.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
)
from twisted.trial.unittest import SynchronousTestCase

from netdemo.logs import (
    DaemonService,
    JSONLinesObserver,
    RateLimitedLog,
    eventAsRecord,
    formatAddress,
    isChatter,
    jsonObserver,
    quiet,
    renderMessage,
)
from tests.support import captureEvents


class JSONLinesObserverTests(SynchronousTestCase):
    """
    L{JSONLinesObserver} writes flat records.
    """

    def emit(self, level: LogLevel, format: str, **kw: object) -> list[dict]:
        out = io.StringIO()
        log = Logger(namespace="netdemo.test", observer=JSONLinesObserver(out))
        log.emit(level, format, **kw)
        lines = out.getvalue().splitlines(keepends=True)
        self.assertTrue(all(line.endswith("\n") for line in lines))
        return [json.loads(line) for line in lines]

    def test_fields(self) -> None:
        """
        A structured event becomes one line with C{time}, C{level},
        C{namespace}, C{event}, the rendered C{message}, and its own keys.
        """
        (record,) = self.emit(
            LogLevel.warn,
            "{service}: refused {peer}",
            event="refused",
            service="tcp-echo",
            peer="127.0.0.1:5",
            suppressed=0,
        )
        self.assertRegex(record.pop("time"), r"^\d{4}-\d\d-\d\dT[\d:.]+Z$")
        self.assertEqual(
            record,
            {
                "level": "warn",
                "namespace": "netdemo.test",
                "event": "refused",
                "message": "tcp-echo: refused 127.0.0.1:5",
                "service": "tcp-echo",
                "peer": "127.0.0.1:5",
                "suppressed": 0,
            },
        )
        self.assertEqual(list(record)[:4], ["level", "namespace", "event", "message"])

    def test_unserialisable(self) -> None:
        """
        Values JSON cannot hold are written as their C{repr}.
        """
        (record,) = self.emit(LogLevel.info, "x", thing={1, 2}.__class__)
        self.assertEqual(record["thing"], repr(set))

    def test_failure(self) -> None:
        """
        A failure is written as its traceback.
        """
        out = io.StringIO()
        log = Logger(namespace="netdemo.test", observer=JSONLinesObserver(out))
        try:
            raise ZeroDivisionError("on purpose")
        except ZeroDivisionError:
            log.failure("while dividing", event="bug")
        record = json.loads(out.getvalue())
        self.assertEqual(
            (record["level"], record["event"], record["message"]),
            ("critical", "bug", "while dividing"),
        )
        self.assertIn("ZeroDivisionError", record["failure"])

    def test_reservedNames(self) -> None:
        """
        An event key named like a standard field does not replace it.
        """
        record = eventAsRecord(
            {
                "log_format": "hello",
                "log_level": LogLevel.info,
                "log_namespace": "n",
                "log_time": 0.0,
                "level": "mine",
            }
        )
        self.assertEqual(
            (record["level"], record["time"]), ("info", "1970-01-01T00:00:00.000000Z")
        )

    def test_factory(self) -> None:
        """
        The C{--logger} factory takes no argument and writes to standard
        output.
        """
        import sys

        observer = jsonObserver()
        self.assertIsInstance(observer, FilteringLogObserver)
        inner = observer._observer  # type: ignore[attr-defined]
        assert isinstance(inner, JSONLinesObserver)
        self.assertIs(inner.outFile, sys.stdout)


class ChatterTests(SynchronousTestCase):
    """
    L{quiet} drops the lines Twisted logs for every port and at every start
    of C{twistd}, and nothing else (issue 13: a start was about 13 lines of
    them, repeating netdemo's own).
    """

    def legacy(self, text: str, isError: bool = False) -> dict:
        """
        What C{twisted.python.log.msg(text)} publishes, as Twisted's ports
        call it.
        """
        from twisted.python import log

        events = captureEvents(self)
        log.msg(text, isError=isError)
        return events[-1]

    def test_portLines(self) -> None:
        """
        C{X starting on N} and C{(TCP Port N Closed)} (UDP, Unix too) are
        chatter; other legacy lines, and any error, are not.
        """
        for text in (
            "EchoFactory starting on 8007",
            "StatusFactory starting on '/run/status.sock'",
            "(TCP Port 8007 Closed)",
            "(UDP Port 8009 Closed)",
        ):
            self.assertTrue(isChatter(self.legacy(text)), text)
        for text in ("Main loop terminated.", "EchoFactory starting on 8007 now"):
            self.assertFalse(isChatter(self.legacy(text)), text)
        self.assertFalse(isChatter(self.legacy("(TCP Port 8007 Closed)", True)))

    def test_twistdStart(self) -> None:
        """
        twistd's version and reactor lines are chatter (the C{ready} event
        says both); its other lines are not.
        """
        events: list[dict] = []
        log = Logger(namespace="twisted.scripts._twistd_unix.UnixAppLogger")
        log.observer = events.append  # type: ignore[assignment]
        log.info("twistd {version} ({exe} {pyVersion}) starting up.", version="1")
        log.info("reactor class: {reactor}.", reactor="x")
        log.info("Server Shut Down.")
        self.assertEqual([isChatter(e) for e in events], [True, True, False])

    def test_quiet(self) -> None:
        """
        L{quiet} passes every other event to its observer, unchanged.
        """
        seen: list[dict] = []
        observer = quiet(cast(ILogObserver, seen.append))
        chatter = self.legacy("(TCP Port 1 Closed)")
        other = {"log_namespace": "netdemo", "log_format": "hi", "event": "x"}
        observer(chatter)
        observer(other)
        self.assertEqual(seen, [other])


class RenderMessageTests(SynchronousTestCase):
    """
    L{renderMessage} renders as L{formatEvent} does, faster for templates
    without calls.
    """

    def test_sameAsFormatEvent(self) -> None:
        """
        Plain fields, format specifications, conversions, attributes, calls,
        missing keys, positional fields, bytes templates and no template at
        all: the same text as L{formatEvent}.
        """

        class Thing:
            name = "thing"

            def __repr__(self) -> str:
                return "<Thing>"

            def call(self) -> str:
                return "called"

        events: list[dict[str, object]] = [
            {"log_format": "{a} ({b:.3f} s) {c!r}", "a": "x", "b": 1 / 3, "c": "y"},
            {"log_format": "{t.name} {t!r} {t.call()}", "t": Thing()},
            {"log_format": "{missing} here"},
            {"log_format": "{} {0}"},
            {"log_format": b"{a} bytes", "a": 1},
            {"log_format": "literal (with parentheses) {a}", "a": 2},
            {"a": 1},
        ]
        for event in events:
            self.assertEqual(renderMessage(event), formatEvent(event), event)


class FormatAddressTests(SynchronousTestCase):
    """
    L{formatAddress} writes addresses as people type them.
    """

    def test_forms(self) -> None:
        """
        IPv4 as C{host:port}, IPv6 in brackets, UNIX sockets by path, and a
        missing address as a dash.
        """
        for address, text in [
            (IPv4Address("TCP", "127.0.0.1", 8007), "127.0.0.1:8007"),
            (IPv6Address("UDP", "::1", 8009), "[::1]:8009"),
            (UNIXAddress(b"/run/echo.sock"), "unix:/run/echo.sock"),
            (UNIXAddress(None), "unix:(unnamed)"),
            (None, "-"),
        ]:
            self.assertEqual(formatAddress(address), text)


class RateLimitedLogTests(SynchronousTestCase):
    """
    L{RateLimitedLog} emits at most one event per key and interval, and
    counts what it held back.
    """

    def setUp(self) -> None:
        self.out = io.StringIO()
        self.clock = Clock()
        self.limited = RateLimitedLog(
            Logger(namespace="netdemo.test", observer=JSONLinesObserver(self.out)),
            self.clock.seconds,
            interval=10.0,
            maxKeys=2,
        )

    def emit(self, key: str) -> bool:
        """
        Offer one C{refused} event for C{key}.
        """
        return self.limited.emit(key, LogLevel.warn, "refused", event="refused")

    def records(self) -> list[dict]:
        """
        The events written so far.
        """
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def test_interval(self) -> None:
        """
        Within C{interval} seconds of an event, others of the same key are
        held back; the next one emitted says how many were.
        """
        self.assertTrue(self.emit("a"))
        self.assertFalse(self.emit("a"))
        self.clock.advance(9.9)
        self.assertFalse(self.emit("a"))
        self.assertTrue(self.emit("b"))
        self.clock.advance(0.1)
        self.assertTrue(self.emit("a"))
        self.assertEqual([r["suppressed"] for r in self.records()], [0, 0, 2])

    def test_suppressedText(self) -> None:
        """
        The text says how many similar events were held back only when some
        were, in the right number (issue 13: C{0 similar events not
        logged}).
        """
        self.emit("a")
        self.clock.advance(10)
        self.emit("a")
        self.emit("a")
        self.clock.advance(10)
        self.emit("a")
        self.emit("a")
        self.emit("a")
        self.clock.advance(10)
        self.emit("a")
        self.assertEqual(
            [r["message"] for r in self.records()],
            [
                "refused",
                "refused",
                "refused; 1 similar event not logged",
                "refused; 2 similar events not logged",
            ],
        )

    def test_boundedKeys(self) -> None:
        """
        Past C{maxKeys} keys the oldest is forgotten, so its next event is
        emitted.
        """
        for key in "abc":
            self.assertTrue(self.emit(key))
        self.assertFalse(self.emit("c"))
        self.assertTrue(self.emit("a"))


class DaemonServiceTests(SynchronousTestCase):
    """
    Under twistd's own logging, L{DaemonService} gives the application the
    observer twistd would build, without the chatter; with C{--logger}, or
    outside twistd, nothing.
    """

    def application(self) -> Any:
        """
        An application, as twistd makes one for a plugin.
        """
        from twisted.application.service import Application

        return Application("netdemo")

    def test_twistdLogging(self) -> None:
        """
        An ILogObserver component that drops chatter and passes the rest.
        """
        from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "netdemo", "--tcp", "0"])
        application = self.application()
        DaemonService(config).setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, FilteringLogObserver)
        out = io.StringIO()
        self.patch(observer, "_observer", JSONLinesObserver(out))
        observer({"log_namespace": "log_legacy", "log_text": "(TCP Port 1 Closed)"})
        observer({"log_namespace": "n", "log_format": "kept", "log_time": 0.0})
        self.assertEqual(
            [json.loads(line)["message"] for line in out.getvalue().splitlines()],
            ["kept"],
        )

    def test_loggerOption(self) -> None:
        """
        With C{--logger}, twistd ignores components: none is set.
        """
        from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

        config = ServerOptions()
        config.parseOptions(
            ["-n", "--logger=netdemo.logs.jsonObserver", "netdemo", "--tcp", "0"]
        )
        application = self.application()
        DaemonService(config).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_notTwistd(self) -> None:
        """
        Without twistd's options, nothing.
        """
        application = self.application()
        DaemonService().setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))
