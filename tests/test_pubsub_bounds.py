"""
The hub's bounds on the work and the output one client causes, on in-memory
transports and a fake clock: the per-turn budget, coalesced presence,
streamed history replays, numeric arguments, topic lengths and identities.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import UNIXAddress
from twisted.internet.base import DelayedCall
from twisted.internet.task import Clock, LoopingCall
from twisted.trial.unittest import SynchronousTestCase

from netdemo.hubwire import MAX_TOPIC
from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.pubsub import PubSubProtocol
from tests.pubsubhelpers import ClosingTransport, FakeClient, FakeHub, PacedTransport
from tests.test_hubwire import chunked


def hub(testCase: SynchronousTestCase, **limits: Any) -> FakeHub:
    """
    An in-memory hub with C{limits} (and no cap on connections per peer),
    stopped after the test.
    """
    fake = FakeHub(HubLimits(**limits), ConnectionLimits(maxPerPeer=0))
    testCase.addCleanup(fake.stop)
    return fake


def turn(clock: Clock) -> None:
    """
    One reactor turn: run the calls due now, not those they schedule for
    now (as C{Clock.advance(0)} would).
    """
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


def turns(fake: FakeHub, client: FakeClient, most: int = 1000) -> int:
    """
    Run the hub's later turns until C{client}'s input is no longer held.

    @return: How many turns it took.
    """
    for count in range(most + 1):
        if not client.protocol.held or client.closed:
            return count
        turn(fake.clock)
    raise AssertionError(f"still held after {most} turns")


def timers(fake: FakeHub) -> list[DelayedCall]:
    """
    The hub's pending timers, but its sweeps.
    """
    return [call for call in fake.clock.calls if not isinstance(call.func, LoopingCall)]


def readAll(client: FakeClient) -> None:
    """
    The client reads everything, as fast as its paced transport lets the
    hub write, until the hub writes nothing more.
    """
    transport = client.transport
    assert isinstance(transport, PacedTransport)
    for _ in range(10000):
        if not transport.drain():
            return
    raise AssertionError("the hub kept writing")


class TickingTimer:
    """
    A clock for the per-turn time budget that advances C{step} seconds
    each time it is read.
    """

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class TurnBudgetTests(SynchronousTestCase):
    """
    One client's commands are handled at most C{turnLines} lines and
    C{turnTime} seconds per reactor turn; the hub stops reading from it
    meanwhile and goes on with the rest, in order, on later turns.
    """

    def test_linesPerTurn(self) -> None:
        """
        5,000 commands in one read: 1,000 are answered in the read's turn,
        the client's transport is paused, and each later turn answers the
        next 1,000, in order, until reading resumes.
        """
        fake = hub(self, presence=False)
        a = fake.connect()
        a.new()
        a.send(b"".join(b"/echo %s\n" % (b"on", b"off")[i % 2] for i in range(5000)))
        self.assertEqual(len(a.new()), 1000)
        self.assertTrue(a.protocol.held)
        self.assertEqual(a.transport.producerState, "paused")
        counts = []
        while a.protocol.held:
            turn(fake.clock)
            counts.append(len(a.new()))
        self.assertEqual(counts, [1000, 1000, 1000, 1000])
        self.assertEqual(a.transport.producerState, "producing")
        answers = a.received()[1:]
        self.assertEqual(
            answers, [b"+OK echo " + (b"on", b"off")[i % 2] for i in range(5000)]
        )
        self.assertEqual(
            fake.metrics.value("netdemo_pubsub_deferred_turns_total", service="pubsub"),
            4,
        )

    def test_plainLinesOneBatch(self) -> None:
        """
        A read of plain lines is still one batch, however many lines it
        holds: nothing waits.
        """
        fake = hub(self, presence=False, turnLines=10)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"".join(b"line %d\n" % i for i in range(5000)))
        self.assertFalse(a.protocol.held)
        self.assertEqual(len(b.new()), 5000)

    def test_timePerTurn(self) -> None:
        """
        Past C{turnTime} seconds of work, the rest of a read waits for
        later turns even within the line budget.
        """
        fake = hub(self, presence=False, turnTime=0.0025)
        fake.factory.timer = TickingTimer(0.001)
        a = fake.connect()
        a.new()
        a.send(b"/ping\n" * 10)
        self.assertEqual(len(a.new()), 3)
        self.assertEqual(turns(fake, a), 3)
        self.assertEqual(len(a.received()), 11)

    def test_readsWhileHeld(self) -> None:
        """
        Bytes that arrive while the input is held (a transport may deliver
        one more read) are read after what waited, in order; a partial
        line is completed across them.
        """
        fake = hub(self, presence=False, turnLines=2)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"/ping\n/ping\n/ping\n/pub t x\n/pub t y\npar")
        self.assertTrue(a.protocol.held)
        a.send(b"tial\n/ping\n")
        turns(fake, a)
        self.assertEqual(a.new()[1:], [b"+OK pong"] * 3 + [b"+OK", b"+OK", b"+OK pong"])
        self.assertEqual(b.new(), [b"<127.0.0.1:40001> partial"])

    def test_closeWhileHeld(self) -> None:
        """
        A client that closes while its input waits leaves no timer behind.
        """
        fake = hub(self, presence=False, turnLines=1)
        a = fake.connect()
        a.send(b"/ping\n/ping\n")
        self.assertTrue(a.protocol.held)
        a.transport.loseConnection()
        self.assertEqual(timers(fake), [])

    def test_quitEndsTheRest(self) -> None:
        """
        C{/quit} in the middle of held input is answered in order; nothing
        after it is handled.
        """
        fake = hub(self, presence=False, turnLines=2)
        a = fake.connect()
        a.new()
        a.send(b"/ping\n/ping\n/ping\n/quit\n/ping\n")
        turns(fake, a)
        self.assertEqual(a.new(), [b"+OK pong"] * 3 + [b"+OK bye"])
        self.assertTrue(a.closed)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [b"/ping", b"/pub t.a x", b"hello", b"", b"/nosuch", b"/echo on"]
            ),
            max_size=60,
        ),
        st.lists(st.integers(0, 600), max_size=10),
        st.integers(1, 7),
    )
    def test_sameAnswers(
        self, lines: list[bytes], cuts: list[int], budget: int
    ) -> None:
        """
        Whatever the budget and the chunking, a client gets the same
        answers, and a subscriber the same lines, as with no budget at all.
        """

        def run(turnLines: int, pieces: list[bytes]) -> list[bytes]:
            fake = FakeHub(HubLimits(presence=False, turnLines=turnLines))
            try:
                a, b = fake.connect(), fake.connect()
                b.send(b"/sub t.>\n")
                for piece in pieces:
                    # A transport does not deliver reads while paused.
                    turns(fake, a)
                    a.send(piece)
                turns(fake, a)
                return a.received() + [b"--"] + b.received()
            finally:
                fake.stop()

        data = b"".join(line + b"\n" for line in lines)
        self.assertEqual(run(budget, chunked(data, cuts)), run(10**6, [data]))


class PresenceTests(SynchronousTestCase):
    """
    Presence notices: the first at once, then those of one interval in one
    notice.
    """

    def test_storm(self) -> None:
        """
        1,000 joins in a burst cost two notices, not a thousand: the first
        join is told at once, the others in one notice at the end of the
        interval; then presence is quiet and the next join is told at once.
        """
        fake = hub(self)
        watcher = fake.connect()
        watcher.new()
        fake.clock.advance(1.0)
        for _ in range(1000):
            fake.connect()
        self.assertEqual(watcher.new(), [b"* 127.0.0.1:40002 joined (2 connected)"])
        fake.clock.rightNow += 1.0
        turn(fake.clock)
        # A notice to 1,001 clients: 1,000 at once, the last one next turn.
        self.assertEqual(watcher.new(), [])
        self.assertEqual(len(timers(fake)), 2)
        turn(fake.clock)
        self.assertEqual(watcher.new(), [b"* 999 joined (1001 connected)"])
        fake.clock.advance(1.0)
        self.assertEqual(watcher.new(), [])
        self.assertEqual(timers(fake), [])
        last = fake.connect()
        turn(fake.clock)
        self.assertEqual(
            watcher.new(),
            [f"* {last.identity.decode()} joined (1002 connected)".encode()],
        )
        m = fake.metrics
        self.assertEqual(
            m.value("netdemo_pubsub_presence_notices_total", service="pubsub"), 4
        )
        self.assertEqual(
            m.value("netdemo_pubsub_presence_events_total", service="pubsub"), 1002
        )

    def test_summary(self) -> None:
        """
        Joins, leaves and renames of one interval make one notice that
        counts each kind; one event alone is told as it is, and not to the
        client it is about.
        """
        fake = hub(self)
        watcher = fake.connect()
        a, b = fake.connect(), fake.connect()
        a.send(b"/nick alice\n")
        b.send(b"/quit\n")
        watcher.new()
        fake.clock.advance(1.0)
        self.assertEqual(
            watcher.new(), [b"* 2 joined, 1 left, 1 renamed (2 connected)"]
        )
        a.new()
        fake.clock.advance(1.0)
        fake.clock.advance(1.0)
        c = fake.connect()
        a.send(b"/nick alicia\n")
        self.assertEqual(
            a.new(), [b"* 127.0.0.1:40004 joined (3 connected)", b"+OK nick alicia"]
        )
        fake.clock.advance(1.0)
        self.assertEqual(c.new()[1:], [b"* alice is now alicia"])
        self.assertEqual(a.new(), [])

    def test_each(self) -> None:
        """
        With C{presenceInterval=0} every event is told at once.
        """
        fake = hub(self, presenceInterval=0)
        watcher = fake.connect()
        watcher.new()
        for _ in range(3):
            fake.connect()
        self.assertEqual(len(watcher.new()), 3)
        self.assertEqual(timers(fake), [])

    def test_off(self) -> None:
        """
        With presence off, nothing is told and no timer runs.
        """
        fake = hub(self, presence=False)
        watcher = fake.connect()
        watcher.new()
        for _ in range(3):
            fake.connect().send(b"/nick x%d\n" % len(fake.factory.clients))
        fake.clock.advance(5)
        self.assertEqual(watcher.new(), [])
        self.assertEqual(timers(fake), [])


class HistoryStreamTests(SynchronousTestCase):
    """
    History replays are written at the pace the client reads them, so they
    do not count against C{maxPending} at once.
    """

    LINE = b"h" * 3990

    def full(self, fake: FakeHub, topics: int = 4) -> None:
        """
        Fill the history of C{topics} topics with 100 lines of about 4 KB.
        """
        pub = fake.connect()
        for t in range(topics):
            pub.send(b"".join(b"/pub t%d %s\n" % (t, self.LINE) for _ in range(100)))

    def test_fourFullTopics(self) -> None:
        """
        A client that reads as fast as it can and asks for four histories
        of 400 KB each (1.6 MB, with C{maxPending} 1 MiB) gets all of them,
        each ended by its C{+OK}, and the answer to a later command after
        them; it is not disconnected.
        """
        fake = hub(self, presence=False)
        self.full(fake)
        reader = fake.connect(PacedTransport)
        reader.new()
        reader.send(b"".join(b"/history t%d\n" % t for t in range(4)) + b"/ping\n")
        transport = reader.transport
        assert isinstance(transport, PacedTransport)
        for _ in range(1000):
            turn(fake.clock)
            if not transport.drain() and not reader.protocol.held:
                break
        lines = reader.new()
        self.assertFalse(reader.closed)
        self.assertEqual(len(lines), 405)
        self.assertEqual(
            [line for line in lines if line.startswith(b"+OK")],
            [b"+OK history 100 lines, last seq 100"] * 4 + [b"+OK pong"],
        )
        self.assertEqual(lines[100], b"+OK history 100 lines, last seq 100")
        self.assertEqual(lines[-1], b"+OK pong")
        self.assertGreater(reader.protocol.written, 1 << 20)

    def test_othersWaitBehind(self) -> None:
        """
        Lines published to the client during a replay arrive after the
        replay's C{+OK}, in order.
        """
        fake = hub(self, presence=False)
        self.full(fake, 1)
        reader = fake.connect(PacedTransport)
        other = fake.connect()
        reader.new()
        reader.send(b"/history t0\n")
        self.assertTrue(reader.protocol.held)
        other.send(b"during 1\nduring 2\n")
        readAll(reader)
        lines = reader.new()
        self.assertEqual(
            lines[-3:],
            [
                b"+OK history 100 lines, last seq 100",
                b"<127.0.0.1:40003> during 1",
                b"<127.0.0.1:40003> during 2",
            ],
        )
        turn(fake.clock)
        self.assertFalse(reader.protocol.held)

    def test_stalledReaderCut(self) -> None:
        """
        A client that stops reading during a replay is disconnected by the
        slow-consumer policy: once what waits behind the replay exceeds
        C{maxPending}, or after the write deadline.
        """
        fake = hub(self, presence=False, maxPending=10000, writeDeadline=5)
        self.full(fake, 1)
        stalled = fake.connect(PacedTransport)
        other = fake.connect()
        stalled.send(b"/history t0\n")
        for _ in range(9):
            other.send(b"x" * 1000 + b"\n")
        self.assertFalse(stalled.closed)
        other.send(b"x" * 1000 + b"\n")
        self.assertTrue(stalled.closed)
        late = fake.connect(PacedTransport)
        late.send(b"/history t0\n")
        fake.clock.advance(5)
        self.assertTrue(late.closed)
        self.assertEqual(
            fake.metrics.value(
                "netdemo_refused_total", service="pubsub", reason="write-deadline"
            ),
            1,
        )

    def test_dropOldestBehind(self) -> None:
        """
        With the drop-oldest policy, what waits behind a replay past
        C{maxPending} is dropped, oldest first, and the client is told.
        """
        fake = hub(self, presence=False, maxPending=2500, slowPolicy="drop-oldest")
        self.full(fake, 1)
        reader = fake.connect(PacedTransport)
        other = fake.connect()
        reader.send(b"/history t0\n")
        for i in range(5):
            other.send(b"%d" % i + b"x" * 999 + b"\n")
        readAll(reader)
        lines = reader.new()
        self.assertFalse(reader.closed)
        self.assertEqual(lines[-4], b"+OK history 100 lines, last seq 100")
        self.assertEqual(lines[-3], b"* dropped 3 lines (slow consumer)")
        self.assertEqual([line[18:19] for line in lines[-2:]], [b"3", b"4"])

    def test_replayOnJoinPaced(self) -> None:
        """
        C{replayOnJoin} is streamed too: a new client's commands wait until
        its replay was written.
        """
        fake = hub(self, presence=False, replayOnJoin=100)
        self.full(fake, 0)
        pub = fake.connect()
        pub.send(b"".join(self.LINE + b"\n" for _ in range(100)))
        late = fake.connect(PacedTransport)
        self.assertTrue(late.protocol.held)
        late.send(b"/ping\n")
        readAll(late)
        turn(fake.clock)
        turn(fake.clock)
        lines = late.new()
        self.assertEqual(len(lines), 102)
        self.assertEqual(lines[-1], b"+OK pong")

    def test_shutdownDuringReplay(self) -> None:
        """
        A replay in progress is given up on shutdown: the client is told
        the hub shuts down.
        """
        fake = hub(self, presence=False)
        self.full(fake, 1)
        reader = fake.connect(PacedTransport)
        reader.send(b"/history t0\n")
        reader.protocol.closeGracefully("shutdown")
        self.assertEqual(reader.new()[-1], b"* server shutting down")


class ArgumentTests(SynchronousTestCase):
    """
    Numbers and topics given by clients are bounded before use.
    """

    def test_historyHugeCount(self) -> None:
        """
        C{/history} with a count of 5,000 digits replays all the history
        (Python would refuse to read such a number); the hub answers.
        """
        fake = hub(self, presence=False, maxLine=10000)
        a = fake.connect()
        a.send(b"one\ntwo\n")
        a.new()
        a.send(b"/history " + b"9" * 5000 + b"\n/history 0001\n/history 00\n")
        self.assertEqual(
            a.new(),
            [
                b"<127.0.0.1:40001> one",
                b"<127.0.0.1:40001> two",
                b"+OK history 2 lines, last seq 2",
                b"<127.0.0.1:40001> two",
                b"+OK history 1 lines, last seq 2",
                b"+OK history 0 lines, last seq 2",
            ],
        )

    def test_topicLength(self) -> None:
        """
        A topic longer than 255 bytes is refused by C{/who}, C{/history},
        C{/pub} and C{/sub}, and counted; 255 bytes are fine.
        """
        fake = hub(self, presence=False)
        a = fake.connect()
        a.new()
        longest = b".".join([b"a" * 127, b"b" * 127])
        self.assertEqual(len(longest), MAX_TOPIC)
        too = longest + b"c"
        for command in (b"/who ", b"/history ", b"/history 5 ", b"/sub "):
            a.send(command + longest + b"\n" + command + too + b"\n")
            ok, refused = a.new()
            self.assertTrue(ok.startswith(b"+OK"), ok)
            self.assertTrue(refused.startswith(b"-ERR usage"), refused)
        a.send(b"/pub " + longest + b" x\n/pub " + too + b" x\n")
        self.assertEqual(a.new()[0], b"+OK")
        self.assertEqual(
            fake.metrics.value(
                "netdemo_pubsub_command_errors_total",
                service="pubsub",
                reason="bad-topic",
            ),
            4,
        )


class IdentityTests(SynchronousTestCase):
    """
    Nicknames are unique whatever their case and lookalikes; the hub's own
    identities are reserved; addresses can be hidden.
    """

    def test_caseAndLookalikes(self) -> None:
        """
        Once C{alice} is taken, C{Alice}, C{ALICE}, C{aIice} and C{a1ice}
        are refused; its holder may change its case; it is free again once
        its holder changes it.
        """
        fake = hub(self, presence=False)
        a, b = fake.connect(), fake.connect()
        a.send(b"/nick alice\n")
        b.new()
        b.send(b"/nick Alice\n/nick ALICE\n/nick aIice\n/nick a1ice\n")
        self.assertEqual(
            b.new(),
            [
                b"-ERR nick %s is taken" % n
                for n in (b"Alice", b"ALICE", b"aIice", b"a1ice")
            ],
        )
        a.new()
        a.send(b"/nick Alice\n/nick bob\n")
        self.assertEqual(a.new(), [b"+OK nick Alice", b"+OK nick bob"])
        b.send(b"/nick aIice\n/nick Bob\n")
        self.assertEqual(b.new(), [b"+OK nick aIice", b"-ERR nick Bob is taken"])
        self.assertEqual(
            fake.metrics.value(
                "netdemo_pubsub_command_errors_total",
                service="pubsub",
                reason="nick-taken",
            ),
            5,
        )

    def test_reserved(self) -> None:
        """
        No client may call itself C{redis}, C{client-N} (or anything
        starting with C{client-}), C{netdemo} or C{server}, in any case or
        lookalike.
        """
        fake = hub(self, presence=False)
        a = fake.connect()
        a.new()
        names = [
            b"redis",
            b"REDIS",
            b"red1s",
            b"client-1",
            b"Client-7",
            b"cIient-x",
            b"netdemo",
            b"Server",
        ]
        a.send(b"".join(b"/nick " + n + b"\n" for n in names))
        self.assertEqual(a.new(), [b"-ERR nick " + n + b" is reserved" for n in names])
        a.send(b"/nick clients\n")
        self.assertEqual(a.new(), [b"+OK nick clients"])

    def test_hideAddresses(self) -> None:
        """
        With C{hideAddresses} a client without a nickname is C{client-N}
        to others (greeting, notices, C{/who}, its lines) and to itself.
        """
        fake = hub(self, hideAddresses=True, presenceInterval=0)
        a = fake.connect()
        b = fake.connect()
        self.assertEqual(
            b.new(),
            [b"* welcome to netdemo pubsub, you are client-2 (client #2, 2 connected)"],
        )
        b.send(b"hello\n/who\n")
        lines = a.new()
        self.assertEqual(
            lines[1:], [b"* client-2 joined (2 connected)", b"<client-2> hello"]
        )
        self.assertEqual(b.new(), [b"+OK who 2: client-1 client-2"])
        text = b"\n".join(a.received() + b.received())
        self.assertNotIn(b"127.0.0.1", text)

    def test_unixClients(self) -> None:
        """
        Clients without an address are C{client-N} without the option.
        """
        fake = hub(self, presence=False)
        protocol = fake.factory.buildProtocol(UNIXAddress(None))
        assert isinstance(protocol, PubSubProtocol)
        transport = ClosingTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.assertEqual(protocol.identity, b"client-1")

    def test_controlsEscaped(self) -> None:
        """
        C1 controls and bidi controls in relayed text are escaped as
        C{\\uHHHH}, like C0 controls as C{\\xHH}; other UTF-8 is relayed as
        it is.
        """
        fake = hub(self, presence=False)
        a, b = fake.connect(), fake.connect()
        b.new()
        text = "csi\x9b2J rlo\u202eevil lri\u2066x lrm\u200e alm\u061c é “ok” \x1b"
        a.send(text.encode() + b"\n/pub t " + "\u202e".encode() + b"\n")
        b.send(b"/sub t\n")
        a.send(b"/pub t \xe2\x80\xae\n")
        self.assertEqual(
            b.new(),
            [
                b"<127.0.0.1:40001> csi\\u009b2J rlo\\u202eevil lri\\u2066x "
                b"lrm\\u200e alm\\u061c " + "é “ok”".encode() + b" \\x1b",
                b"+OK subscribed to t",
                b"[t] <127.0.0.1:40001> \\u202e",
            ],
        )


class LimitsOptionTests(SynchronousTestCase):
    """
    The new hub limits are validated.
    """

    def test_validated(self) -> None:
        """
        L{HubLimits} refuses nonsense budgets and intervals.
        """
        for bad in (
            {"turnLines": 0},
            {"turnTime": 0},
            {"presenceInterval": -1},
        ):
            self.assertRaises(ValueError, HubLimits, **bad)
        self.assertEqual(HubLimits().turnLines, 1000)
