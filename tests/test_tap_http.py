"""
Tests for the C{--http} option of L{netdemo.tap} and the services
L{netdemo.tap.makeService} adds for operations.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.limits import DEFAULT_BACKLOG, HTTPLimits
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
        With no service option, the status service listens on 127.0.0.1:8080
        with the listen backlog of every other stream listener.
        """
        default = f"tcp:8080:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"
        self.assertEqual(DEFAULTS["http"], [default])
        self.assertEqual(self.parse()["http"], [default])

    def test_oneBacklogRule(self) -> None:
        """
        Every default stream listener and every bare port listens with
        L{DEFAULT_BACKLOG}; none is left at Twisted's 50.
        """
        options = self.parse()
        for name in ("tcp", "pubsub", "http"):
            for description in options[name]:
                self.assertTrue(
                    description.endswith(f":backlog={DEFAULT_BACKLOG}"), description
                )
        bare = self.parse("--http", "9090")["http"]
        self.assertEqual(bare, [f"tcp:9090:backlog={DEFAULT_BACKLOG}"])

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

    def test_serverInfo(self) -> None:
        """
        The status page names the host and the instance id that the
        multicast beacons carry, and knows the connection limits.
        """
        import socket

        options = Options()
        options.parseOptions(
            [
                "--multicast",
                "239.255.80.116:7001,interface=127.0.0.1",
                "--http",
                "tcp:0",
                "--max-connections",
                "77",
            ]
        )
        top = makeService(options, MemoryReactorClock())
        resource = top.getServiceNamed("http").site.resource
        [responder] = top.getServiceNamed("multicast").responders
        self.assertEqual(resource.info.hostname, socket.gethostname())
        self.assertEqual(len(resource.info.instance), 12)
        self.assertEqual(resource.info.instance, responder.instance)
        self.assertEqual(resource.limits.maxConnections, 77)

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


class HTTPLimitOptionTests(SynchronousTestCase):
    """
    C{--http-header-timeout} and C{--fd-reserve}, and what L{makeService}
    gives the HTTP service.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """
        The header deadline is 10 s and the descriptor reserve 64, in their
        final types, and both are in C{--help} with their defaults.
        """
        options = self.parse()
        self.assertEqual(options.httpLimits(), HTTPLimits(headerTimeout=10.0))
        self.assertIsInstance(options["http-header-timeout"], float)
        self.assertEqual(options.connectionLimits().descriptorReserve, 64)
        text = " ".join(Options().getUsage(width=200).split())
        self.assertIn("--http-header-timeout SECONDS", text)
        self.assertIn("slow bytes do not extend it. [default: 10]", text)
        self.assertIn("--fd-reserve N", text)
        self.assertIn("0 for no reserve. [default: 64]", text)

    def test_values(self) -> None:
        """
        Given values are coerced; a reserve of 0 turns it off.
        """
        options = self.parse("--http-header-timeout", "2.5", "--fd-reserve", "0")
        self.assertEqual(options.httpLimits().headerTimeout, 2.5)
        self.assertEqual(options.connectionLimits().descriptorReserve, 0)

    def test_bad(self) -> None:
        """
        A header deadline that is not above 0, or a negative reserve, is one
        line naming the option and the value.
        """
        for argv, value in [
            (["--http-header-timeout", "0"], "'0'"),
            (["--http-header-timeout", "inf"], "'inf'"),
            (["--fd-reserve", "-1"], "'-1'"),
            (["--fd-reserve", "some"], "'some'"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(argv[0], str(e))
            self.assertIn(value, str(e))
            self.assertNotIn("\n", str(e))

    def test_given(self) -> None:
        """
        The HTTP service gets the stream services' connection limits and
        its own.
        """
        options = self.parse(
            "--http", "tcp:0", "--max-per-peer", "7", "--http-header-timeout", "3"
        )
        top = makeService(options, MemoryReactorClock())
        factory = top.getServiceNamed("http").factory
        self.assertEqual(factory.limits, options.connectionLimits())
        self.assertEqual(factory.limits.maxPerPeer, 7)
        self.assertEqual(factory.httpLimits, HTTPLimits(headerTimeout=3.0))
