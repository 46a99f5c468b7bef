"""
What a newcomer meets first on the command line (issue 13): option errors
that are one line naming the option, a C{--help} that leads with the
services and groups the rest, one warning for options that have no
effect, and a start that logs one line per listener and the ready line.
"""

from __future__ import annotations

import json
import socket

from tools import usagedoc
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.tap import GROUPS, Options, describeWithoutEffect, makeService
from tests.support import Daemon, captureEvents, runTwistd


def parse(*argv: str) -> Options:
    """
    Parse C{argv} as C{twistd netdemo} would, without twistd.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionErrorTests(SynchronousTestCase):
    """
    Every bad option is one line, C{netdemo: --OPTION: ...}, naming the
    value and what is accepted, and exit status 1.  Before, twistd printed
    C{Usage: twistd [options]}, a blank line, then C{twistd -n: Parameter
    type enforcement failed: '-5' is not a number of at least 0}, without
    the option's name.
    """

    def test_realTwistd(self) -> None:
        """
        The issue's own examples, run by a real C{twistd}: its whole output
        is the one line.
        """
        for argv, expected in [
            (
                ["--idle-timeout", "-5"],
                "netdemo: --idle-timeout: '-5' is not a number of seconds of at "
                "least 0",
            ),
            (
                ["--slow-policy", "fast"],
                "netdemo: --slow-policy: 'fast' is not disconnect or drop-oldest",
            ),
            (["--max-pending", "1.5MiB"], "netdemo: --max-pending: '1.5MiB' is not"),
            (["--tcp", "-1"], "netdemo: --tcp: '-1' is not a usable endpoint"),
            (["--nosuch"], "netdemo: --nosuch: no such option"),
            (["--tcp"], "netdemo: --tcp: needs a value"),
            (
                ["--multicast", "239.255.80.1:8001,interface=nosuch0"],
                "netdemo: --multicast: '239.255.80.1:8001,interface=nosuch0': "
                "this host has no interface 'nosuch0'",
            ),
        ]:
            result = runTwistd(*argv)
            output = (result.stdout + result.stderr).strip()
            self.assertEqual(result.returncode, 1, output)
            self.assertEqual(len(output.splitlines()), 1, output)
            self.assertTrue(output.startswith(expected), output)

    def test_everyOptionNamed(self) -> None:
        """
        Whatever option has a bad value, the error starts with its name.
        """
        for group in GROUPS:
            for option in group.options:
                if option.coerce is None or option.coerce is str:
                    continue
                with self.subTest(option.name):
                    e = self.assertRaises(
                        usage.UsageError, parse, f"--{option.name}", "-7x"
                    )
                    self.assertTrue(
                        str(e).startswith(f"--{option.name}: '-7x'"), str(e)
                    )
                    self.assertNotIn("\n", str(e))


class HelpTests(SynchronousTestCase):
    """
    C{twistd netdemo --help} leads with the overview and the services, then
    groups the settings by service, says each default once, and fits in 80
    columns; C{docs/usage.md} shows it as the code prints it.
    """

    def setUp(self) -> None:
        self.text = usagedoc.helpText()
        self.lines = self.text.splitlines()

    def test_order(self) -> None:
        """
        The synopsis, the overview, then the services, then the groups, in
        that order.
        """
        self.assertTrue(self.lines[0].startswith("Usage: twistd [options] netdemo"))
        self.assertTrue(self.lines[2].startswith("Run the classic network utility"))
        titles = [line for line in self.lines if line.endswith(":") and line[0] != " "]
        self.assertEqual(titles[0], GROUPS[0].title + ":")
        self.assertEqual(titles, [g.title + ":" for g in GROUPS] + ["Other:"])
        heads = [line.split()[0] for line in self.lines if line.startswith("  --")]
        self.assertEqual(
            heads[:7],
            [
                "--tcp",
                "--pubsub",
                "--broadcast",
                "--udp",
                "--multicast",
                "--http",
                "--udp-peer",
            ],
        )

    def test_width(self) -> None:
        """
        Every line is shorter than 80 columns.
        """
        for line in self.lines:
            self.assertLess(len(line), 80, line)

    def test_everyOptionOnceWithItsDefault(self) -> None:
        """
        Every option twistd accepts is shown once, in a group; each default
        once, and no Twisted "Must be ..." text (the grouped help says it).
        """
        options = Options()
        accepted = {name.rstrip("=") for name in options.longOpt}
        shown = {o.name for g in GROUPS for o in g.options} | {"help", "version"}
        self.assertEqual(accepted, shown)
        heads = [line.split()[0] for line in self.lines if line.startswith("  --")]
        self.assertEqual(sorted(heads), sorted(f"--{name}" for name in shown))
        self.assertEqual(self.text.count("[default: 10000]"), 2)  # two options
        self.assertEqual(self.text.count("[default: 300]"), 1)
        self.assertNotIn("Must be", self.text)
        for group in GROUPS:
            for option in group.options:
                shownDefault = option.defaultText()
                if shownDefault:
                    self.assertIn(
                        f"[{group.defaultLabel}: {shownDefault}]",
                        " ".join(self.text.split()),
                    )

    def test_docsShowIt(self) -> None:
        """
        C{docs/usage.md} holds the help as the code prints it (regenerate
        with C{python tools/usagedoc.py}).
        """
        document = usagedoc.DOC.read_text(encoding="utf-8")
        self.assertEqual(usagedoc.rendered(document), document)
        self.assertIn(self.text.rstrip(), document)

    def test_realTwistd(self) -> None:
        """
        A real C{twistd netdemo --help} prints the same, and exits 0.
        """
        result = runTwistd("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, self.text)


class WithoutEffectTests(SynchronousTestCase):
    """
    Options given without the service they tune are named in one warning
    (before, C{--tcp 8007 --max-pending 1GB} started silently).
    """

    def test_found(self) -> None:
        """
        Settings that differ from their default and whose services are not
        running are found, each with what it needs; defaults given
        explicitly, and settings of running services, are not.
        """
        options = parse(
            "--tcp",
            "0",
            "--max-pending",
            "1GB",
            "--slow-policy",
            "drop-oldest",
            "--history",
            "100",
            "--udp-rate",
            "5",
            "--udp-allow",
            "10.0.0.0/8",
            "--http-header-timeout",
            "3",
            "--idle-timeout",
            "5",
        )
        self.assertEqual(
            options.withoutEffect,
            [
                ("max-pending", ("pubsub", "broadcast")),
                ("slow-policy", ("pubsub", "broadcast")),
                ("udp-allow", ("udp", "multicast")),
                ("udp-rate", ("udp", "multicast")),
                ("http-header-timeout", ("http",)),
            ],
        )
        self.assertEqual(
            describeWithoutEffect(options.withoutEffect),
            "--max-pending and --slow-policy have no effect without --pubsub or "
            "--broadcast; "
            "--udp-allow and --udp-rate have no effect without --udp or "
            "--multicast; --http-header-timeout has no effect without --http",
        )
        self.assertEqual(parse("--max-pending", "1GB").withoutEffect, [])
        self.assertEqual(parse("--pubsub", "0", "--no-presence").withoutEffect, [])

    def test_logged(self) -> None:
        """
        L{makeService} logs them as one C{options_without_effect} warning.
        """
        events = captureEvents(self)
        makeService(parse("--tcp", "0", "--no-presence"), MemoryReactorClock())
        [event] = [e for e in events if e.get("event") == "options_without_effect"]
        self.assertEqual(event["options"], ["no-presence"])
        self.assertEqual(event["text"], "--no-presence has no effect without --pubsub")


def freeUDPPort() -> int:
    """
    A UDP port nothing on 127.0.0.1 uses now (for the multicast group's
    port, which cannot be 0 on the command line).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class StartLogTests(SynchronousTestCase):
    """
    A start with every service logs one line per listener and the ready
    line, in twistd's own text log as in JSON (before: about 13 more lines
    of Twisted's, such as C{EchoFactory starting on 8007} and C{Starting
    factory <netdemo.echo.EchoFactory object at 0x7f...>}, and a second line
    for the multicast join); a stop logs no C{(TCP Port N Closed)}.
    """

    ARGS = (
        "--tcp",
        "tcp:0:interface=127.0.0.1",
        "--pubsub",
        "tcp:0:interface=127.0.0.1",
        "--broadcast",
        "tcp:0:interface=127.0.0.1",
        "--udp",
        "127.0.0.1:0",
        "--http",
        "tcp:0:interface=127.0.0.1",
    )

    def startAndStop(self, twistdArgs: tuple[str, ...]) -> list[str]:
        """
        Start every service, wait for the ready line, stop; every line
        logged.
        """
        group = f"239.255.80.1:{freeUDPPort()},interface=127.0.0.1"
        daemon = Daemon(*self.ARGS, "--multicast", group, twistdArgs=twistdArgs)
        self.addCleanup(daemon.close)
        daemon.waitFor(r" ready \(Twisted ")
        daemon.stop()
        return [line for line in daemon.log().splitlines() if line.strip()]

    def check(self, lines: list[str], ready: int) -> None:
        """
        The first C{ready + 1} lines are the six C{listening} lines (the
        default set's services) and the ready line; nothing of Twisted's
        chatter is anywhere.
        """
        start = lines[: ready + 1]
        self.assertEqual(sum("listening on" in line for line in start), 6, lines)
        self.assertIn(" ready (Twisted ", start[-1])
        self.assertEqual(len(start), 7, "\n".join(lines))
        for chatter in ("starting on", "Starting factory", "Port", "Starting protocol"):
            self.assertFalse([line for line in lines if chatter in line], chatter)

    def test_text(self) -> None:
        """
        twistd's own text log (C{--logfile}, as C{-n} alone gives on
        standard output).
        """
        lines = self.startAndStop(())
        ready = next(i for i, line in enumerate(lines) if " ready (Twisted " in line)
        self.check(lines, ready)

    def test_json(self) -> None:
        """
        C{--logger=netdemo.logs.jsonObserver}.
        """
        lines = self.startAndStop(("--logger=netdemo.logs.jsonObserver",))
        records = [json.loads(line) for line in lines if line.startswith("{")]
        self.assertEqual(len(records), len(lines), lines)
        messages = [r["message"] for r in records]
        ready = next(i for i, r in enumerate(records) if r.get("event") == "ready")
        self.check(messages, ready)
        self.assertIn("version", records[ready])
        self.assertIn("reactor", records[ready])
