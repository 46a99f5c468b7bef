"""
Tests for C{netdemo mcast probe} and C{netdemo mcast listen}
(L{netdemo.clients.mcast}): in-process, against real multicast responders
on loopback (the responders join on 127.0.0.1 and the clients pin
127.0.0.1 as their interface, so nothing leaves the host), with the output
captured by a L{Console}; and one real C{netdemo} process for Ctrl-C.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.cli import parseCommandLine
from netdemo.clients.common import Console
from netdemo.clients.mcast import (
    ListenOptions,
    ProbeOptions,
    _noResponderHint,
    _Prober,
    describe,
    parseGroup,
    runMcast,
)
from netdemo.limits import DatagramLimits
from netdemo.mcastwire import interfaceOf
from netdemo.metrics import MemoryMetrics
from netdemo.multicast import MulticastGroup, MulticastService, buildMulticastService
from tests.datagramhelpers import FakeDatagramReactor, FakeDatagramTransport
from tests.support import PATIENCE, poll, waitUntil


def group() -> str:
    """
    An administratively scoped group of its own for each test, so that
    other tests on the machine do not answer.
    """
    return f"239.255.{random.randint(100, 250)}.{random.randint(1, 254)}"


class UnitTests(SynchronousTestCase):
    """
    Groups, options and what C{listen} prints.
    """

    def test_groups(self) -> None:
        """
        Multicast groups with ports are accepted, IPv6 in brackets; other
        addresses are refused with the value named.
        """
        self.assertEqual(parseGroup("239.255.80.1:8001"), ("239.255.80.1", 8001, False))
        self.assertEqual(parseGroup("[ff05::80:1]:8001"), ("ff05::80:1", 8001, True))
        for bad in ["10.0.0.1:8001", "239.1.1.1", "239.1.1.1:0", "host:8001"]:
            with self.assertRaises(UsageError) as caught:
                parseGroup(bad)
            self.assertIn(repr(bad), str(caught.exception))

    def test_describe(self) -> None:
        """
        Beacons and goodbyes are summarised; other datagrams shown with
        their size; a beacon that does not decode is malformed.
        """
        beacon = (
            b'NDBEACON {"v":1,"id":"abc","host":"web1","services":["tcp","multicast"],'
            b'"seq":42,"time":1.5,"interval":5.0}'
        )
        self.assertEqual(
            describe(beacon, "10.0.0.2:8001"),
            "beacon from web1/abc (10.0.0.2:8001): seq=42 services=tcp,multicast "
            "interval=5.0",
        )
        self.assertTrue(
            describe(beacon.replace(b'"v":1', b'"bye":true'), "x").startswith("goodbye")
        )
        self.assertEqual(
            describe(b"NDBEACON [1]", "x"), "malformed beacon from x: 12 bytes"
        )
        self.assertEqual(
            describe(beacon.replace(b'"seq":42', b'"seq":-1'), "x"),
            f"malformed beacon from x: {len(beacon)} bytes",
        )
        self.assertEqual(
            describe(b"Notify 0001", "x"), "11 bytes from x: 'Notify 0001'"
        )

    def assertRefused(self, text: str, *argv: str) -> None:
        """
        C{netdemo mcast ARGV} is a usage error (one line, status 2)
        containing C{text}.
        """
        with self.assertRaises(UsageError) as caught:
            parseCommandLine(["mcast", *argv])
        message = str(caught.exception)
        self.assertIn(text, message)
        self.assertNotIn("\n", message)

    def test_errors(self) -> None:
        """
        Unicast addresses, unknown interfaces, addresses for IPv6 groups,
        bad TTLs, link-local IPv6 groups without an interface, and a missing
        command are refused.
        """
        self.assertRefused("not a multicast", "probe", "10.0.0.1:8001")
        self.assertRefused(
            "no such interface", "probe", "239.1.1.1:8001", "-I", "nosuch0"
        )
        self.assertRefused(
            "give an interface name", "listen", "[ff05::1]:8001", "-I", "::1"
        )
        self.assertRefused("'0'", "probe", "239.1.1.1:8001", "--ttl", "0")
        self.assertRefused("--interface", "listen", "[ff02::1]:8001")
        self.assertRefused("mcast probe or mcast listen")

    def test_options(self) -> None:
        """
        Options may follow the group; the interface becomes the membership
        the socket options are made from.
        """
        options = parseCommandLine(
            ["mcast", "probe", "239.1.1.1:8001", "-I", "127.0.0.1", "-c", "2"]
        ).subOptions.subOptions
        self.assertEqual((options["count"], options["ttl"]), (2, 1))
        self.assertEqual(options["membership"].interface, "127.0.0.1")
        self.assertEqual(options.target, "239.1.1.1:8001")

    def test_help(self) -> None:
        """
        Both commands' help shows examples.
        """
        for command, options in (("probe", ProbeOptions), ("listen", ListenOptions)):
            self.assertIn(
                f"\n  netdemo mcast {command} 239.255.80.1:8001",
                options().getUsage(width=80),
            )


class ProberTimingTests(SynchronousTestCase):
    """
    The probe client's timing, with a clock and a fake transport.
    """

    def test_timing(self) -> None:
        """
        Probes go to the group every C{--interval}; an answer counts for the
        latest probe if it comes within C{--timeout}, later ones are
        ignored; the run ends C{--timeout} after the last probe, and a
        responder that missed a probe makes the exit status 1.
        """
        clock = FakeDatagramReactor()
        options = parseCommandLine(
            ["mcast", "probe", "239.1.1.1:8001", "-c", "3", "-i", "2", "-W", "0.5"]
        ).subOptions.subOptions
        out = io.StringIO()
        prober = _Prober(clock, options, Console(out), clock.seconds)
        transport = FakeDatagramTransport()
        prober.makeConnection(transport)  # type: ignore[arg-type]
        prober.probe()
        clock.advance(0.25)
        prober.datagramReceived(b"Acknowledge", ("192.0.2.1", 8001))
        clock.advance(1.75)  # probe 2 at 2 s
        clock.advance(0.75)
        prober.datagramReceived(b"Acknowledge", ("192.0.2.1", 8001))  # too late
        clock.advance(1.25)  # probe 3 at 4 s
        prober.datagramReceived(b"Acknowledge", ("192.0.2.1", 8001))
        self.assertEqual(
            [(d[:11], a) for d, a in transport.written],
            [(b"Notify 0001", ("239.1.1.1", 8001))]
            + [(b"Notify 000%d" % n, ("239.1.1.1", 8001)) for n in (2, 3)],
        )
        self.assertNoResult(prober.done)
        clock.advance(0.5)
        self.successResultOf(prober.done)
        self.assertEqual(
            re.findall(r"seq=(\d) time=([\d.]+) ms", out.getvalue()),
            [("1", "250.000"), ("3", "0.000")],
        )
        self.assertIn(
            "192.0.2.1:8001: 2/3 probes answered, 33% loss", prober.summary("g")
        )
        self.assertEqual(prober.exitCode(), 1)


class ClientTests(TestCase):
    """
    C{mcast probe} and C{mcast listen} against two responders on one group
    and port (two instances on one host answer from the same address).
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.group = group()
        first = self.responder(0)
        self.port = first.ports[0].getHost().port  # type: ignore[attr-defined]
        second = self.responder(self.port)
        self.target = f"{self.group}:{self.port}"
        responders = [*first.responders, *second.responders]
        await waitUntil(lambda: all(r.joined for r in responders), "the joins")

    def responder(self, port: int) -> MulticastService:
        """
        A multicast responder on the group and C{port} (0: any), on
        loopback, beaconing every 0.3 s.
        """
        service = buildMulticastService(
            [MulticastGroup(self.group, port, "127.0.0.1")],
            DatagramLimits(),
            0.3,
            ["multicast"],
            MemoryMetrics(),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def mcast(self, *argv: str) -> tuple[int, str]:
        """
        Run C{netdemo mcast ARGV} in this process.

        @return: The exit status and what it printed.
        """
        self.addCleanup(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
        options = parseCommandLine(["mcast", *argv]).subOptions
        out, err = io.StringIO(), io.StringIO()
        code = await runMcast(reactor, options, Console(out, err))
        self.assertEqual(err.getvalue(), "")
        return code, out.getvalue()

    async def test_probe(self) -> None:
        """
        Every probe is answered by both responders; the summary lists the
        address with both counted, no loss and the round-trip times.
        """
        code, out = await self.mcast(
            "probe", self.target, "-I", "127.0.0.1", "-c", "3", "-i", "0.3"
        )
        self.assertEqual(code, 0, out)
        self.assertTrue(out.startswith(f"PROBE {self.target}: ttl 1\n"), out)
        answers = re.findall(
            rf"^11 bytes from 127\.0\.0\.1:{self.port}: seq=(\d) time=", out, re.M
        )
        self.assertEqual(answers, ["1", "1", "2", "2", "3", "3"], out)
        self.assertRegex(
            out,
            rf"127\.0\.0\.1:{self.port} \(2 responders\): 3/3 probes answered, "
            r"0% loss, rtt min/avg/max = [\d.]+/[\d.]+/[\d.]+ ms",
        )

    async def test_noResponder(self) -> None:
        """
        A group nobody joined: no answers, exit status 1.
        """
        code, out = await self.mcast(
            "probe",
            f"239.255.99.{random.randint(1, 254)}:{self.port}",
            "-I",
            "127.0.0.1",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "0.2",
        )
        self.assertEqual(code, 1, out)
        self.assertIn("2 probes sent, 0 responder addresses answered", out)

    async def test_listen(self) -> None:
        """
        C{listen} hears the responders' beacons, from both instances.
        """
        code, out = await self.mcast(
            "listen", self.target, "-I", "127.0.0.1", "-c", "6"
        )
        self.assertEqual(code, 0, out)
        self.assertTrue(out.startswith(f"LISTEN {self.target}\n"), out)
        senders = set(
            re.findall(r"^beacon from (\S+) \(127\.0\.0\.1:\d+\): seq=\d+ ", out, re.M)
        )
        self.assertEqual(len(senders), 2, out)
        self.assertIn("6 datagrams from 1 senders", out)


class InterruptTests(SynchronousTestCase):
    """
    The real command and Ctrl-C.
    """

    def test_listenInterrupted(self) -> None:
        """
        Ctrl-C ends C{listen} with its summary and status 0.
        """
        address = group()
        # The port is this test's: its own socket holds it, shared.
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(holder.close)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("", 0))
        target = f"{address}:{holder.getsockname()[1]}"
        directory = Path(tempfile.mkdtemp(prefix="netdemo-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        output = directory / "out"
        with open(output, "w") as out, open(directory / "err", "w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "netdemo", "mcast", "listen", target,
                 "-I", "127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            )  # fmt: skip
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)

        def heard() -> bool:
            holder.sendto(b"Notify 0001", (address, holder.getsockname()[1]))
            return "bytes from" in output.read_text()

        holder.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
        )
        poll(lambda: "LISTEN" in output.read_text(), "LISTEN")
        poll(heard, "a probe heard", interval=0.2)
        process.send_signal(signal.SIGINT)
        self.assertEqual(process.wait(PATIENCE), 0)
        self.assertRegex(
            output.read_text(), r"--- .*: \d+ datagrams from 1 senders ---"
        )
        self.assertEqual((directory / "err").read_text(), "")


class HintTests(SynchronousTestCase):
    """
    When no responder answered probes sent without C{--interface}, the
    probe says which interface they left by and suggests C{-I}; nothing is
    sent to learn that (a connected UDP socket only asks the routing table).
    """

    def test_loopbackInterfaceName(self) -> None:
        """
        L{interfaceOf} names the interface that has an address.
        """
        self.assertEqual(interfaceOf("127.0.0.1"), "lo")
        self.assertIsNone(interfaceOf("192.0.2.123"))

    def test_hint(self) -> None:
        """
        The hint names the route's choice for the group (whatever it is on
        this host) and C{-I}.
        """
        options = ProbeOptions()
        options.parseOptions(["239.255.99.1:8001"])
        hint = _noResponderHint(options)
        self.assertTrue(hint.startswith("no responder answered"), hint)
        self.assertIn("-I", hint)
