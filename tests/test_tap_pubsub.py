"""
Tests for the C{--pubsub} option and the hub's limit options of
L{netdemo.tap}.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.limits import DEFAULT_BACKLOG, HubLimits
from netdemo.pubsub import PubSubFactory
from netdemo.tap import DEFAULTS, Options, byteSize, makeService


def parse(*argv: str) -> Options:
    """
    Parse a command line.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


class PubSubOptionTests(SynchronousTestCase):
    """
    C{--pubsub DESC} and the hub's limits.
    """

    def test_default(self) -> None:
        """
        With no service option, the hub listens on 127.0.0.1:8008.
        """
        expected = [f"tcp:8008:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"]
        self.assertEqual(DEFAULTS["pubsub"], expected)
        self.assertEqual(parse()["pubsub"], expected)

    def test_repeatable(self) -> None:
        """
        C{--pubsub} takes bare ports and descriptions, repeatedly; then the
        other services do not start by default.
        """
        options = parse("--pubsub", "9008", "--pubsub", "unix:/tmp/hub.sock")
        self.assertEqual(
            options["pubsub"],
            [f"tcp:9008:backlog={DEFAULT_BACKLOG}", "unix:/tmp/hub.sock"],
        )
        self.assertEqual(options["tcp"], [])

    def test_limitsDefaults(self) -> None:
        """
        With no limit options the hub gets the documented defaults.
        """
        self.assertEqual(parse().hubLimits(), HubLimits())
        self.assertEqual(
            HubLimits(),
            HubLimits(
                maxLine=4096,
                lineTimeout=30.0,
                maxPending=1 << 20,
                writeDeadline=10.0,
                slowPolicy="disconnect",
                history=100,
                presence=True,
                replayOnJoin=0,
                presenceInterval=1.0,
                turnLines=1000,
                turnTime=0.01,
                hideAddresses=False,
            ),
        )

    def test_limits(self) -> None:
        """
        Every hub option reaches L{HubLimits}.
        """
        options = parse(
            "--max-line=100",
            "--line-timeout=2.5",
            "--max-pending=1MiB",
            "--write-deadline=3",
            "--slow-policy=drop-oldest",
            "--history=0",
            "--no-presence",
            "--replay-on-join=5",
            "--presence-interval=2.5",
            "--turn-lines=50",
            "--turn-time=0.002",
            "--hide-addresses",
        )
        self.assertEqual(
            options.hubLimits(),
            HubLimits(
                maxLine=100,
                lineTimeout=2.5,
                maxPending=1 << 20,
                writeDeadline=3.0,
                slowPolicy="drop-oldest",
                history=0,
                presence=False,
                replayOnJoin=5,
                presenceInterval=2.5,
                turnLines=50,
                turnTime=0.002,
                hideAddresses=True,
            ),
        )

    def test_byteSize(self) -> None:
        """
        Sizes take decimal and binary suffixes.
        """
        for text, size in [
            ("1048576", 1048576),
            ("1MiB", 1 << 20),
            ("64KiB", 65536),
            ("1MB", 1000000),
            ("2k", 2000),
            ("1G", 10**9),
        ]:
            self.assertEqual(byteSize(text), size, text)
        for text in ["0", "-1", "1.5M", "1XB", "MiB", ""]:
            self.assertRaises(ValueError, byteSize, text)

    def test_bad(self) -> None:
        """
        Bad values are one line naming the value.
        """
        for argv, needle in [
            (["--pubsub", "nosuch:1"], "--pubsub: 'nosuch:1'"),
            (["--max-pending", "0"], "'0'"),
            (["--slow-policy", "ignore"], "'ignore'"),
            (["--history", "-1"], "'-1'"),
            (["--max-line", "lots"], "'lots'"),
            (["--turn-lines", "0"], "'0'"),
            (["--turn-lines", "9" * 5000], "'999"),
            (["--turn-time", "0"], "'0'"),
            (["--turn-time", "nan"], "'nan'"),
            (["--presence-interval", "-1"], "'-1'"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(needle, str(e))
            self.assertNotIn("\n", str(e))


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds the hub with the options' limits.
    """

    def test_hub(self) -> None:
        """
        C{--pubsub} adds a C{pubsub} service whose factory has the limits.
        """
        options = parse("--pubsub", "tcp:0:interface=127.0.0.1", "--history", "7")
        top = makeService(options, MemoryReactorClock())
        hub = top.getServiceNamed("pubsub")
        factory = hub.factory
        self.assertIsInstance(factory, PubSubFactory)
        self.assertEqual(factory.hubLimits.history, 7)
        self.assertEqual(factory.limits, options.connectionLimits())
