"""
Tests for the C{netdemo} command (L{netdemo.cli}), run as a real program
against real netdemo services on loopback.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

from twisted.python.usage import UsageError

from netdemo.clients.common import parseHostPort
from netdemo.clients.ping import makeProbe, probeSequence
from tests.support import TwistdProcess

NETDEMO = [sys.executable, "-m", "netdemo"]


def netdemo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """
    Run C{netdemo ARGS} to completion with no standard input.
    """
    return subprocess.run(
        [*NETDEMO, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def unusedPort(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """
    A loopback port with nothing listening on it (bound and released).
    """
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AddressTests(unittest.TestCase):
    """
    C{HOST:PORT} parsing.
    """

    def test_forms(self) -> None:
        """
        Names, IPv4 and bracketed IPv6 addresses are accepted.
        """
        self.assertEqual(parseHostPort("localhost:7"), ("localhost", 7))
        self.assertEqual(parseHostPort("127.0.0.1:8007"), ("127.0.0.1", 8007))
        self.assertEqual(parseHostPort("[::1]:8009"), ("::1", 8009))

    def test_errors(self) -> None:
        """
        Malformed addresses are refused with the value named.
        """
        for bad in ["8007", "::1:8007", "host:", "host:99999", "host:x", ":80"]:
            with self.assertRaises(UsageError) as caught:
                parseHostPort(bad)
            self.assertIn(repr(bad), str(caught.exception))

    def test_probeRoundTrip(self) -> None:
        """
        A probe carries its sequence number and is recognised only with the
        same nonce.
        """
        probe = makeProbe(42, 64, b"12345678")
        self.assertEqual(len(probe), 64)
        self.assertEqual(probeSequence(probe, b"12345678"), 42)
        self.assertIsNone(probeSequence(probe, b"87654321"))


class PingTCPTests(unittest.TestCase):
    """
    C{netdemo ping tcp} against the real TCP echo.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = TwistdProcess("--tcp", "tcp:0:interface=127.0.0.1")
        cls.daemon.waitListening(1)
        cls.target = f"127.0.0.1:{cls.daemon.port('tcp-echo')}"

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.stop()

    def test_allAnswered(self) -> None:
        """
        Every probe is answered: a line per probe, a summary with no loss,
        exit status 0; options may follow the address.
        """
        result = netdemo(
            "ping", "tcp", self.target, "-c", "4", "-i", "0.05", "-s", "200"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        replies = re.findall(
            r"^200 bytes from .*: seq=(\d+) time=", result.stdout, re.M
        )
        self.assertEqual(replies, ["1", "2", "3", "4"])
        self.assertIn("4 probes sent, 4 received, 0% loss", result.stdout)
        self.assertRegex(
            result.stdout, r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms"
        )

    def test_hostName(self) -> None:
        """
        Host names resolve.
        """
        port = self.target.rsplit(":", 1)[1]
        result = netdemo("ping", "tcp", f"localhost:{port}", "-c", "1")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_interrupt(self) -> None:
        """
        Ctrl-C (SIGINT) stops an endless ping cleanly: the summary is
        printed and the exit status says whether all probes were answered.
        """
        process = subprocess.Popen(
            [*NETDEMO, "ping", "tcp", self.target, "-c", "0", "-i", "0.05"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            lines = []
            deadline = time.monotonic() + 20
            while len(lines) < 4 and time.monotonic() < deadline:
                lines.append(process.stdout.readline())
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.assertEqual(process.returncode, 0, err)
        self.assertIn("ping statistics", out)
        self.assertNotIn("Traceback", err)


class PingErrorTests(unittest.TestCase):
    """
    Errors are one line on standard error and a non-zero exit.
    """

    def assertError(
        self, result: subprocess.CompletedProcess[str], code: int, text: str
    ) -> None:
        """
        The command failed with C{code} and one error line containing C{text}.
        """
        self.assertEqual(result.returncode, code, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        if code == 2:
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertIn(text, lines[0])

    def test_refusedTCP(self) -> None:
        """
        A TCP port with nothing listening is an error (status 2).
        """
        port = unusedPort()
        self.assertError(
            netdemo("ping", "tcp", f"127.0.0.1:{port}", "-c", "1"), 2, "refused"
        )

    def test_badArguments(self) -> None:
        """
        Bad protocols, addresses and options are one line and status 2.
        """
        self.assertError(netdemo("ping", "icmp", "127.0.0.1:7"), 2, "'icmp'")
        self.assertError(netdemo("ping", "tcp", "127.0.0.1"), 2, "'127.0.0.1'")
        self.assertError(netdemo("ping", "tcp", "127.0.0.1:7", "-c", "x"), 2, "'x'")
        self.assertError(netdemo("ping", "tcp", "127.0.0.1:7", "-s", "8"), 2, "8")
        self.assertError(netdemo(), 2, "ping")

    def test_unresolvable(self) -> None:
        """
        A name that does not resolve is an error (status 2).
        """
        self.assertError(
            netdemo("ping", "udp", "no-such-host.invalid:7", "-c", "1"),
            2,
            "no-such-host.invalid",
        )

    def test_udpRefused(self) -> None:
        """
        A connected UDP ping to a port with nothing listening reports the
        ICMP refusals, keeps going, and exits 1 (probes lost).
        """
        port = unusedPort(socket.SOCK_DGRAM)
        result = netdemo(
            "ping", "udp", f"127.0.0.1:{port}", "-c", "3", "-i", "0.05", "-W", "0.3"
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("3 probes sent, 0 received, 100% loss, 3 refused", result.stdout)
        self.assertNotIn("Traceback", result.stderr)

    def test_help(self) -> None:
        """
        C{--help} shows examples.
        """
        result = netdemo("ping", "--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("Examples:", result.stdout)
        self.assertIn("netdemo ping tcp 127.0.0.1:8007", result.stdout)


class ConsoleScriptTests(unittest.TestCase):
    """
    The installed C{netdemo} console script is the same program.
    """

    def test_script(self) -> None:
        """
        C{netdemo --help} from the virtual environment's bin directory works.
        """
        script = Path(sys.executable).with_name("netdemo")
        result = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ping", result.stdout)
