"""
Tests for L{netdemo.logs.jsonObserver}: one JSON object per line.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from netdemo.logs import JSONLinesObserver, eventAsRecord, jsonObserver


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
