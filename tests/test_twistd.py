"""
End-to-end tests: a real C{twistd -n --pidfile= netdemo} process, real
sockets on loopback, and the clients people use (C{socat}, C{nc}, C{ncat}).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Daemon, requireTool, runTwistd

MEGABYTE = os.urandom(1_000_000)


def rss(pid: int) -> int:
    """
    Resident set size of process C{pid} in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fill(client: socket.socket, limit: int, stall: float = 1.0) -> int:
    """
    Send on the non-blocking C{client} until the peer stops taking data
    (the socket was not writable for C{stall} seconds) or C{limit} bytes
    went out.

    @return: The bytes sent.
    """
    chunk = os.urandom(65536)
    sent = 0
    # Each send takes at least a byte, and usually a whole chunk.
    for _ in range(4 * limit // len(chunk)):
        _, writable, _ = select.select([], [client], [], stall)
        if not writable or sent >= limit:
            break
        with contextlib.suppress(BlockingIOError):
            sent += client.send(chunk)
    return sent


class EchoClientTests(SynchronousTestCase):
    """
    RFC 862 echo with half-close, byte-compared, through real clients.
    """

    daemon: Daemon
    port: int

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = Daemon("--tcp", "tcp:0:interface=127.0.0.1")
        cls.daemon.waitListening(1)
        cls.port = cls.daemon.port("tcp-echo")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.stop()
        cls.daemon.close()

    def roundTrip(self, argv: list[str], runs: int = 3) -> None:
        """
        Send 1 MB then end of input through C{argv}, several times; every run
        must give back exactly the 1,000,000 bytes sent.
        """
        for run in range(runs):
            result = subprocess.run(
                argv, input=MEGABYTE, capture_output=True, timeout=30
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(len(result.stdout), 1_000_000, f"run {run}")
            self.assertEqual(result.stdout, MEGABYTE, f"run {run}")

    def test_socat(self) -> None:
        """
        C{socat} sends 1 MB and a FIN, and reads the whole echo back.
        """
        socat = requireTool("socat", "socat")
        self.roundTrip([socat, "-b65536", "-t5", "-", f"TCP:127.0.0.1:{self.port}"])

    def test_netcat(self) -> None:
        """
        OpenBSD C{nc -N} (shutdown after end of input) gets every byte back.
        """
        nc = requireTool("nc", "netcat-openbsd")
        self.roundTrip([nc, "-N", "127.0.0.1", str(self.port)])

    def test_ncat(self) -> None:
        """
        Nmap's C{ncat} half-closes on end of input and gets every byte back.
        """
        ncat = requireTool("ncat", "ncat")
        self.roundTrip([ncat, "127.0.0.1", str(self.port)])

    def test_manySmallReads(self) -> None:
        """
        Many small messages written without waiting come back in order.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            expected = b"".join(b"%d\n" % i for i in range(20000))
            for i in range(0, len(expected), 7):
                s.sendall(expected[i : i + 7])
            s.shutdown(socket.SHUT_WR)
            received = s.makefile("rb").read()
        self.assertEqual(received, expected)


class FlowControlTests(SynchronousTestCase):
    """
    A client that sends and never reads cannot grow the server.
    """

    def test_nonReadingClientBounded(self) -> None:
        """
        While a client writes without reading, the server stops reading
        from it: the client can only fill the kernel buffers, the server's
        RSS stays flat, and once the client reads, every byte comes back.
        """
        with Daemon("--tcp", "tcp:0:interface=127.0.0.1") as daemon:
            daemon.waitListening(1)
            port = daemon.port("tcp-echo")
            before = rss(daemon.process.pid)
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.addCleanup(client.close)
            client.setblocking(False)
            sent = fill(client, 200_000_000)
            grown = rss(daemon.process.pid) - before
            self.assertLess(sent, 64_000_000, "the server never pushed back")
            self.assertLess(grown, 16_000_000)
            # Now read everything: reading resumes and nothing was lost.
            client.settimeout(30)
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(len(client.makefile("rb").read()), sent)
            daemon.stop()


class IPv6Tests(SynchronousTestCase):
    """
    Endpoint descriptions other than plain TCP work.
    """

    def test_tcp6(self) -> None:
        """
        A tcp6 listener on ::1 echoes.
        """
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            raise SkipTest("no IPv6 loopback on this machine") from None
        with Daemon("--tcp", r"tcp6:0:interface=\:\:1") as daemon:
            daemon.waitListening(1)
            port = daemon.port("tcp-echo")
            with socket.create_connection(("::1", port), timeout=10) as s:
                s.sendall(b"over six\n")
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(s.recv(100), b"over six\n")
            daemon.stop()

    def test_unixSocket(self) -> None:
        """
        A UNIX socket listener echoes with half-close.
        """
        with Daemon("--tcp", "unix:echo.sock") as daemon:
            daemon.waitListening(1)
            path = daemon.logPath.parent / "echo.sock"
            socat = requireTool("socat", "socat")
            result = subprocess.run(
                [socat, "-b65536", "-t5", "-", f"UNIX-CONNECT:{path}"],
                input=MEGABYTE,
                capture_output=True,
                timeout=30,
            )
            self.assertEqual(result.stdout, MEGABYTE)
            daemon.stop()


class ShutdownTests(SynchronousTestCase):
    """
    SIGTERM stops listening, drains, and exits by the drain deadline.
    """

    def test_drainDeadline(self) -> None:
        """
        With a client holding megabytes of unsent echo (it never reads),
        SIGTERM ends the process once the C{--drain} deadline aborted the
        connection, which it logs.  (The deadline's timing is tested with a
        fake clock in L{tests.test_tap.MakeServiceTests.test_stopDrains}.)
        """
        drain = 1.0
        with Daemon(
            "--tcp", "tcp:0:interface=127.0.0.1", "--drain", str(drain)
        ) as daemon:
            daemon.waitListening(1)
            port = daemon.port("tcp-echo")
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", port))
            self.addCleanup(client.close)
            client.setblocking(False)
            self.assertGreater(fill(client, 8_000_000), 1_000_000)
            elapsed = daemon.stop(signal.SIGTERM)
            self.assertGreaterEqual(elapsed, drain)
            self.assertIn("(shutdown-deadline)", daemon.log())
            # twistd -n re-raises SIGTERM, which systemd counts as clean.
            self.assertEqual(daemon.process.returncode, -signal.SIGTERM)

    def test_quickStopWhenIdle(self) -> None:
        """
        With no connection open, SIGTERM stops without waiting for the
        drain deadline.
        """
        with Daemon("--tcp", "tcp:0:interface=127.0.0.1", "--drain", "600") as daemon:
            daemon.waitListening(1)
            self.assertLess(daemon.stop(), 60)


class StartupErrorTests(SynchronousTestCase):
    """
    Bad options and busy ports fail start-up with status 1 and one clear
    line, never a traceback.
    """

    def assertOneLineError(
        self, result: subprocess.CompletedProcess[str], *fragments: str
    ) -> str:
        """
        The process exited 1 without a traceback, and one line of its output
        holds every fragment.

        @return: That line.
        """
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertNotIn("Traceback", output)
        lines = [
            line
            for line in output.splitlines()
            if all(fragment in line for fragment in fragments)
        ]
        self.assertEqual(len(lines), 1, output)
        return lines[0]

    def test_badOptions(self) -> None:
        """
        Each bad value is named in a single error line.
        """
        for args, fragment in [
            (["--tcp", "99999"], "99999"),
            (["--tcp", "nonsense:1"], "nonsense:1"),
            (["--max-connections", "-1"], "'-1'"),
        ]:
            self.assertOneLineError(runTwistd(*args), fragment)

    def test_busyPort(self) -> None:
        """
        A port that is already taken makes twistd exit with status 1 and a
        message naming the port.
        """
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            result = runTwistd("--tcp", f"tcp:{port}:interface=127.0.0.1")
        line = self.assertOneLineError(result, "cannot start")
        self.assertIn(str(port), line)
        self.assertIn("Address already in use", line)

    def test_unixSocketDirectoryMissing(self) -> None:
        """
        A UNIX socket in a directory that does not exist fails start-up
        with one line naming the path.
        """
        result = runTwistd("--tcp", "unix:/nonexistent-netdemo-dir/echo.sock")
        line = self.assertOneLineError(result, "cannot start")
        self.assertIn("/nonexistent-netdemo-dir/echo.sock", line)


class VersionTests(SynchronousTestCase):
    """
    C{twistd netdemo --version} is about netdemo.
    """

    def test_version(self) -> None:
        """
        It prints netdemo's version, then Twisted's and Python's, on one
        line, and exits 0 without starting anything.
        """
        from netdemo import versionLine

        result = runTwistd("--version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, versionLine() + "\n")
        self.assertTrue(result.stdout.startswith("netdemo "))
