"""
Tests for L{netdemo.logs}: L{jsonObserver} writes one JSON object per line;
addresses are written the way people type them; L{RateLimitedLog} bounds
floods of events.
"""

from __future__ import annotations

import io
import json

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from netdemo.logs import (
    JSONLinesObserver,
    RateLimitedLog,
    eventAsRecord,
    formatAddress,
    jsonObserver,
    renderMessage,
)


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
        self.assertIsInstance(observer, JSONLinesObserver)
        assert isinstance(observer, JSONLinesObserver)
        self.assertIs(observer.outFile, sys.stdout)


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

    def test_boundedKeys(self) -> None:
        """
        Past C{maxKeys} keys the oldest is forgotten, so its next event is
        emitted.
        """
        for key in "abc":
            self.assertTrue(self.emit(key))
        self.assertFalse(self.emit("c"))
        self.assertTrue(self.emit("a"))
