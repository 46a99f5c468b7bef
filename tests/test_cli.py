"""
Tests for the C{netdemo} command (L{netdemo.cli}) and C{netdemo ping}
(L{netdemo.clients.ping}).

Options and output are tested in-process: the command line is parsed by
L{netdemo.cli.parseCommandLine} and the client writes to an injected
L{Console} of in-memory streams, against echo servers that listen on
loopback in the test's own reactor.  The probe timer and timeouts are
tested with a fake clock.  A few tests run the real program: its exit
status, Ctrl-C and the installed console script.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    ProcessProtocol,
    Protocol,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.cli import main, parseCommandLine
from netdemo.clients.common import CommandError, Console, parseHostPort
from netdemo.clients.ping import PingOptions, _Pinger, makeProbe, probeSequence, runPing
from netdemo.echo import EchoFactory
from netdemo.limits import ConnectionLimits
from netdemo.metrics import MemoryMetrics
from tests.support import PATIENCE, refusingPort, waitUntil

NETDEMO = [sys.executable, "-m", "netdemo"]

#: The reactor, for the calls its interfaces do not all declare.
_reactor: Any = reactor


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


def console() -> Console:
    """
    A L{Console} writing to in-memory streams.
    """
    return Console(out=io.StringIO(), err=io.StringIO(), binary=io.BytesIO())


def output(where: Console) -> str:
    """
    What was written to C{where.out}.
    """
    stream = where.out
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


class AddressTests(SynchronousTestCase):
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
            error = self.assertRaises(UsageError, parseHostPort, bad)
            self.assertIn(repr(bad), str(error))

    def test_probeRoundTrip(self) -> None:
        """
        A probe carries its sequence number and is recognised only with the
        same nonce.
        """
        probe = makeProbe(42, 64, b"12345678")
        self.assertEqual(len(probe), 64)
        self.assertEqual(probeSequence(probe, b"12345678"), 42)
        self.assertIsNone(probeSequence(probe, b"87654321"))


class DispatchTests(SynchronousTestCase):
    """
    The C{netdemo} dispatcher, in-process: a bad command line is one line
    on standard error and exit status 2; C{--help} is exit status 0.
    """

    def dispatch(self, *argv: str) -> tuple[int, str, str]:
        """
        Call L{main} with C{argv}, standard output and error in memory.

        @return: The exit status, the output and the error text.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        exit = self.assertRaises(SystemExit, main, list(argv))
        return int(exit.code or 0), out.getvalue(), err.getvalue()

    def assertUsageError(self, argv: list[str], text: str) -> None:
        """
        C{netdemo ARGV} exits with status 2 after one line on standard
        error, C{netdemo: ...} containing C{text}, and nothing on standard
        output.
        """
        code, out, err = self.dispatch(*argv)
        self.assertEqual((code, out), (2, ""), err)
        [line] = err.splitlines()
        self.assertTrue(line.startswith("netdemo: "), line)
        self.assertIn(text, line)

    def test_noCommand(self) -> None:
        """
        Without a command, the error names every command.
        """
        self.assertUsageError([], "say which command: ping, chat, tail, pub, mcast")

    def test_unknownCommand(self) -> None:
        """
        An unknown command is named.
        """
        self.assertUsageError(["bogus"], "bogus")

    def test_badPingArguments(self) -> None:
        """
        Bad protocols, addresses and option values are named.
        """
        for argv, text in [
            (["ping", "icmp", "127.0.0.1:7"], "'icmp'"),
            (["ping", "tcp", "127.0.0.1"], "'127.0.0.1'"),
            (["ping", "tcp", "127.0.0.1:7", "-c", "x"], "'x'"),
            (["ping", "tcp", "127.0.0.1:7", "-i", "0"], "'0'"),
            (["ping", "tcp", "127.0.0.1:7", "-s", "8"], "8"),
            (["ping", "udp", "127.0.0.1:7", "-s", "70000"], "70000"),
            (["ping", "tcp", "127.0.0.1:7", "--bogus"], "bogus"),
            (["ping", "tcp"], "arguments"),
        ]:
            self.assertUsageError(argv, text)

    def test_help(self) -> None:
        """
        C{netdemo --help} lists the commands; C{netdemo ping --help} shows
        examples.
        """
        code, out, _ = self.dispatch("--help")
        self.assertEqual(code, 0)
        for name in ("ping", "chat", "tail", "pub", "mcast"):
            self.assertIn(name, out)
        code, out, _ = self.dispatch("ping", "--help")
        self.assertEqual(code, 0)
        self.assertIn("Examples:", out)
        self.assertIn("netdemo ping tcp 127.0.0.1:8007", out)

    def test_synopses(self) -> None:
        """
        Every command's C{--help} starts with its own synopsis, the command
        named once (before, the dispatcher's synopsis was pasted in front).
        """
        for argv, synopsis in [
            ((), "Usage: netdemo COMMAND [options]"),
            (("ping",), "Usage: netdemo ping tcp|udp HOST:PORT [-c COUNT] "),
            (("chat",), "Usage: netdemo chat HOST:PORT "),
            (("tail",), "Usage: netdemo tail HOST:PORT "),
            (("pub",), "Usage: netdemo pub HOST:PORT TOPIC "),
            (("mcast",), "Usage: netdemo mcast probe|listen GROUP:PORT"),
            (("mcast", "probe"), "Usage: netdemo mcast probe GROUP:PORT "),
            (("mcast", "listen"), "Usage: netdemo mcast listen GROUP:PORT "),
        ]:
            code, out, _ = self.dispatch(*argv, "--help")
            self.assertEqual(code, 0)
            self.assertTrue(out.startswith(synopsis), (argv, out.splitlines()[0]))

    def test_sizeBounds(self) -> None:
        """
        C{--size} is described with one range, and a bad value names it.
        """
        code, out, _ = self.dispatch("ping", "--help")
        text = " ".join(out.split())
        self.assertIn("A whole number from 16 (the probe's header) to 65507", text)
        self.assertNotIn("above 0", text.split("--size")[1].split("--")[0])
        self.assertUsageError(
            ["ping", "tcp", "127.0.0.1:7", "-s", "8"],
            "'8' is not a whole number from 16 to 65507",
        )

    def test_version(self) -> None:
        """
        C{netdemo --version}, and C{--version} of any command, print
        netdemo's version with Twisted's and Python's, on one line.
        """
        import platform

        from twisted.copyright import version as twisted

        from netdemo import __version__

        expected = (
            f"netdemo {__version__} (Twisted {twisted}, "
            f"{platform.python_implementation()} {platform.python_version()})\n"
        )
        for argv in (
            ("--version",),
            ("ping", "--version"),
            ("mcast", "probe", "--version"),
        ):
            code, out, err = self.dispatch(*argv)
            self.assertEqual((code, out, err), (0, expected, ""), argv)


class DatagramEcho(DatagramProtocol):
    """
    Send every datagram back to where it came from.
    """

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)  # type: ignore[union-attr]


class CloseAfterEcho(Protocol):
    """
    Echo one read, then close: a server that ends every connection.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class CloseAtOnce(Protocol):
    """
    Close as soon as something arrives, answering nothing.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class Scramble(Protocol):
    """
    Answer with as many bytes, but other ones.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(bytes(255 - b for b in data))  # type: ignore[union-attr]


class LoopbackEchoes:
    """
    netdemo's TCP echo and a UDP echo on 127.0.0.1, on ports they bound,
    in the test's reactor; closed after the test.

    @ivar tcp: C{127.0.0.1:PORT} of the TCP echo.
    @ivar udp: C{127.0.0.1:PORT} of the UDP echo.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.factory = EchoFactory(
            "tcp-echo", ConnectionLimits(), MemoryMetrics(), reactor
        )
        tcp = _reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        testCase.addCleanup(tcp.stopListening)
        udp = _reactor.listenUDP(0, DatagramEcho(), interface="127.0.0.1")
        testCase.addCleanup(udp.stopListening)
        self.tcp = f"127.0.0.1:{tcp.getHost().port}"
        self.udp = f"127.0.0.1:{udp.getHost().port}"

    def closed(self) -> Deferred[None]:
        """
        Fires once the echo has no connection left.
        """
        return waitUntil(lambda: not self.factory.connections, "echo connections")


class PingTests(TestCase):
    """
    C{netdemo ping}, in-process, against real echo servers on loopback.
    """

    def setUp(self) -> None:
        self.echoes = LoopbackEchoes(self)
        # The client takes over Ctrl-C; give it back after the test.
        self.addCleanup(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))

    async def ping(self, *argv: str) -> tuple[int, str]:
        """
        Parse C{netdemo ping ARGV} and run it.

        @return: The exit status and the output.
        """
        options = parseCommandLine(["ping", *argv])
        where = console()
        code = await runPing(reactor, options.subOptions, where)
        return code, output(where)

    async def test_allAnsweredTCP(self) -> None:
        """
        Every probe is answered: a header, a line per probe, a summary with
        no loss, exit status 0; options may follow the address.
        """
        code, out = await self.ping(
            "tcp", self.echoes.tcp, "-c", "4", "-i", "0.01", "-s", "200"
        )
        await self.echoes.closed()
        self.assertEqual(code, 0, out)
        self.assertTrue(
            out.startswith(f"PING {self.echoes.tcp} tcp echo: 200 bytes per probe\n")
        )
        replies = re.findall(r"^200 bytes from (\S+): seq=(\d+) time=", out, re.M)
        self.assertEqual(replies, [(self.echoes.tcp, str(n)) for n in (1, 2, 3, 4)])
        self.assertIn(f"--- {self.echoes.tcp} tcp echo ping statistics ---", out)
        self.assertIn("4 probes sent, 4 received, 0% loss, 0 refused", out)
        self.assertRegex(out, r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms")

    async def test_allAnsweredUDP(self) -> None:
        """
        Over UDP too, every probe is answered and the exit status is 0.
        """
        code, out = await self.ping("udp", self.echoes.udp, "-c", "3", "-i", "0.01")
        self.assertEqual(code, 0, out)
        self.assertEqual(len(re.findall(r"^64 bytes from .* seq=\d+ ", out, re.M)), 3)
        self.assertIn("3 probes sent, 3 received, 0% loss, 0 refused", out)

    async def test_hostName(self) -> None:
        """
        Host names resolve.
        """
        port = self.echoes.tcp.rsplit(":", 1)[1]
        code, out = await self.ping("tcp", f"localhost:{port}", "-c", "1")
        await self.echoes.closed()
        self.assertEqual(code, 0, out)
        self.assertIn("1 probe sent, 1 received", out)

    async def test_refusedTCP(self) -> None:
        """
        A TCP port where nothing listens is an error naming the refusal.
        """
        target = f"127.0.0.1:{refusingPort(self)}"
        with self.assertRaises(CommandError) as caught:
            await self.ping("tcp", target, "-c", "1")
        self.assertIn(f"cannot connect to {target}", str(caught.exception))
        self.assertIn("refused", str(caught.exception))

    async def test_refusedUDP(self) -> None:
        """
        A connected UDP ping to a port where nothing listens reports each
        ICMP refusal once (not a timeout as well), keeps going, and exits 1.
        """
        target = f"127.0.0.1:{refusingPort(self, socket.SOCK_DGRAM)}"
        code, out = await self.ping("udp", target, "-c", "3", "-i", "0.01", "-W", "2")
        self.assertEqual(code, 1, out)
        refused = re.findall(
            rf"^refused by {re.escape(target)}: seq=(\d) \(ICMP port unreachable\)$",
            out,
            re.M,
        )
        self.assertEqual(refused, ["1", "2", "3"], out)
        self.assertNotIn("no answer", out)
        self.assertIn("3 probes sent, 0 received, 100% loss, 3 refused", out)

    async def test_serverCloses(self) -> None:
        """
        Over TCP, a server that closes the connection after each answer is
        reached again for the next probe, and the run says so each time.
        """
        target = self.server(CloseAfterEcho)
        code, out = await self.ping("tcp", target, "-c", "3", "-i", "0.05")
        self.assertEqual(code, 0, out)
        self.assertEqual(len(re.findall(r"^64 bytes from .* seq=\d ", out, re.M)), 3)
        self.assertEqual(
            out.count(f"connection closed by {target} after 1 probe\n"), 2, out
        )
        self.assertIn("3 probes sent, 3 received, 0% loss", out)

    async def test_closedUnanswered(self) -> None:
        """
        A server that closes without answering loses the probe in flight:
        one line says so, the next probe goes over a new connection.
        """
        target = self.server(CloseAtOnce)
        code, out = await self.ping("tcp", target, "-c", "2", "-i", "0.05", "-W", "5")
        self.assertEqual(code, 1, out)
        self.assertEqual(
            out.count(
                f"connection closed by {target} after 1 probe; 1 probe in flight lost"
            ),
            2,
            out,
        )
        self.assertNotIn("no answer", out)
        self.assertIn("2 probes sent, 0 received, 100% loss", out)

    async def test_wrongReply(self) -> None:
        """
        A server that answers with other bytes gets C{wrong reply}, not
        C{no answer}, and the exit status says the probe was not answered.
        """
        target = self.server(Scramble)
        code, out = await self.ping("tcp", target, "-c", "1", "-W", "5")
        self.assertEqual(code, 1, out)
        self.assertIn(
            f"wrong reply from {target}: seq=1 (64 bytes that are not the probe)", out
        )
        self.assertNotIn("no answer", out)
        self.assertIn("1 probe sent, 0 received, 100% loss, 0 refused, 1 wrong", out)

    def server(self, protocol: type[Protocol]) -> str:
        """
        Listen with C{protocol} on 127.0.0.1 in the test's reactor.

        @return: Its C{HOST:PORT}.
        """
        port = _reactor.listenTCP(
            0, Factory.forProtocol(protocol), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return f"127.0.0.1:{port.getHost().port}"

    async def test_unresolvable(self) -> None:
        """
        A name that does not resolve is an error naming it.
        """
        with self.assertRaises(CommandError) as caught:
            await self.ping("udp", "no-such-host.invalid:7", "-c", "1")
        self.assertIn("cannot resolve 'no-such-host.invalid'", str(caught.exception))


class PingerTests(SynchronousTestCase):
    """
    The probe timer and the answer timeouts, with a fake clock.
    """

    def pinger(self, *argv: str) -> tuple[_Pinger, Clock, list[bytes], Console]:
        """
        A pinger for C{netdemo ping tcp 192.0.2.1:7 ARGV} on a fake clock,
        recording what it sends.
        """
        options = PingOptions()
        options.parseOptions(["tcp", "192.0.2.1:7", *argv])
        clock, where = Clock(), console()
        sent: list[bytes] = []
        pinger = _Pinger(clock, options, "192.0.2.1:7", sent.append, where)
        return pinger, clock, sent, where

    def test_interval(self) -> None:
        """
        Probes go out at once and then every C{--interval} seconds, until
        C{--count} were sent.
        """
        pinger, clock, sent, _ = self.pinger("-c", "3", "-i", "2", "-W", "100")
        pinger.start()
        self.assertEqual(len(sent), 1)
        clock.advance(1.9)
        self.assertEqual(len(sent), 1)
        clock.advance(0.1)
        self.assertEqual(len(sent), 2)
        clock.pump([2, 2, 2])
        self.assertEqual([probeSequence(p, pinger.nonce) for p in sent], [1, 2, 3])

    def test_timeout(self) -> None:
        """
        A probe not answered within C{--timeout} seconds is reported lost;
        once every probe is answered or lost, the run is done and the exit
        status says some were lost.
        """
        pinger, clock, sent, where = self.pinger("-c", "2", "-i", "1", "-W", "5")
        pinger.start()
        clock.advance(1)
        pinger.answer(sent[1])
        self.assertNoResult(pinger.done)
        clock.advance(3.9)
        self.assertNoResult(pinger.done)
        clock.advance(0.1)
        self.successResultOf(pinger.done)
        lines = output(where).splitlines()
        self.assertRegex(lines[0], r"^64 bytes from 192\.0\.2\.1:7: seq=2 time=")
        self.assertEqual(lines[1], "no answer from 192.0.2.1:7: seq=1 (timeout 5 s)")
        self.assertEqual((pinger.stats.sent, pinger.stats.received), (2, 1))
        self.assertEqual(pinger.stats.exitCode(), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_foreignAnswers(self) -> None:
        """
        Duplicates of an answer are ignored; bytes that are not one of this
        run's probes (another run's, garbage) are a wrong reply to the oldest
        outstanding probe.
        """
        pinger, clock, sent, where = self.pinger("-c", "2", "-i", "1")
        pinger.start()
        clock.advance(1)
        pinger.answer(sent[1])
        pinger.answer(sent[1])
        pinger.answer(makeProbe(1, 64, b"12345678"))
        pinger.answer(b"garbage")
        self.assertEqual((pinger.stats.received, pinger.stats.wrong), (1, 1))
        lines = output(where).splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(
            lines[1],
            "wrong reply from 192.0.2.1:7: seq=1 (64 bytes that are not the probe)",
        )
        self.successResultOf(pinger.done)

    def test_stop(self) -> None:
        """
        Stopping an endless run (C{-c 0}, as Ctrl-C does) sends nothing
        more, counts the probes in flight as lost and finishes at once.
        """
        pinger, clock, sent, _ = self.pinger("-c", "0", "-i", "1")
        pinger.start()
        clock.pump([1] * 9)
        pinger.answer(sent[-1])
        pinger.stop()
        self.successResultOf(pinger.done)
        clock.advance(100)
        self.assertEqual(len(sent), 10)
        self.assertEqual((pinger.stats.sent, pinger.stats.received), (10, 1))
        self.assertEqual(clock.getDelayedCalls(), [])


class Collect(ProcessProtocol):
    """
    Collect a child's output; optionally send it SIGINT once C{interruptAfter}
    lines of output arrived.
    """

    def __init__(self, interruptAfter: int = 0) -> None:
        self.out = b""
        self.err = b""
        self.interruptAfter = interruptAfter
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if self.interruptAfter and self.out.count(b"\n") >= self.interruptAfter:
            self.interruptAfter = 0
            self.transport.signalProcess("INT")  # type: ignore[union-attr]

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value.exitCode)  # type: ignore[union-attr]


class ProgramTests(TestCase):
    """
    The real C{netdemo} program, run by the test's reactor against an echo
    in the same reactor.
    """

    def setUp(self) -> None:
        self.echoes = LoopbackEchoes(self)

    async def netdemo(
        self, *args: str, interruptAfter: int = 0
    ) -> tuple[int, str, str]:
        """
        Run C{netdemo ARGS}.

        @return: The exit status, the output and the error text.
        """
        collect = Collect(interruptAfter)
        process = _reactor.spawnProcess(
            collect, sys.executable, [*NETDEMO, *args], env=os.environ
        )
        timeout = _reactor.callLater(PATIENCE, process.signalProcess, "KILL")
        code = await collect.ended
        if timeout.active():
            timeout.cancel()
        return code, collect.out.decode(), collect.err.decode()

    async def test_exitStatus(self) -> None:
        """
        All probes answered: status 0; an error: status 2 and one line on
        standard error.
        """
        code, out, err = await self.netdemo(
            "ping", "tcp", self.echoes.tcp, "-c", "2", "-i", "0.01"
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn("2 probes sent, 2 received, 0% loss", out)
        target = f"127.0.0.1:{refusingPort(self)}"
        code, out, err = await self.netdemo("ping", "tcp", target, "-c", "1")
        self.assertEqual((code, out), (2, ""), err)
        [line] = err.splitlines()
        self.assertIn(f"cannot connect to {target}", line)

    async def test_interrupt(self) -> None:
        """
        Ctrl-C (SIGINT) stops an endless ping cleanly: the summary is
        printed and the exit status says whether all probes were answered.
        """
        code, out, err = await self.netdemo(
            "ping", "tcp", self.echoes.tcp, "-c", "0", "-i", "0.01", interruptAfter=4
        )
        await self.echoes.closed()
        self.assertNotIn("Traceback", err)
        [(sent, received)] = re.findall(
            r"^(\d+) probes sent, (\d+) received", out, re.M
        )
        self.assertGreaterEqual(int(sent), 3)
        # A probe still in flight at the signal counts as lost.
        self.assertEqual(code, 0 if sent == received else 1, out + err)


class ConsoleScriptTests(SynchronousTestCase):
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

    def test_helpIntoClosedPipe(self) -> None:
        """
        C{netdemo --help | head -0}: a reader that went away is no error and
        no traceback.
        """
        script = Path(sys.executable).with_name("netdemo")
        process = subprocess.Popen(
            [str(script), "ping", "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        # Nobody reads: the help meets a closed pipe.
        process.stdout.close()
        err = process.stderr.read()
        process.stderr.close()
        self.assertEqual(process.wait(60), 0, err)
        self.assertEqual(err, b"")
