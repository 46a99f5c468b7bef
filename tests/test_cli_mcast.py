"""
Tests for C{netdemo mcast probe} and C{netdemo mcast listen}
(L{netdemo.clients.mcast}) against real multicast responders on loopback:
the responders join on 127.0.0.1 and the clients pin 127.0.0.1 as their
interface, so nothing leaves the host.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import time
import unittest

from twisted.python.usage import UsageError

from netdemo.clients.mcast import describe, parseGroup
from tests.support import TwistdProcess, assertOneLineError
from tests.test_cli import NETDEMO, netdemo, unusedPort


def group() -> str:
    """
    An administratively scoped group of its own for each test class, so
    that other tests on the machine do not answer.
    """
    return f"239.255.{random.randint(100, 250)}.{random.randint(1, 254)}"


def responder(address: str) -> TwistdProcess:
    """
    A C{twistd netdemo} running only a multicast responder on loopback,
    beaconing every 0.3 s, listening.
    """
    daemon = TwistdProcess(
        "--multicast", f"{address},interface=127.0.0.1", "--announce-interval", "0.3"
    )
    daemon.waitListening(1)
    return daemon


class UnitTests(unittest.TestCase):
    """
    Groups and what C{listen} prints.
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
        their size.
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
            describe(b"Notify 0001", "x"), "11 bytes from x: 'Notify 0001'"
        )


class ProbeTests(unittest.TestCase):
    """
    C{mcast probe} and C{mcast listen} against two responders on one group
    and port (two instances on one host answer from the same address).
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.group = group()
        cls.port = unusedPort(socket.SOCK_DGRAM)
        cls.target = f"{cls.group}:{cls.port}"
        cls.daemons = [responder(cls.target), responder(cls.target)]

    @classmethod
    def tearDownClass(cls) -> None:
        for daemon in cls.daemons:
            daemon.stop()

    def test_probe(self) -> None:
        """
        Every probe is answered by both responders; the summary lists the
        address with both counted, no loss and the round-trip times.
        """
        result = netdemo(
            "mcast", "probe", self.target, "-I", "127.0.0.1", "-c", "3", "-i", "0.3"
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        answers = re.findall(
            rf"^11 bytes from 127\.0\.0\.1:{self.port}: seq=(\d) time=",
            result.stdout,
            re.M,
        )
        self.assertEqual(answers, ["1", "1", "2", "2", "3", "3"], result.stdout)
        self.assertRegex(
            result.stdout,
            rf"127\.0\.0\.1:{self.port} \(2 responders\): 3/3 probes answered, "
            r"0% loss, rtt min/avg/max = [\d.]+/[\d.]+/[\d.]+ ms",
        )

    def test_noResponder(self) -> None:
        """
        A group nobody joined: no answers, exit status 1.
        """
        result = netdemo(
            "mcast",
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
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("2 probes sent, 0 responder address(es) answered", result.stdout)

    def test_listen(self) -> None:
        """
        C{listen} hears the responders' beacons, from both instances.
        """
        result = netdemo("mcast", "listen", self.target, "-I", "127.0.0.1", "-c", "6")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        senders = set(
            re.findall(
                r"^beacon from (\S+) \(127\.0\.0\.1:\d+\): seq=\d+ ",
                result.stdout,
                re.M,
            )
        )
        self.assertEqual(len(senders), 2, result.stdout)
        self.assertIn("6 datagrams from 1 senders", result.stdout)

    def test_listenInterrupted(self) -> None:
        """
        Ctrl-C ends C{listen} with its summary and status 0.
        """
        process = subprocess.Popen(
            [*NETDEMO, "mcast", "listen", self.target, "-I", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if process.stdout.readline().startswith("beacon"):
                    break
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.assertEqual(process.returncode, 0, err)
        self.assertRegex(out, r"--- .*: \d+ datagrams from 1 senders ---")
        self.assertNotIn("Traceback", err)


class McastErrorTests(unittest.TestCase):
    """
    Bad groups, interfaces and options: one line, status 2.
    """

    def assertError(self, result: subprocess.CompletedProcess[str], text: str) -> None:
        """
        Exit status 2 and one line on standard error containing C{text}.
        """
        assertOneLineError(self, result, text)

    def test_errors(self) -> None:
        """
        Unicast addresses, unknown interfaces, bad TTLs, link-local IPv6
        groups without an interface, and a missing command are refused.
        """
        self.assertError(netdemo("mcast", "probe", "10.0.0.1:8001"), "not a multicast")
        self.assertError(
            netdemo("mcast", "probe", "239.1.1.1:8001", "-I", "nosuch0"),
            "no such interface",
        )
        self.assertError(
            netdemo("mcast", "probe", "239.1.1.1:8001", "--ttl", "0"), "'0'"
        )
        self.assertError(netdemo("mcast", "listen", "[ff02::1]:8001"), "--interface")
        self.assertError(netdemo("mcast"), "mcast probe or mcast listen")

    def test_help(self) -> None:
        """
        Both commands' C{--help} show examples.
        """
        for command in ("probe", "listen"):
            result = netdemo("mcast", command, "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(
                f"\n  netdemo mcast {command} 239.255.80.1:8001", result.stdout
            )
