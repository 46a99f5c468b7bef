"""
Tests for the C{--http} option of L{netdemo.tap} and the services
L{netdemo.tap.makeService} adds for operations.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.metrics import MemoryMetrics
from netdemo.systemd import listeningSummary
from netdemo.tap import DEFAULTS, Options, makeService


class HTTPOptionTests(SynchronousTestCase):
    """
    C{--http DESC}.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_default(self) -> None:
        """
        With no service option, the status service listens on 127.0.0.1:8080.
        """
        self.assertEqual(DEFAULTS["http"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(self.parse()["http"], ["tcp:8080:interface=127.0.0.1"])

    def test_repeatable(self) -> None:
        """
        C{--http} takes a bare port or a description, repeatedly, and then
        nothing else starts by default.
        """
        options = self.parse("--http", "9090", "--http", "unix:/tmp/status.sock")
        self.assertEqual(
            options["http"], ["tcp:9090:backlog=1024", "unix:/tmp/status.sock"]
        )
        self.assertEqual(options["tcp"], [])

    def test_bad(self) -> None:
        """
        A bad description is one line naming the option and the value.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--http", "nosuch:1")
        self.assertIn("--http: 'nosuch:1'", str(e))
        self.assertNotIn("\n", str(e))


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} adds the HTTP service and, last, the sd_notify service.
    """

    def test_order(self) -> None:
        """
        The notify service comes last, so it starts after every listener.
        """
        options = Options()
        options.parseOptions(["--tcp", "tcp:0:interface=127.0.0.1", "--http", "tcp:0"])
        top = makeService(options, MemoryReactorClock())
        self.assertEqual(
            [service.name for service in top], ["tcp-echo", "http", "sd_notify"]
        )

    def test_summary(self) -> None:
        """
        The STATUS line names every bound listener by service.
        """
        metrics = MemoryMetrics()
        self.assertEqual(listeningSummary(metrics), "Listening on nothing")
        for address in ["[::]:7", "0.0.0.0:7"]:
            metrics.set("netdemo_listener_info", 1, service="tcp-echo", address=address)
        metrics.set("netdemo_listener_info", 0, service="http", address="gone:1")
        metrics.set(
            "netdemo_listener_info", 1, service="http", address="127.0.0.1:8080"
        )
        self.assertEqual(
            listeningSummary(metrics),
            "Listening: http on 127.0.0.1:8080; tcp-echo on 0.0.0.0:7, [::]:7",
        )
