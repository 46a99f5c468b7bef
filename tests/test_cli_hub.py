"""
Tests for the hub clients C{netdemo chat}, C{netdemo tail} and
C{netdemo pub} (L{netdemo.clients.chat}, L{netdemo.clients.tail},
L{netdemo.clients.pub} and their L{netdemo.clients.hubclient}).

Units run with L{StringTransport} and a L{Clock}; the runners run in this
process against a hub on real loopback sockets (L{LoopbackHub}), writing to
in-memory consoles, with standard input and Ctrl-C stood in for; a few
tests run the real program against a real C{twistd} hub, where the process
is the point: a restart of the hub under a running C{chat} and C{tail},
Ctrl-C, pipes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.cli import parseCommandLine
from netdemo.clients import chat, pub, tail
from netdemo.clients.chat import MAX_QUEUED_LINES, Chat
from netdemo.clients.common import CommandError, Console
from netdemo.clients.hubclient import HubConnection, HubSession
from netdemo.clients.pub import PUB_WINDOW, Publisher
from netdemo.clients.tail import (
    MAX_RESUME_BYTES,
    Tail,
    asJSON,
    readResume,
    topicMatches,
    writeResume,
)
from netdemo.hubwire import parseDelivery
from netdemo.limits import ConnectionLimits, HubLimits
from tests.pubsubhelpers import LineSocket, LoopbackHub
from tests.support import PATIENCE, Daemon, assertOneLineError, poll, waitUntil
from tests.test_cli import NETDEMO, netdemo


def resumePath(testCase: Any) -> str:
    """
    A path for a C{--resume} file in a temporary directory removed after
    the test.
    """
    directory = tempfile.mkdtemp(prefix="netdemo-tail-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, "positions.json")


def memoryConsole() -> Console:
    """
    A console writing to memory.
    """
    return Console(out=io.StringIO(), err=io.StringIO(), binary=io.BytesIO())


def notes(console: Console) -> str:
    """
    What a memory console got as notices.
    """
    return console.err.getvalue()  # type: ignore[attr-defined]


def output(console: Console) -> bytes:
    """
    What a memory console got as byte output.
    """
    return console.bytesOut().getvalue()  # type: ignore[attr-defined]


def parse(*args: str) -> Any:
    """
    Parse C{netdemo ARGS}; return the subcommand's options.
    """
    return parseCommandLine(list(args)).subOptions


class FakeStdio:
    """
    Stands in for standard input and its transport: the test types the
    input; what the client writes goes to the console's byte output.
    """

    def __init__(self, protocol: Any, console: Console) -> None:
        self.protocol = protocol
        self.output = console.bytesOut()
        self.paused = False
        self.changes = 0
        self.closed = False
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        self.output.write(data)

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

    def loseConnection(self) -> None:
        """
        Close standard input and output.
        """
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    async def type(self, data: bytes, chunk: int = 8192) -> None:
        """
        Type C{data}, a chunk per reactor turn while not paused, then end
        the input.
        """
        for start in range(0, len(data), chunk):
            await deferLater(reactor, 0, lambda: None)
            await waitUntil(lambda: not self.paused, "standard input resumed")
            self.protocol.dataReceived(data[start : start + chunk])
        self.protocol.readConnectionLost()


def typing(data: bytes) -> Callable[[Any, Console, Any], FakeStdio]:
    """
    A stand-in for L{netdemo.clients.hubclient.standardIO} whose input is
    C{data}.
    """

    def standardIO(protocol: Any, console: Console, reactor: Any) -> FakeStdio:
        stdio = FakeStdio(protocol, console)
        Deferred.fromCoroutine(stdio.type(data))
        return stdio

    return standardIO


def closedPort() -> socket.socket:
    """
    A loopback TCP socket bound and not listening: connections to its port
    are refused.  Close it after the test.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class HubConnectionTests(SynchronousTestCase):
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
        connection = HubConnection(memoryConsole(), lines.append, lambda c, r: None)
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
        self.assertEqual(
            self.successResultOf(connection.greeting), self.stream.split(b"\n")[0]
        )

    def test_tooLongLine(self) -> None:
        """
        A line from the hub longer than a client takes is a notice and the
        end of the connection.
        """
        console = memoryConsole()
        connection = HubConnection(console, lambda line: None, lambda c, r: None)
        transport = StringTransport()
        connection.makeConnection(transport)
        connection.dataReceived(b"x" * (1 << 20))
        self.assertFalse(transport.disconnecting)
        connection.dataReceived(b"x")
        self.assertIn("longer than 1048576 bytes", notes(console))

    def test_lostFailsPending(self) -> None:
        """
        Commands still unanswered when the connection is lost fail, and the
        owner is told.
        """
        lost: list[object] = []
        connection = HubConnection(
            memoryConsole(), lambda line: None, lambda c, r: lost.append(r)
        )
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
        connection = HubConnection(
            memoryConsole(), lambda line: None, lambda c, r: None
        )
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


class PublisherTests(SynchronousTestCase):
    """
    L{Publisher}: the window of unanswered C{/pub} commands and the answer
    timeout, with a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.connection = HubConnection(
            memoryConsole(), lambda line: None, lambda c, r: None
        )
        self.connection.makeConnection(self.transport)
        self.publisher = Publisher(self.clock, self.connection, b"t", 5.0)

    def answer(self, count: int, line: bytes = b"+OK") -> None:
        """
        The hub answers C{count} commands.
        """
        self.connection.dataReceived(line + b"\n" + b"+OK\n" * (count - 1))

    def test_window(self) -> None:
        """
        Input is paused once L{PUB_WINDOW} commands wait for their answer,
        and resumed when half of them are answered; once the input ended
        and all are answered, it is done.
        """
        stdio = FakeStdio(Protocol(), memoryConsole())
        self.publisher.input = stdio
        for i in range(PUB_WINDOW):
            self.publisher.publish(b"m%d" % i)
        self.assertTrue(stdio.paused)
        self.publisher.publish(b"   ")
        self.answer(PUB_WINDOW // 2)
        self.assertTrue(stdio.paused)
        self.answer(1)
        self.assertFalse(stdio.paused)
        self.publisher.ended()
        self.assertNoResult(self.publisher.done)
        self.answer(PUB_WINDOW // 2 - 1)
        self.assertEqual(self.successResultOf(self.publisher.done), PUB_WINDOW)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.transport.value().startswith(b"/pub t m0\n/pub t m1\n"))

    def test_timeout(self) -> None:
        """
        Each answer restarts the timeout; with no answer for C{--timeout}
        seconds the run fails.
        """
        for text in [b"a", b"b"]:
            self.publisher.publish(text)
        self.publisher.ended()
        self.clock.advance(4)
        self.answer(1)
        self.clock.advance(4)
        self.assertNoResult(self.publisher.done)
        self.clock.advance(1)
        failure = self.failureResultOf(self.publisher.done, CommandError)
        self.assertEqual(str(failure.value), "no answer from the hub within 5 s")

    def test_refused(self) -> None:
        """
        A C{-ERR} answer fails the run, naming the message.
        """
        self.publisher.publish(b"a")
        self.publisher.publish(b"b")
        self.answer(1)
        self.answer(1, b"-ERR bad topic t")
        failure = self.failureResultOf(self.publisher.done, CommandError)
        self.assertEqual(
            str(failure.value), "the hub refused message 2: -ERR bad topic t"
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ChatFlowTests(SynchronousTestCase):
    """
    C{chat} reads standard input no faster than it can send it.
    """

    def test_pausedWhileQueued(self) -> None:
        """
        Standard input is paused once L{MAX_QUEUED_LINES} lines wait for the
        hub, and resumed when they were sent; a backlog on the hub's
        connection pauses it too.
        """
        console = memoryConsole()
        run = Chat(MemoryReactorClock(), parse("chat", "127.0.0.1:1"), console)
        stdio = FakeStdio(Protocol(), console)
        run.output = stdio
        for _ in range(MAX_QUEUED_LINES - 1):
            run.typed(b"x")
        self.assertFalse(stdio.paused)
        run.typed(b"last")
        self.assertTrue(stdio.paused)
        connection = HubConnection(console, lambda line: None, lambda c, r: None)
        transport = StringTransport()
        connection.makeConnection(transport)
        run.session.connection = connection
        run.flush()
        self.assertFalse(stdio.paused)
        self.assertEqual(transport.value(), b"x\n" * (MAX_QUEUED_LINES - 1) + b"last\n")
        run.throttle(True)
        self.assertTrue(stdio.paused)
        run.typed(b"more")
        run.throttle(False)
        self.assertFalse(stdio.paused)
        self.assertEqual(stdio.changes, 4)


class OptionTests(SynchronousTestCase):
    """
    Parsing the hub clients' command lines.
    """

    def test_pub(self) -> None:
        """
        The message is the rest of the command line; C{-} or nothing means
        standard input; options may come anywhere.
        """
        options = parse("pub", "[::1]:8008", "t.x", "hello", "world", "-W", "3")
        self.assertEqual(
            (options["host"], options["port"], options["topic"], options["message"]),
            ("::1", 8008, "t.x", "hello world"),
        )
        self.assertEqual(options["timeout"], 3.0)
        self.assertIsNone(parse("pub", "h:1", "t", "-")["message"])
        self.assertIsNone(parse("pub", "h:1", "t")["message"])

    def test_tail(self) -> None:
        """
        C{--sub} repeats; without it the default topic is subscribed.
        """
        options = parse("tail", "h:1", "-s", "a.>", "--sub", "b", "--history", "4")
        self.assertEqual(options["subs"], ["a.>", "b"])
        self.assertEqual(options["history"], 4)
        self.assertEqual(parse("tail", "h:1")["subs"], ["chat"])
        self.assertEqual(parse("chat", "h:1", "-n", "al")["nick"], "al")

    def test_bad(self) -> None:
        """
        Bad addresses and options are one line naming the value.
        """
        for args, text in [
            (["pub", "127.0.0.1", "t", "x"], "'127.0.0.1'"),
            (["pub", "::1:8008", "t", "x"], "[ADDRESS]:PORT"),
            (["pub", "127.0.0.1:8008", "t", ""], "empty"),
            (["pub", "h:1", "a topic", "x"], "'a topic'"),
            (["tail", "127.0.0.1:8008", "--history", "-1"], "'-1'"),
            (["tail", "127.0.0.1:8008", "--keepalive", "x"], "'x'"),
            (["tail", "h:1", "--sub", "a b"], "'a b'"),
            (["chat"], "arguments"),
            (["tail", "h:1", "--bogus"], "bogus"),
            (["tail", "h:1", "--since", "x"], "'x'"),
            (["tail", "h:1", "--since", "9" * 19], "'" + "9" * 19 + "'"),
            (["tail", "h:1", "--since", "1", "--history", "2"], "--since"),
        ]:
            with self.assertRaises(UsageError) as caught:
                parse(*args)
            self.assertIn(text, str(caught.exception), args)
            self.assertNotIn("\n", str(caught.exception), args)

    def test_resumeFile(self) -> None:
        """
        C{--resume FILE}: a missing file is an empty one; a file that is
        not a resume file (or too large) is a usage error naming it.
        """
        path = resumePath(self)
        options = parse("tail", "h:1", "--resume", path)
        self.assertEqual((options["epoch"], options["positions"]), (None, {}))
        writeResume(path, "abc", {"t.x": 4})
        options = parse("tail", "h:1", "--resume", path)
        self.assertEqual((options["epoch"], options["positions"]), ("abc", {"t.x": 4}))
        for content in [
            b"not json",
            b"[]",
            b'{"epoch": "e", "topics": {"t": -1}}',
            b'{"epoch": "e", "topics": {"bad topic": 1}}',
            b'{"epoch": "e e", "topics": {}}',
            b'{"epoch": "e", "topics": {"t": true}}',
            b'{"epoch": "e", "topics": {}, "x": "' + b"y" * MAX_RESUME_BYTES + b'"}',
        ]:
            with open(path, "wb") as f:
                f.write(content)
            with self.assertRaises(UsageError) as caught:
                parse("tail", "h:1", "--resume", path)
            self.assertIn(repr(path), str(caught.exception), content[:40])

    def test_help(self) -> None:
        """
        Every hub client's help shows examples, kept line by line.
        """
        for args, example in [
            (["chat", "h:1"], "  netdemo chat 127.0.0.1:8008 --nick alice\n"),
            (["tail", "h:1"], "  netdemo tail 127.0.0.1:8008\n"),
            (["pub", "h:1", "t"], "  netdemo pub 127.0.0.1:8008 lab.rack1.temp 21.5\n"),
        ]:
            text = parse(*args).getUsage(width=80)
            self.assertIn("Examples:\n", text)
            self.assertIn(example, text)


class OutputTests(SynchronousTestCase):
    """
    What C{tail} prints.
    """

    def test_json(self) -> None:
        """
        The JSON form has the topic, identity, text (invalid UTF-8
        replaced), received time and history flag.
        """
        delivery = parseDelivery(b"[t] <bob> caf\xc3\xa9 \xff")
        assert delivery is not None
        stamp = datetime.fromisoformat("2026-01-02T03:04:05.000006+00:00")
        self.assertEqual(
            json.loads(asJSON(delivery, stamp, True)),
            {
                "topic": "t",
                "identity": "bob",
                "text": "caf\u00e9 \ufffd",
                "received": "2026-01-02T03:04:05.000006Z",
                "history": True,
                "seq": None,
            },
        )
        numbered = parseDelivery(b"#12 [t] <bob> x")
        assert numbered is not None
        self.assertEqual(json.loads(asJSON(numbered, stamp, False))["seq"], 12)

    def test_patterns(self) -> None:
        """
        Local pattern matching follows the hub's rules.
        """
        self.assertTrue(topicMatches("lab.>", "lab.a.b"))
        self.assertFalse(topicMatches("lab.>", "lab"))
        self.assertTrue(topicMatches("lab.*.t", "lab.x.t"))
        self.assertFalse(topicMatches("lab.*", "lab.x.t"))


class HeldTests(SynchronousTestCase):
    """
    How C{tail} prints what it held while resuming: the replay and live
    lines overlap and arrive in any order of the two streams.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(0, 6),
        st.integers(0, 6),
        st.integers(0, 6),
        st.randoms(use_true_random=False),
    )
    def test_noDuplicateNoGap(
        self, position: int, kept: int, live: int, random: Any
    ) -> None:
        """
        The replay (position+1..S) and the live lines published since the
        subscription (some of them also in the replay, then the newer)
        come out once each, in order; later live lines too.
        """
        options = parse("tail", "h:1", "--since", str(position), "--json")
        console = memoryConsole()
        tail = Tail(MemoryReactorClock(), options, console)
        last = position + kept
        replay = list(range(position + 1, last + 1))
        # Live lines published after the subscription: the newest of the
        # replay and later ones, in order; merged with the replay in any
        # interleaving of the two.
        liveSeqs = list(range(max(position + 1, last - live + 1), last + live + 1))
        streams = [replay, liveSeqs]
        tail.held = []
        tail.historyLast["t"] = last
        while any(streams):
            stream = random.choice([x for x in streams if x])
            tail.hubLine(b"#%d [t] <a> %d" % (stream[0], stream[0]))
            stream.pop(0)
        tail.release()
        if last > position:
            # Again: a duplicate.
            tail.hubLine(b"#%d [t] <a> %d" % (last, last))
        tail.hubLine(b"#%d [t] <a> %d" % (last + live + 1, last + live + 1))
        got = [json.loads(x) for x in output(console).splitlines()]
        expected = list(range(position + 1, last + live + 2))
        self.assertEqual([x["seq"] for x in got], expected)
        self.assertEqual([x["text"] for x in got], [str(x) for x in expected])
        self.assertEqual([x["history"] for x in got], [x <= last for x in expected])

    def test_unnumberedBeforeResume(self) -> None:
        """
        Lines that came before C{/seq on} took effect are in the resume's
        replay (or its gap): dropped after a resume, printed otherwise.
        """
        for unnumbered, expected in [(False, [b"<a> x"]), (True, [b"<a> w", b"<a> x"])]:
            console = memoryConsole()
            tail = Tail(MemoryReactorClock(), parse("tail", "h:1", "--json"), console)
            tail.held = []
            tail.hubLine(b"<a> w")
            tail.hubLine(b"#1 <a> x")
            tail.release(unnumbered)
            texts = [json.loads(x)["text"] for x in output(console).splitlines()]
            self.assertEqual(texts, [x[4:].decode() for x in expected])


class Runners(TestCase):
    """
    What the tests of the runners share: a hub on loopback, the runners in
    this process, memory consoles (no tests of its own).
    """

    console: Console

    async def startHub(self, **kwargs: Any) -> LoopbackHub:
        """
        A hub on 127.0.0.1 and ::1, stopped after the test.
        """
        hub = await LoopbackHub(**kwargs).start()
        self.addCleanup(hub.stop)
        return hub

    def patchInterrupts(self) -> None:
        """
        A memory console, and Ctrl-C stood in for by C{self.interrupted}.
        """
        self.console = memoryConsole()
        self.interrupted: Deferred[None] = Deferred()
        for module in (chat, tail):
            self.patch(module, "whenInterrupted", lambda reactor: self.interrupted)

    def launch(self, *args: str) -> Deferred[int]:
        """
        Start C{netdemo ARGS} in this process.

        @return: Its exit status, or its L{CommandError}.
        """
        options = parseCommandLine(list(args))
        runners: dict[str | None, Callable[..., Any]] = {
            "chat": chat.runChat,
            "tail": tail.runTail,
            "pub": pub.runPub,
        }
        runner = runners[options.subCommand]
        return Deferred.fromCoroutine(runner(reactor, options.subOptions, self.console))

    async def fails(self, *args: str) -> str:
        """
        Run C{netdemo ARGS}, which must fail.

        @return: The one line it fails with.
        """
        with self.assertRaises(CommandError) as caught:
            await self.launch(*args)
        self.assertNotIn("\n", str(caught.exception))
        return str(caught.exception)

    async def connected(self) -> None:
        """
        Wait until the running client says it is connected.
        """
        await waitUntil(lambda: "connected to" in notes(self.console), "connected")


class RunnerTests(Runners):
    """
    The runners in this process against a hub on loopback, writing to
    memory consoles.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.patchInterrupts()

        async def start() -> None:
            self.hub = await self.startHub(ipv6=True)

        return Deferred.fromCoroutine(start())

    async def test_pubMessage(self) -> None:
        """
        C{pub} publishes the rest of its command line, over IPv4 or IPv6,
        and ends once acknowledged, saying nothing.
        """
        watcher = await self.hub.watcher(b"lab.>", b"six")
        self.assertEqual(
            await self.launch("pub", self.hub.target, "lab.t", "21.5", "C"), 0
        )
        self.assertEqual(
            await self.launch("pub", self.hub.target6, "six", "over", "v6"), 0
        )
        self.assertEqual(notes(self.console), "")
        [first] = await watcher.waitFor(b"[lab.t]")
        self.assertRegex(first, rb"^\[lab\.t\] <127\.0\.0\.1:\d+> 21\.5 C$")
        [second] = await watcher.waitFor(b"[six]")
        self.assertRegex(second, rb"^\[six\] <\[::1\]:\d+> over v6$")

    async def test_pubStdin(self) -> None:
        """
        C{pub ... -} publishes each non-empty line of standard input, the
        last one even without its newline, and waits for every answer; more
        lines than its window of unanswered commands go through too.
        """
        watcher = await self.hub.watcher(b"lines")
        lines = [b"line %d" % i for i in range(2500)]
        data = b"\n".join(lines[:1500]) + b"\n\n" + b"\n".join(lines[1500:])
        self.patch(pub, "standardIO", typing(data))
        self.assertEqual(await self.launch("pub", self.hub.target, "lines", "-"), 0)
        got = await watcher.waitFor(b"[lines]", 2500)
        self.assertEqual([line.split(b"> ", 1)[1] for line in got], lines)

    async def test_pubRefused(self) -> None:
        """
        A message the hub refuses (a bad topic) fails the run.
        """
        message = await self.fails("pub", self.hub.target, "bad..topic", "x")
        self.assertIn("-ERR bad topic", message)

    async def test_tailJSON(self) -> None:
        """
        C{tail --sub ... --json} prints one JSON object per matching
        delivery, nothing for other topics, and on Ctrl-C a summary.
        """
        running = self.launch("tail", self.hub.target, "--sub", "feed.*", "--json")
        await self.connected()
        publisher = await self.hub.watcher()
        await publisher.command(b"/nick feeder", b"+OK nick")
        for line in [b"/pub feed.a one", b"/pub other no", b"/pub feed.b two"]:
            await publisher.command(line, b"+OK")
        await waitUntil(lambda: output(self.console).count(b"\n") == 2, "2 lines")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        first, second = map(json.loads, output(self.console).splitlines())
        self.assertEqual(
            (first["topic"], first["identity"], first["text"], first["history"]),
            ("feed.a", "feeder", "one", False),
        )
        self.assertEqual(second["topic"], "feed.b")
        datetime.fromisoformat(first["received"].replace("Z", "+00:00"))
        self.assertIn(
            "2 messages (0 from history), 0 reconnections", notes(self.console)
        )

    async def test_tailHistory(self) -> None:
        """
        C{tail --history N} first replays the last N lines of each matching
        topic, marked as history, then follows.
        """
        for i in range(4):
            self.assertEqual(
                await self.launch("pub", self.hub.target, "h.x", f"old {i}"), 0
            )
        running = self.launch("tail", self.hub.target, "--sub", "h.>", "--history", "2")
        await self.connected()
        self.assertEqual(await self.launch("pub", self.hub.target, "h.x", "new"), 0)
        await waitUntil(lambda: b"new" in output(self.console), "the new line")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        lines = output(self.console).splitlines()
        self.assertEqual(len(lines), 3, lines)
        for line, text in zip(lines, [b"old 2", b"old 3", b"new"], strict=True):
            self.assertRegex(line, rb"^\[h\.x\] <127\.0\.0\.1:\d+> " + text + b"$")
        self.assertIn("3 messages (2 from history)", notes(self.console))

    async def test_tailSince(self) -> None:
        """
        C{tail --since SEQ --json} prints the lines numbered after SEQ of
        every matching topic, marked as history, then follows; each with its
        number.
        """
        for i in range(1, 6):
            await self.launch("pub", self.hub.target, "s.x", f"old {i}")
        await self.launch("pub", self.hub.target, "s.y", "other")
        running = self.launch(
            "tail", self.hub.target, "--sub", "s.*", "--since", "3", "--json"
        )
        await self.connected()
        await waitUntil(lambda: output(self.console).count(b"\n") == 3, "history")
        self.assertEqual(await self.launch("pub", self.hub.target, "s.x", "new"), 0)
        await waitUntil(lambda: b"new" in output(self.console), "the new line")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        got = [json.loads(x) for x in output(self.console).splitlines()]
        self.assertEqual(
            [(x["topic"], x["seq"], x["text"], x["history"]) for x in got],
            [
                ("s.x", 4, "old 4", True),
                ("s.x", 5, "old 5", True),
                ("s.y", 1, "other", True),
                ("s.x", 6, "new", False),
            ],
        )
        self.assertIn("4 messages (3 from history)", notes(self.console))
        # s.y never reached 3: its position is not one the hub gave.
        self.assertIn("hub: * gap: history of s.y starts at seq 1", notes(self.console))

    async def test_tailSinceGap(self) -> None:
        """
        When the hub's history no longer reaches back, tail says so and
        prints what it kept (without numbers, as the hub sends lines).
        """
        hub = await self.startHub(hubLimits=HubLimits(history=2))
        for i in range(1, 6):
            await self.launch("pub", hub.target, "g.x", f"old {i}")
        running = self.launch("tail", hub.target, "--sub", "g.x", "--since", "1")
        await self.connected()
        await waitUntil(lambda: output(self.console).count(b"\n") == 2, "history")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        lines = output(self.console).splitlines()
        for line, text in zip(lines, [b"old 4", b"old 5"], strict=True):
            self.assertRegex(line, rb"^\[g\.x\] <127\.0\.0\.1:\d+> " + text + b"$")
        self.assertIn("hub: * gap: history of g.x starts at seq 4", notes(self.console))

    async def test_tailResume(self) -> None:
        """
        C{tail --resume FILE} remembers the last number seen per topic; the
        next run prints what was published in between, then follows; a
        restarted hub (another epoch) is told and read from its start.
        """
        path = resumePath(self)
        running = self.launch("tail", self.hub.target, "--sub", "r.x", "--resume", path)
        await self.connected()
        for text in ["a", "b"]:
            await self.launch("pub", self.hub.target, "r.x", text)
        await waitUntil(lambda: output(self.console).count(b"\n") == 2, "2 lines")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        epoch = self.hub.factory.history.epoch
        self.assertEqual(readResume(path), (epoch, {"r.x": 2}))
        for text in ["c", "d"]:
            await self.launch("pub", self.hub.target, "r.x", text)
        self.patchInterrupts()
        running = self.launch("tail", self.hub.target, "--sub", "r.x", "--resume", path)
        await self.connected()
        await waitUntil(lambda: output(self.console).count(b"\n") == 2, "c, d")
        await self.launch("pub", self.hub.target, "r.x", "e")
        await waitUntil(lambda: output(self.console).count(b"\n") == 3, "e")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        texts = [x.rsplit(b" ", 1)[1] for x in output(self.console).splitlines()]
        self.assertEqual(texts, [b"c", b"d", b"e"])
        self.assertEqual(readResume(path), (epoch, {"r.x": 5}))
        # Another hub (a restart): another epoch.
        other = await self.startHub()
        await self.launch("pub", other.target, "r.x", "fresh")
        self.patchInterrupts()
        running = self.launch("tail", other.target, "--sub", "r.x", "--resume", path)
        await self.connected()
        await waitUntil(lambda: b"fresh" in output(self.console), "fresh")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        self.assertIn("the hub restarted", notes(self.console))
        self.assertEqual(output(self.console).count(b"\n"), 1)
        self.assertEqual(readResume(path), (other.factory.history.epoch, {"r.x": 1}))

    async def test_tailHubWithoutSeq(self) -> None:
        """
        A hub that does not number lines (no C{/seq}): C{--json} goes on
        with C{"seq": null} and a notice; C{--since} fails in one line.
        """
        self.patch(self.hub.factory, "cmd_seq", None)
        message = await self.fails("tail", self.hub.target, "--since", "0")
        self.assertIn("the hub does not number its lines", message)
        running = self.launch("tail", self.hub.target, "--sub", "n.x", "--json")
        await self.connected()
        await self.launch("pub", self.hub.target, "n.x", "plain")
        await waitUntil(lambda: b"plain" in output(self.console), "the line")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        [record] = map(json.loads, output(self.console).splitlines())
        self.assertEqual((record["text"], record["seq"]), ("plain", None))
        self.assertIn("(no sequence numbers)", notes(self.console))

    async def test_tailOutputGone(self) -> None:
        """
        When the output can no longer be written to, tail ends quietly.
        """

        class Gone(io.BytesIO):
            """
            An output whose reader went away.
            """

            def write(self, data: Any) -> int:
                raise BrokenPipeError()

        self.console.binary = Gone()
        running = self.launch("tail", self.hub.target)
        await self.connected()
        self.assertEqual(await self.launch("pub", self.hub.target, "chat", "x"), 0)
        self.assertEqual(await running, 0)
        self.assertIn("tail of", notes(self.console))

    async def test_chat(self) -> None:
        """
        C{chat --nick NAME} takes the nickname, sends every line of its
        input (the last even without a newline), shows the answers to
        commands, and at the end of input quits and ends.
        """
        watcher = await self.hub.watcher()
        self.patch(chat, "standardIO", typing(b"hello\n/who\nworld"))
        self.assertEqual(
            await self.launch("chat", self.hub.target, "--nick", "piper"), 0
        )
        self.assertEqual(
            await watcher.waitFor(b"<piper>", 2), [b"<piper> hello", b"<piper> world"]
        )
        self.assertRegex(output(self.console), rb"(?m)^\+OK who 2: .*piper$")
        self.assertIn("3 lines sent", notes(self.console))
        self.assertIn("hub: * welcome to netdemo pubsub", notes(self.console))
        self.assertNotIn(b"* welcome", output(self.console))
        said = notes(self.console)
        self.assertLess(said.index("hub: * welcome"), said.index("connected to"))

    async def test_chatShowsOthers(self) -> None:
        """
        C{chat} shows what others say, and Ctrl-C ends it.
        """
        self.patch(
            chat, "standardIO", lambda p, console, reactor: FakeStdio(p, console)
        )
        running = self.launch("chat", self.hub.target)
        await self.connected()
        other = await self.hub.watcher()
        await other.command(b"/nick talker", b"+OK nick")
        other.send(b"anyone there?")
        await waitUntil(
            lambda: b"<talker> anyone there?\n" in output(self.console), "the line"
        )
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)
        self.assertIn("1 message received, 0 reconnections", notes(self.console))
        # The greeting is a notice here too, as with --nick, and in the
        # same place: before "connected".
        self.assertIn("hub: * welcome to netdemo pubsub", notes(self.console))
        self.assertNotIn(b"* welcome", output(self.console))
        said = notes(self.console)
        self.assertLess(said.index("hub: * welcome"), said.index("connected to"))

    async def test_chatKeepsEarlyLines(self) -> None:
        """
        Lines the hub sends while C{chat} is still setting up (taking its
        nickname) are shown once it is ready, not lost.
        """
        watcher = await self.hub.watcher()
        self.patch(
            chat, "standardIO", lambda p, console, reactor: FakeStdio(p, console)
        )
        original = chat.Chat.setUp

        def slowSetUp(self: Any, connection: Any, first: bool) -> Deferred[None]:
            # Someone speaks before the nickname is answered.
            watcher.send(b"early bird")
            return original(self, connection, first)

        self.patch(chat.Chat, "setUp", slowSetUp)
        running = self.launch("chat", self.hub.target, "--nick", "late")
        await waitUntil(lambda: b"early bird" in output(self.console), "the early line")
        self.interrupted.callback(None)
        self.assertEqual(await running, 0)

    async def test_tailBadPatternText(self) -> None:
        """
        A refused C{--sub} is named as typed, not as Python bytes.
        """
        message = await self.fails("tail", self.hub.target, "-s", "lab..x")
        self.assertIn("--sub 'lab..x'", message)
        self.assertNotIn("b'", message)

    async def test_refusedSetUp(self) -> None:
        """
        A nickname or pattern the hub refuses on the first connection fails
        the run.
        """
        self.assertIn(
            "bad nick", await self.fails("chat", self.hub.target, "--nick", "9lives")
        )
        self.assertIn("a.>.b", await self.fails("tail", self.hub.target, "-s", "a.>.b"))

    async def test_hubRefuses(self) -> None:
        """
        A hub that refuses the connection (C{--max-connections}) makes each
        client fail with the hub's reason.
        """
        full = await self.startHub(limits=ConnectionLimits(maxConnections=1))
        await full.watcher()
        for command in [("tail",), ("chat",), ("pub", "t", "x")]:
            message = await self.fails(command[0], full.target, *command[1:])
            self.assertIn("-ERR refused: max-connections", message)

    async def test_nothingListening(self) -> None:
        """
        Nothing listening, or no such host: each client fails at once.
        """
        sock = closedPort()
        self.addCleanup(sock.close)
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        for command in [("pub", target, "t", "x"), ("tail", target), ("chat", target)]:
            self.assertIn("refused", await self.fails(*command))
        self.assertIn(
            "no-such-host", await self.fails("chat", "no-such-host.invalid:1")
        )


class SessionTimingTests(TestCase):
    """
    L{HubSession}'s timeouts, keepalive and retries against real sockets,
    with its clock (and the hub's) a L{Clock}.
    """

    def session(self, port: int, keepalive: float, clock: Clock) -> HubSession:
        """
        A session to C{port} that sets nothing up, ended after the test.
        """
        session = HubSession(
            reactor,
            memoryConsole(),
            "127.0.0.1",
            port,
            lambda line: None,
            lambda connection, first: succeed(None),
            keepalive,
            timeout=5.0,
            clock=clock,
        )
        self.addCleanup(lambda: Deferred.fromCoroutine(session.stop()))
        return session

    async def test_noAnswer(self) -> None:
        """
        A server that accepts and never answers: the first connection fails
        after the timeout (and not before).
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint

        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        clock = Clock()
        address: Any = port.getHost()
        session = self.session(address.port, 0, clock)
        starting = Deferred.fromCoroutine(session.start())
        await waitUntil(clock.getDelayedCalls, "the set-up to wait for the greeting")
        clock.advance(4.9)
        self.assertNoResult(starting)
        clock.advance(0.1)
        with self.assertRaises(CommandError) as caught:
            await starting
        self.assertIn("no answer from 127.0.0.1:", str(caught.exception))
        self.assertIn("within 5 s", str(caught.exception))

    async def test_keepalive(self) -> None:
        """
        Against a hub with a 60 s idle timeout, a session pinging every
        20 s keeps its connection; one with the keepalive off is closed,
        says so, and reconnects.
        """
        clock = Clock()
        hub = await LoopbackHub(
            HubLimits(presence=False), ConnectionLimits(idleTimeout=60), clock=clock
        ).start()
        self.addCleanup(hub.stop)
        kept = self.session(hub.port, 20.0, clock)
        quiet = self.session(hub.port, 0, clock)
        for session in (kept, quiet):
            await session.start()
        connection = kept.connection
        assert connection is not None and connection.transport is not None
        local = connection.transport.getHost().port  # type: ignore[attr-defined]
        [hubSide] = [p for p in hub.factory.clients if p.peer.port == local]  # type: ignore[union-attr]

        async def advance(until: int) -> None:
            # Five seconds at a time; each ping reaches the hub before the
            # next step.
            while clock.seconds() < until:
                clock.advance(5)
                expected = 6 * (int(clock.seconds()) // 20)
                await waitUntil(lambda: hubSide.bytesIn == expected, "the pings")  # noqa: B023

        await advance(70)
        await waitUntil(
            lambda: "lost connection" in notes(quiet.console), "the quiet one lost"
        )
        clock.advance(2)
        await waitUntil(
            lambda: "reconnected to" in notes(quiet.console), "the quiet one back"
        )
        await advance(120)
        self.assertIs(kept.connection, connection)
        self.assertEqual((kept.connections, quiet.connections), (1, 2))
        self.assertNotIn("lost", notes(kept.console))


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
        self._seen: set[tuple[str, int]] = set()
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
            self.out[name].append(raw.decode("utf-8", "replace").rstrip("\n"))

    def text(self, name: str) -> str:
        """
        What the command wrote to C{name} so far.
        """
        return "\n".join(self.out[name])

    def waitFor(self, name: str, pattern: str, timeout: float = PATIENCE) -> str:
        """
        Wait for a line of C{name} matching C{pattern} (also one seen already
        that was not waited for before).
        """

        def found() -> str | None:
            for i, line in enumerate(list(self.out[name])):
                if (name, i) not in self._seen and re.search(pattern, line):
                    self._seen.add((name, i))
                    return line
            return None

        what = f"{name} matching {pattern!r}; stderr:\n{self.text('stderr')}"
        result: str = poll(found, what, timeout)
        return result

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

    def finish(self, sig: int | None = None) -> int:
        """
        Optionally send C{sig}, then wait for the exit status.
        """
        if sig is not None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(PATIENCE)
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


def hub(*extra: str, listen: str = "tcp:0:interface=127.0.0.1") -> Daemon:
    """
    A C{twistd netdemo} running only a hub on loopback, listening.
    """
    daemon = Daemon("--pubsub", listen, *extra)
    daemon.waitListening(1)
    return daemon


class ProgramTests(SynchronousTestCase):
    """
    The real program against a real C{twistd} hub, where the process is the
    point: pipes, Ctrl-C, a restart of the hub.
    """

    def setUp(self) -> None:
        self.daemon = hub()
        self.addCleanup(self.daemon.close)
        self.port = self.daemon.port("pubsub")
        self.target = f"127.0.0.1:{self.port}"

    def subscriber(self, *patterns: bytes) -> LineSocket:
        """
        A raw subscriber to C{patterns}, subscribed when this returns.
        """
        client = LineSocket(self.port)
        self.addCleanup(client.close)
        for pattern in patterns:
            client.send(b"/sub " + pattern + b"\n")
            client.waitFor(b"+OK subscribed to " + pattern)
        return client

    def test_chatPipe(self) -> None:
        """
        C{... | netdemo chat --nick NAME} takes the nickname, sends every
        line (more lines than it queues while connecting), and exits 0
        once the hub has them; answers to typed commands are shown.
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
            self.assertEqual(process.wait(PATIENCE), 0)
            err = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        self.assertNotIn(b"Traceback", err)
        self.assertNotIn(b"Exception", err)

    def test_oneLineError(self) -> None:
        """
        An error is one line on standard error and exit status 2.
        """
        assertOneLineError(self, netdemo("pub", self.target, "bad..topic", "x"), "-ERR")
        assertOneLineError(self, netdemo("pub", "127.0.0.1", "t", "x"), "'127.0.0.1'")

    def test_restart(self) -> None:
        """
        The hub is stopped and started again on the same port under a
        running C{chat} and C{tail}: both say they lost it and reconnected;
        the chat has its nickname again and the tail its subscription, so
        a line published after the restart arrives as it should.  Ctrl-C
        ends the tail, the end of its input the chat, both with status 0.
        """
        first = self.daemon
        chatting = Running("chat", self.target, "--nick", "phoenix")
        tailing = Running("tail", self.target, "--sub", "news", "--json")
        self.addCleanup(chatting.kill)
        self.addCleanup(tailing.kill)
        chatting.waitFor("stderr", "connected to")
        tailing.waitFor("stderr", "connected to")
        chatting.write(b"/pub news before\n")
        self.assertEqual(
            json.loads(tailing.waitFor("stdout", "before"))["text"], "before"
        )
        first.stop()
        chatting.waitFor("stdout", r"^\* server shutting down")
        chatting.waitFor("stderr", "lost connection")
        tailing.waitFor("stderr", "lost connection")
        second = hub(listen=f"tcp:{self.port}:interface=127.0.0.1")
        self.addCleanup(second.close)
        self.assertIn(("pubsub", self.target), second.listening)
        chatting.waitFor("stderr", "reconnected to", timeout=40)
        tailing.waitFor("stderr", "reconnected to", timeout=40)
        chatting.write(b"/pub news after\n")
        record = json.loads(tailing.waitFor("stdout", "after"))
        self.assertEqual((record["identity"], record["topic"]), ("phoenix", "news"))
        chatting.closeInput()
        self.assertEqual(chatting.finish(), 0, chatting.text("stderr"))
        self.assertEqual(tailing.finish(signal.SIGINT), 0, tailing.text("stderr"))
        for running in (chatting, tailing):
            self.assertIn("1 reconnection", running.text("stderr"))
            self.assertNotIn("Traceback", running.text("stderr"))
        second.stop()
