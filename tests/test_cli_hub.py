"""
Tests for the hub clients C{netdemo chat}, C{netdemo tail} and
C{netdemo pub} (L{netdemo.clients.hub}): units with L{StringTransport} and a
L{Clock}, then the real program against real C{twistd netdemo --pubsub}
hubs on loopback, restarts included.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
from datetime import datetime
from typing import IO, Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from netdemo.cli import NetdemoOptions
from netdemo.clients.hub import (
    MAX_QUEUED_LINES,
    HubConnection,
    _Chat,
    parseDelivery,
    topicMatches,
)
from tests.support import TwistdProcess, assertOneLineError
from tests.test_cli import NETDEMO, netdemo, unusedPort


def hub(*extra: str, listen: str = "tcp:0:interface=127.0.0.1") -> TwistdProcess:
    """
    A C{twistd netdemo} running only a hub on loopback, listening.
    """
    daemon = TwistdProcess("--pubsub", listen, *extra)
    daemon.waitListening(1)
    return daemon


class LineClient:
    """
    A plain blocking socket client of the hub, for the tests' side.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""
        self.waitFor(b"* welcome")

    def send(self, line: bytes) -> None:
        """
        Send one line.
        """
        self.sock.sendall(line + b"\n")

    def waitFor(self, text: bytes, timeout: float = 20.0) -> bytes:
        """
        Read until a line containing C{text} arrived; return that line.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.buffer.split(b"\n")
            for i, line in enumerate(lines[:-1]):
                if text in line:
                    self.buffer = b"\n".join(lines[i + 1 :])
                    return line
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.buffer += data
        raise AssertionError(f"no line with {text!r}; got {self.buffer!r}")

    def collect(self, prefix: bytes, count: int, timeout: float = 30.0) -> list[bytes]:
        """
        Read until C{count} lines starting with C{prefix} arrived; return
        them (other lines are skipped).
        """
        found: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            *lines, self.buffer = self.buffer.split(b"\n")
            found.extend(line for line in lines if line.startswith(prefix))
            if len(found) >= count:
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.buffer += data
        return found

    def close(self) -> None:
        """
        Close the socket.
        """
        self.sock.close()


class Running:
    """
    A running C{netdemo} command whose output is collected by threads.
    """

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*NETDEMO, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        for name in ("stdout", "stderr"):
            stream = getattr(self.process, name)
            threading.Thread(
                target=self._read, args=(name, stream), daemon=True
            ).start()

    def _read(self, name: str, stream: IO[bytes]) -> None:
        """
        Collect the lines of one output stream (in a thread).
        """
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.out[name].append(line)
            self.lines.put((name, line))

    def text(self, name: str) -> str:
        """
        What the command wrote to C{name} so far.
        """
        return "\n".join(self.out[name])

    def waitFor(self, name: str, pattern: str, timeout: float = 30.0) -> str:
        """
        Wait for a line of C{name} matching C{pattern} (also one seen already
        that was not waited for before).
        """
        deadline = time.monotonic() + timeout
        seen = getattr(self, "_seen", set())
        self._seen = seen
        while time.monotonic() < deadline:
            for i, line in enumerate(list(self.out[name])):
                if (name, i) not in seen and re.search(pattern, line):
                    seen.add((name, i))
                    return line
            time.sleep(0.02)
        raise AssertionError(
            f"no {name} line matching {pattern!r}; stdout:\n{self.text('stdout')}\n"
            f"stderr:\n{self.text('stderr')}"
        )

    def write(self, data: bytes) -> None:
        """
        Write to the command's standard input.
        """
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def closeInput(self) -> None:
        """
        End the command's standard input.
        """
        assert self.process.stdin is not None
        self.process.stdin.close()

    def finish(self, sig: int | None = None, timeout: float = 30.0) -> int:
        """
        Optionally send C{sig}, then wait for the exit status.
        """
        if sig is not None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """
        Make sure the command is gone.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()


class DeliveryTests(unittest.TestCase):
    """
    Recognising deliveries among the hub's lines.
    """

    def test_forms(self) -> None:
        """
        Default-topic and topic deliveries are parsed; notices and answers
        are not deliveries.
        """
        plain = parseDelivery(b"<alice> hello there")
        assert plain is not None
        self.assertEqual(
            (plain.topic, plain.identity, plain.text), ("chat", "alice", b"hello there")
        )
        topical = parseDelivery(b"[lab.rack1] <[::1]:4000> 21.5 \xff")
        assert topical is not None
        self.assertEqual(
            (topical.topic, topical.identity, topical.text),
            ("lab.rack1", "[::1]:4000", b"21.5 \xff"),
        )
        for other in [b"* alice joined (2 connected)", b"+OK pong", b"-ERR x", b""]:
            self.assertIsNone(parseDelivery(other))

    def test_json(self) -> None:
        """
        The JSON form has the topic, identity, text (invalid UTF-8
        replaced), received time and history flag.
        """
        delivery = parseDelivery(b"[t] <bob> caf\xc3\xa9 \xff")
        assert delivery is not None
        stamp = datetime.fromisoformat("2026-01-02T03:04:05.000006+00:00")
        record = json.loads(delivery.asJSON(stamp, True))
        self.assertEqual(
            record,
            {
                "topic": "t",
                "identity": "bob",
                "text": "caf\u00e9 \ufffd",
                "received": "2026-01-02T03:04:05.000006Z",
                "history": True,
            },
        )

    def test_patterns(self) -> None:
        """
        Local pattern matching follows the hub's rules.
        """
        self.assertTrue(topicMatches("lab.>", "lab.a.b"))
        self.assertFalse(topicMatches("lab.>", "lab"))
        self.assertTrue(topicMatches("lab.*.t", "lab.x.t"))
        self.assertFalse(topicMatches("lab.*", "lab.x.t"))


class HubConnectionTests(unittest.TestCase):
    """
    L{HubConnection} with a L{StringTransport}.
    """

    stream = (
        b"* welcome to netdemo pubsub, you are 127.0.0.1:5 (client #1, 1 connected)\n"
        b"<alice> hi\r\n"
        b"+OK nick bob\n"
        b"[lab.x] <carol> 1\n"
        b"-ERR bad topic x..y\n"
        b"+OK pong\n"
        b"* server shutting down\n"
    )

    def connect(self) -> tuple[HubConnection, list[bytes], list[bytes]]:
        """
        A connection with three commands sent; the lines and answers it
        reports are collected.
        """
        lines: list[bytes] = []
        answers: list[bytes] = []
        connection = HubConnection(lines.append, lambda c, r: None)
        connection.makeConnection(StringTransport())
        for command in [b"/nick bob", b"/pub x..y z", b"/ping"]:
            connection.command(command).addCallback(answers.append)
        return connection, lines, answers

    def test_everyChunking(self) -> None:
        """
        Whatever the chunking, down to one byte, answers pair with the
        commands in order and every other line is reported whole, without
        its CR.
        """
        for size in range(1, len(self.stream) + 1):
            connection, lines, answers = self.connect()
            for i in range(0, len(self.stream), size):
                connection.dataReceived(self.stream[i : i + size])
            self.assertEqual(
                answers, [b"+OK nick bob", b"-ERR bad topic x..y", b"+OK pong"]
            )
            self.assertEqual(
                lines,
                [
                    self.stream.split(b"\n")[0],
                    b"<alice> hi",
                    b"[lab.x] <carol> 1",
                    b"* server shutting down",
                ],
            )

    @given(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    @settings(max_examples=200, deadline=None)
    def test_anySplits(self, cuts: list[int]) -> None:
        """
        Split anywhere (property test), the hub's lines arrive whole and in
        order, and the first one is the greeting.
        """
        connection, lines, answers = self.connect()
        points = [0, *sorted(cuts), len(self.stream)]
        for start, end in zip(points, points[1:], strict=False):
            connection.dataReceived(self.stream[start:end])
        self.assertEqual(len(lines) + len(answers), 7)
        self.assertEqual(answers[-1], b"+OK pong")
        self.assertEqual(lines[-1], b"* server shutting down")
        self.assertTrue(connection.greeting.called)
        self.assertEqual(connection.greeting.result, self.stream.split(b"\n")[0])

    def test_lostFailsPending(self) -> None:
        """
        Commands still unanswered when the connection is lost fail, and the
        owner is told.
        """
        lost: list[object] = []
        connection = HubConnection(lambda line: None, lambda c, r: lost.append(r))
        connection.makeConnection(StringTransport())
        failures: list[Failure] = []
        connection.command(b"/ping").addErrback(failures.append)
        connection.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(lost), 1)
        self.assertTrue(connection.closed.called)

    def test_keepalive(self) -> None:
        """
        The keepalive sends C{/ping} every interval, and stops with the
        connection.
        """
        clock = Clock()
        connection = HubConnection(lambda line: None, lambda c, r: None)
        transport = StringTransport()
        connection.makeConnection(transport)
        connection.keepAlive(20.0, clock)
        clock.advance(19)
        self.assertEqual(transport.value(), b"")
        clock.advance(1)
        self.assertEqual(transport.value(), b"/ping\n")
        clock.advance(20)
        self.assertEqual(transport.value(), b"/ping\n/ping\n")
        connection.connectionLost(Failure(ConnectionError("gone")))
        clock.advance(100)
        self.assertEqual(transport.value(), b"/ping\n/ping\n")
        self.assertEqual(clock.getDelayedCalls(), [])


class _FakeStdio:
    """
    Stands in for the C{StandardIO} transport: records pauses and output.
    """

    def __init__(self) -> None:
        self.paused = False
        self.changes = 0
        self.written = b""

    def pauseProducing(self) -> None:
        """
        Record a pause.
        """
        self.paused = True
        self.changes += 1

    def resumeProducing(self) -> None:
        """
        Record a resumption.
        """
        self.paused = False
        self.changes += 1

    def write(self, data: bytes) -> None:
        self.written += data


class ChatFlowTests(unittest.TestCase):
    """
    C{chat} reads standard input no faster than it can send it.
    """

    def test_pausedWhileQueued(self) -> None:
        """
        Standard input is paused once L{MAX_QUEUED_LINES} lines wait for the
        hub, and resumed when they were sent; a backlog on the hub's
        connection pauses it too.
        """
        options = NetdemoOptions()
        options.parseOptions(["chat", "127.0.0.1:1"])
        chat = _Chat(MemoryReactorClock(), options.subOptions)
        stdio = _FakeStdio()
        chat.output = stdio
        for _ in range(MAX_QUEUED_LINES - 1):
            chat.typed(b"x")
        self.assertFalse(stdio.paused)
        chat.typed(b"last")
        self.assertTrue(stdio.paused)
        connection = HubConnection(lambda line: None, lambda c, r: None)
        transport = StringTransport()
        connection.makeConnection(transport)
        chat.session.connection = connection
        chat.flush()
        self.assertFalse(stdio.paused)
        self.assertEqual(transport.value(), b"x\n" * (MAX_QUEUED_LINES - 1) + b"last\n")
        chat.throttle(True)
        self.assertTrue(stdio.paused)
        chat.typed(b"more")
        chat.throttle(False)
        self.assertFalse(stdio.paused)
        self.assertEqual(stdio.changes, 4)


class OptionTests(unittest.TestCase):
    """
    Parsing the hub clients' command lines.
    """

    def parse(self, *args: str) -> Any:
        """
        Parse C{netdemo ARGS}; return the subcommand's options.
        """
        options = NetdemoOptions()
        options.parseOptions(list(args))
        return options.subOptions

    def test_pub(self) -> None:
        """
        The message is the rest of the command line; C{-} or nothing means
        standard input; options may come anywhere.
        """
        options = self.parse("pub", "[::1]:8008", "t.x", "hello", "world", "-W", "3")
        self.assertEqual(
            (options["host"], options["port"], options["topic"], options["message"]),
            ("::1", 8008, "t.x", "hello world"),
        )
        self.assertEqual(options["timeout"], 3.0)
        self.assertIsNone(self.parse("pub", "h:1", "t", "-")["message"])
        self.assertIsNone(self.parse("pub", "h:1", "t")["message"])

    def test_tail(self) -> None:
        """
        C{--sub} repeats; without it the default topic is subscribed.
        """
        options = self.parse("tail", "h:1", "-s", "a.>", "--sub", "b", "--history", "4")
        self.assertEqual(options["subs"], ["a.>", "b"])
        self.assertEqual(options["history"], 4)
        self.assertEqual(self.parse("tail", "h:1")["subs"], ["chat"])
        self.assertEqual(self.parse("chat", "h:1", "-n", "al")["nick"], "al")


class HubClientTests(unittest.TestCase):
    """
    The hub clients against one real hub.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = TwistdProcess(
            "--pubsub",
            "tcp:0:interface=127.0.0.1",
            "--pubsub",
            r"tcp6:0:interface=\:\:1",
        )
        listening = cls.daemon.waitListening(2)
        cls.port = cls.daemon.port("pubsub")
        cls.target = f"127.0.0.1:{cls.port}"
        cls.target6 = next(a for _, a in listening if a.startswith("[::1]:"))

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.stop()

    def subscriber(self, *patterns: bytes) -> LineClient:
        """
        A raw subscriber to C{patterns}, subscribed when this returns.
        """
        client = LineClient(self.port)
        self.addCleanup(client.close)
        for pattern in patterns:
            client.send(b"/sub " + pattern)
            client.waitFor(b"+OK subscribed to " + pattern)
        return client

    def assertError(self, result: subprocess.CompletedProcess[str], text: str) -> None:
        """
        Exit status 2 and one line on standard error containing C{text}.
        """
        assertOneLineError(self, result, text)

    def test_pubMessage(self) -> None:
        """
        C{pub} publishes the rest of its command line and exits 0 once
        acknowledged.
        """
        watcher = self.subscriber(b"lab.>")
        result = netdemo("pub", self.target, "lab.rack1.temp", "21.5", "C")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        line = watcher.waitFor(b"[lab.rack1.temp]")
        self.assertRegex(line, rb"^\[lab\.rack1\.temp\] <127\.0\.0\.1:\d+> 21\.5 C$")

    def test_pubIPv6(self) -> None:
        """
        C{[v6address]:port} is accepted.
        """
        watcher = self.subscriber(b"six")
        result = netdemo("pub", self.target6, "six", "over", "IPv6")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(
            watcher.waitFor(b"[six]"), rb"^\[six\] <\[::1\]:\d+> over IPv6$"
        )

    def test_pubStdin(self) -> None:
        """
        C{pub ... -} publishes each non-empty line of standard input, the
        last one even without its newline, and waits for every answer; more
        lines than its window of unanswered commands go through too.
        """
        watcher = self.subscriber(b"lines")
        lines = [f"line {i}" for i in range(2500)]
        result = subprocess.run(
            [*NETDEMO, "pub", f"localhost:{self.port}", "lines", "-"],
            input="\n".join(lines[:1500]) + "\n\n" + "\n".join(lines[1500:]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        got = [
            line.split(b"> ", 1)[1].decode()
            for line in watcher.collect(b"[lines]", 2500)
        ]
        self.assertEqual(got, lines)

    def test_pubRefused(self) -> None:
        """
        A message the hub refuses (a bad topic) is one line and status 2.
        """
        self.assertError(
            netdemo("pub", self.target, "bad..topic", "x"), "-ERR bad topic"
        )

    def test_tailJSON(self) -> None:
        """
        C{tail --sub ... --json} prints one JSON object per matching
        delivery, nothing for other topics, and on Ctrl-C a summary on
        standard error and exit status 0.
        """
        tail = Running("tail", self.target, "--sub", "feed.*", "--json")
        self.addCleanup(tail.kill)
        tail.waitFor("stderr", "connected to")
        publisher = LineClient(self.port)
        self.addCleanup(publisher.close)
        publisher.send(b"/nick feeder")
        publisher.waitFor(b"+OK nick")
        for topic, text in [
            (b"feed.a", b"one"),
            (b"other", b"no"),
            (b"feed.b", b"two"),
        ]:
            publisher.send(b"/pub " + topic + b" " + text)
            publisher.waitFor(b"+OK")
        first = json.loads(tail.waitFor("stdout", "one"))
        second = json.loads(tail.waitFor("stdout", "two"))
        self.assertEqual(
            (first["topic"], first["identity"], first["text"], first["history"]),
            ("feed.a", "feeder", "one", False),
        )
        self.assertEqual(second["topic"], "feed.b")
        datetime.fromisoformat(first["received"].replace("Z", "+00:00"))
        self.assertEqual(tail.finish(signal.SIGINT), 0, tail.text("stderr"))
        self.assertEqual(len(tail.out["stdout"]), 2, tail.text("stdout"))
        self.assertIn(
            "2 messages (0 from history), 0 reconnections", tail.text("stderr")
        )
        self.assertNotIn("Traceback", tail.text("stderr"))

    def test_tailReaderGone(self) -> None:
        """
        When nobody reads C{tail}'s output any more (C{| head -1}), it ends
        quietly with status 0.
        """
        process = subprocess.Popen(
            [*NETDEMO, "tail", self.target, "--sub", "gone"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            self.assertIn(b"connected to", process.stderr.readline())
            self.assertEqual(netdemo("pub", self.target, "gone", "one").returncode, 0)
            self.assertIn(b"> one", process.stdout.readline())
            process.stdout.close()
            for _ in range(3):
                self.assertEqual(netdemo("pub", self.target, "gone", "x").returncode, 0)
            self.assertEqual(process.wait(30), 0)
            err = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        self.assertNotIn(b"Traceback", err)
        self.assertNotIn(b"Exception", err)

    def test_tailHistory(self) -> None:
        """
        C{tail --history N} first replays the last N lines of each matching
        topic, marked as history, then follows.
        """
        for i in range(4):
            result = netdemo("pub", self.target, "hist.x", f"old {i}")
            self.assertEqual(result.returncode, 0, result.stderr)
        tail = Running("tail", self.target, "--sub", "hist.>", "--history", "2")
        self.addCleanup(tail.kill)
        tail.waitFor("stderr", "connected to")
        self.assertEqual(netdemo("pub", self.target, "hist.x", "new").returncode, 0)
        tail.waitFor("stdout", "new")
        self.assertEqual(tail.finish(signal.SIGINT), 0)
        lines = tail.out["stdout"]
        self.assertEqual(len(lines), 3, lines)
        for line, text in zip(lines, ["old 2", "old 3", "new"], strict=True):
            self.assertRegex(line, rf"^\[hist\.x\] <127\.0\.0\.1:\d+> {text}$")
        self.assertIn("3 messages (2 from history)", tail.text("stderr"))

    def test_chatPipe(self) -> None:
        """
        C{... | netdemo chat --nick NAME} takes the nickname, sends every
        line (the last even without a newline; more lines than it queues
        while connecting), and exits 0 once the hub has them; answers to
        typed commands are shown.
        """
        watcher = self.subscriber()
        lines = [f"hello {i}" for i in range(25000)]
        result = subprocess.run(
            [*NETDEMO, "chat", self.target, "--nick", "piper"],
            input="\n".join(lines) + "\n/who\nworld",
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        got = watcher.collect(b"<piper>", len(lines) + 1)
        self.assertEqual(
            got, [f"<piper> {line}".encode() for line in [*lines, "world"]]
        )
        self.assertRegex(result.stdout, r"(?m)^\+OK who \d+: .*piper")
        self.assertIn("25002 lines sent", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_chatInteractive(self) -> None:
        """
        C{chat} shows what others say, and Ctrl-C ends it with status 0.
        """
        chat = Running("chat", self.target)
        self.addCleanup(chat.kill)
        chat.waitFor("stderr", "connected to")
        other = LineClient(self.port)
        self.addCleanup(other.close)
        other.send(b"/nick talker")
        other.waitFor(b"+OK nick")
        other.send(b"anyone there?")
        chat.waitFor("stdout", r"^<talker> anyone there\?$")
        chat.write(b"yes\n")
        self.assertRegex(other.waitFor(b"> yes"), rb"^<127\.0\.0\.1:\d+> yes$")
        self.assertEqual(chat.finish(signal.SIGINT), 0, chat.text("stderr"))
        self.assertNotIn("Traceback", chat.text("stderr"))

    def test_badNick(self) -> None:
        """
        A nickname the hub refuses on the first connection is an error.
        """
        self.assertError(netdemo("chat", self.target, "--nick", "9lives"), "bad nick")

    def test_badPattern(self) -> None:
        """
        A pattern the hub refuses on the first connection is an error.
        """
        self.assertError(netdemo("tail", self.target, "--sub", "a.>.b"), "a.>.b")


class ErrorTests(unittest.TestCase):
    """
    Refused connections, silent servers, bad addresses and options.
    """

    def assertError(self, result: subprocess.CompletedProcess[str], text: str) -> None:
        """
        Exit status 2 and one line on standard error containing C{text}.
        """
        assertOneLineError(self, result, text)

    def test_refused(self) -> None:
        """
        Nothing listening: each client fails at once with status 2.
        """
        target = f"127.0.0.1:{unusedPort()}"
        self.assertError(netdemo("pub", target, "t", "x"), "refused")
        self.assertError(netdemo("tail", target), "refused")
        self.assertError(netdemo("chat", target), "refused")

    def test_noAnswer(self) -> None:
        """
        A server that accepts but never answers: each client gives up after
        C{--timeout} with status 2.
        """
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(5)
            target = f"127.0.0.1:{silent.getsockname()[1]}"
            self.assertError(netdemo("pub", target, "t", "x", "-W", "0.5"), "no answer")
            self.assertError(netdemo("tail", target, "-W", "0.5"), "no answer")
            self.assertError(netdemo("chat", target, "-W", "0.5"), "no answer")

    def test_hubRefuses(self) -> None:
        """
        A hub that refuses the connection (C{--max-connections}) makes each
        client fail with the hub's reason.
        """
        with hub("--max-connections", "1") as daemon:
            port = daemon.port("pubsub")
            holder = LineClient(port)
            self.addCleanup(holder.close)
            target = f"127.0.0.1:{port}"
            self.assertError(netdemo("tail", target), "-ERR refused: max-connections")
            self.assertError(netdemo("chat", target), "-ERR refused: max-connections")
            self.assertError(
                netdemo("pub", target, "t", "x"), "-ERR refused: max-connections"
            )
            daemon.stop()

    def test_badArguments(self) -> None:
        """
        Bad addresses and options are one line and status 2.
        """
        self.assertError(netdemo("pub", "127.0.0.1", "t", "x"), "'127.0.0.1'")
        self.assertError(netdemo("pub", "::1:8008", "t", "x"), "[ADDRESS]:PORT")
        self.assertError(netdemo("pub", "127.0.0.1:8008", "t", ""), "empty")
        self.assertError(netdemo("tail", "127.0.0.1:8008", "--history", "-1"), "'-1'")
        self.assertError(netdemo("tail", "127.0.0.1:8008", "--keepalive", "x"), "'x'")
        self.assertError(netdemo("chat"), "arguments")
        self.assertError(netdemo("tail", "h:1", "--bogus"), "bogus")
        self.assertError(netdemo("chat", "no-such-host.invalid:8008"), "no-such-host")

    def test_help(self) -> None:
        """
        Every hub client's C{--help} shows examples, kept line by line.
        """
        for command, example in [
            ("chat", "  netdemo chat 127.0.0.1:8008 --nick alice\n"),
            ("tail", "  netdemo tail 127.0.0.1:8008\n"),
            ("pub", "  netdemo pub 127.0.0.1:8008 lab.rack1.temp 21.5\n"),
        ]:
            result = netdemo(command, "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("Examples:\n", result.stdout)
            self.assertIn(example, result.stdout)


class KeepaliveTests(unittest.TestCase):
    """
    A quiet subscription outlives the hub's idle timeout.
    """

    def test_keepalive(self) -> None:
        """
        Against a hub with a 1 s idle timeout, a C{tail} pinging every
        0.3 s keeps its connection for 3 s and still gets messages, while
        one with the keepalive off is closed (and says so, and reconnects).
        """
        with hub("--idle-timeout", "1") as daemon:
            target = f"127.0.0.1:{daemon.port('pubsub')}"
            kept = Running("tail", target, "--keepalive", "0.3")
            quiet = Running("tail", target, "--keepalive", "0")
            self.addCleanup(kept.kill)
            self.addCleanup(quiet.kill)
            kept.waitFor("stderr", "connected to")
            quiet.waitFor("stderr", "lost connection")
            quiet.waitFor("stderr", "reconnected to")
            time.sleep(3)
            self.assertEqual(netdemo("pub", target, "chat", "still here").returncode, 0)
            kept.waitFor("stdout", "still here")
            self.assertEqual(kept.finish(signal.SIGINT), 0)
            quiet.finish(signal.SIGINT)
            self.assertNotIn("lost connection", kept.text("stderr"))
            self.assertIn("0 reconnections", kept.text("stderr"))
            daemon.stop()


class ReconnectTests(unittest.TestCase):
    """
    C{chat} and C{tail} survive a restart of the hub.
    """

    def test_restart(self) -> None:
        """
        The hub is stopped and started again on the same port under a
        running C{chat} and C{tail}: both say they lost it and reconnected;
        the chat has its nickname again and the tail its subscription, so
        a line published after the restart arrives as it should.
        """
        first = hub()
        port = first.port("pubsub")
        target = f"127.0.0.1:{port}"
        chat = Running("chat", target, "--nick", "phoenix")
        tail = Running("tail", target, "--sub", "news", "--json")
        try:
            self.addCleanup(chat.kill)
            self.addCleanup(tail.kill)
            chat.waitFor("stderr", "connected to")
            tail.waitFor("stderr", "connected to")
            chat.write(b"/pub news before\n")
            self.assertEqual(
                json.loads(tail.waitFor("stdout", "before"))["text"], "before"
            )
        finally:
            first.stop()
        chat.waitFor("stdout", r"^\* server shutting down")
        chat.waitFor("stderr", "lost connection")
        tail.waitFor("stderr", "lost connection")
        with hub(listen=f"tcp:{port}:interface=127.0.0.1") as second:
            self.assertIn(("pubsub", target), second.listening)
            chat.waitFor("stderr", "reconnected to", timeout=40)
            tail.waitFor("stderr", "reconnected to", timeout=40)
            chat.write(b"/pub news after\n")
            record = json.loads(tail.waitFor("stdout", "after"))
            self.assertEqual((record["identity"], record["topic"]), ("phoenix", "news"))
            chat.closeInput()
            self.assertEqual(chat.finish(), 0, chat.text("stderr"))
            self.assertEqual(tail.finish(signal.SIGINT), 0, tail.text("stderr"))
            self.assertIn("1 reconnections", tail.text("stderr"))
            self.assertIn("1 reconnections", chat.text("stderr"))
            second.stop()
