"""
Tests for L{netdemo.tap}: option parsing and validation, and the shape of
the service tree that L{netdemo.tap.makeService} builds.
"""

from __future__ import annotations

from twisted.application.service import IServiceCollection
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from netdemo.echo import EchoFactory
from netdemo.limits import DEFAULT_BACKLOG, ConnectionLimits
from netdemo.tap import Options, makeService
from tests.test_echo import assertDrained


def parse(*args: str) -> Options:
    """
    Parse C{args} with a fresh L{Options}.
    """
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionErrorTests(SynchronousTestCase):
    """
    Bad values give one line naming the value.
    """

    def assertUsageError(self, args: list[str], *fragments: str) -> None:
        """
        Parsing C{args} raises L{UsageError} with one line containing every
        fragment.
        """
        error = self.assertRaises(UsageError, parse, *args)
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_portOutOfRange(self) -> None:
        """
        A bare port above 65535 is refused, naming the value.
        """
        self.assertUsageError(["--tcp", "99999"], "--tcp", "99999", "65535")

    def test_portOutOfRangeInDescription(self) -> None:
        """
        A description's port above 65535 is refused too.
        """
        self.assertUsageError(["--tcp", "tcp:70000"], "70000")

    def test_unknownEndpointType(self) -> None:
        """
        An endpoint type Twisted does not know is refused, naming it.
        """
        self.assertUsageError(["--tcp", "nonsense:1"], "nonsense:1", "nonsense")

    def test_badProxiedDescription(self) -> None:
        """
        What follows C{haproxy:} is checked like any description: one line.
        """
        self.assertUsageError(["--tcp", "haproxy:99999"], "--tcp", "99999")
        self.assertUsageError(
            ["--pubsub", "haproxy:ssl:8443:privateKey=/nonexistent/key.pem"],
            "--pubsub",
            "/nonexistent/key.pem",
        )

    def test_badPortInDescription(self) -> None:
        """
        A description whose port is not a number is refused.
        """
        self.assertUsageError(["--tcp", "tcp:echo"], "tcp:echo")

    def test_missingCertificate(self) -> None:
        """
        An ssl: description whose key file is missing is refused before
        anything listens.
        """
        self.assertUsageError(
            ["--tcp", "ssl:8443:privateKey=/nonexistent/key.pem"],
            "/nonexistent/key.pem",
        )

    def test_negativeLimits(self) -> None:
        """
        Negative or non-numeric limits are refused, naming the value.
        """
        self.assertUsageError(["--max-connections", "-1"], "'-1'")
        self.assertUsageError(["--max-per-peer", "many"], "'many'")
        self.assertUsageError(["--idle-timeout", "-5"], "'-5'")
        self.assertUsageError(["--drain", "soon"], "'soon'")

    def test_unknownOption(self) -> None:
        """
        An unknown option is one line too.
        """
        self.assertUsageError(["--bogus"], "--bogus")


class OptionValueTests(SynchronousTestCase):
    """
    Good values are normalised and defaults have their final types.
    """

    def test_defaultsTypes(self) -> None:
        """
        Defaults are already of the type a parsed value would have.
        """
        options = parse()
        self.assertIsInstance(options["max-connections"], int)
        self.assertIsInstance(options["max-per-peer"], int)
        self.assertIsInstance(options["idle-timeout"], float)
        self.assertIsInstance(options["drain"], float)
        self.assertEqual(
            options.connectionLimits(),
            ConnectionLimits(
                maxConnections=10000, maxPerPeer=256, idleTimeout=300.0, drain=5.0
            ),
        )

    def test_parsedTypes(self) -> None:
        """
        Parsed values are coerced.
        """
        options = parse("--max-connections", "5", "--idle-timeout", "2.5")
        self.assertEqual(options["max-connections"], 5)
        self.assertEqual(options["idle-timeout"], 2.5)

    def test_barePort(self) -> None:
        """
        A bare port means TCP on every address with the larger backlog.
        """
        self.assertEqual(
            parse("--tcp", "8007")["tcp"], [f"tcp:8007:backlog={DEFAULT_BACKLOG}"]
        )

    def test_proxied(self) -> None:
        """
        C{haproxy:} before a port or a description (any case) asks for a
        PROXY header; what follows it is read as without it.
        """
        self.assertEqual(
            parse("--pubsub", "HAProxy:8008")["pubsub"],
            [f"haproxy:tcp:8008:backlog={DEFAULT_BACKLOG}"],
        )
        self.assertEqual(
            parse("--http", "haproxy:tcp:80:interface=10.0.0.5")["http"],
            ["haproxy:tcp:80:interface=10.0.0.5"],
        )

    def test_descriptionsKeptAndRepeatable(self) -> None:
        """
        Endpoint descriptions are kept as given, in order; --tcp repeats.
        """
        options = parse(
            "--tcp",
            "tcp:7:interface=127.0.0.1",
            "--tcp",
            r"tcp6:8007:interface=\:\:1",
            "--tcp",
            "unix:/tmp/echo.sock",
        )
        self.assertEqual(
            options["tcp"],
            [
                "tcp:7:interface=127.0.0.1",
                r"tcp6:8007:interface=\:\:1",
                "unix:/tmp/echo.sock",
            ],
        )

    def test_noServiceMeansDefaults(self) -> None:
        """
        With no service option, the TCP echo starts on 127.0.0.1:8007.
        """
        self.assertEqual(
            parse()["tcp"], [f"tcp:8007:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"]
        )

    def test_helpDocumentsDefaults(self) -> None:
        """
        Every option's help text shows its default.
        """
        usage = Options().getUsage(width=200)
        for fragment in (
            "--tcp",
            "--max-connections",
            "[default: 10000]",
            "[default: 256]",
            "[default: 300]",
            "[default: 5]",
            "127.0.0.1:8007",
        ):
            self.assertIn(fragment, usage)


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds named children that listen on the given reactor.
    """

    def test_shape(self) -> None:
        """
        The top service holds a C{tcp-echo} collection with one named
        listener per description, all sharing one L{EchoFactory}; starting
        it listens on the injected reactor with the requested backlog.
        """
        reactor = MemoryReactorClock()
        options = parse(
            "--tcp", "tcp:0:interface=127.0.0.1", "--tcp", "tcp:7:backlog=5"
        )
        top = makeService(options, reactor)
        echo = IServiceCollection(top).getServiceNamed("tcp-echo")
        names = sorted(s.name for s in echo)
        self.assertEqual(
            names,
            ["tcp-echo tcp:0:interface=127.0.0.1", "tcp-echo tcp:7:backlog=5"],
        )
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        [(p1, f1, b1, i1), (p2, f2, b2, i2)] = reactor.tcpServers
        self.assertEqual((p1, b1, i1), (0, 50, "127.0.0.1"))
        self.assertEqual((p2, b2, i2), (7, 5, ""))
        self.assertIsInstance(f1, EchoFactory)
        self.assertIs(f1, f2)

    def test_barePortBacklog(self) -> None:
        """
        A bare port listens with the documented larger backlog.
        """
        reactor = MemoryReactorClock()
        top = makeService(parse("--tcp", "8007"), reactor)
        top.privilegedStartService()
        [(port, _, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (8007, DEFAULT_BACKLOG, ""))

    def test_stopDrains(self) -> None:
        """
        Stopping the service stops listening, closes connections gracefully
        and, after C{--drain} seconds, aborts those still open; the stop
        Deferred fires once none is left.
        """
        reactor = MemoryReactorClock()
        top = makeService(parse("--tcp", "tcp:0", "--drain", "3"), reactor)
        top.privilegedStartService()
        top.startService()
        echo = IServiceCollection(top).getServiceNamed("tcp-echo")
        protocol = echo.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        assertDrained(self, reactor, protocol, transport, top.stopService(), 3)
