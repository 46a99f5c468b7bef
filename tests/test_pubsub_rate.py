"""
The per-publisher rate (C{--publish-rate}, C{--publish-burst}): past its
bucket the hub stops reading from a publisher until the bucket has earned
more, so that TCP slows the publisher down; nothing is lost or reordered
and other publishers are not slowed.  In memory with a fake clock, and once
against a real C{twistd netdemo}.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.tap import Options
from netdemo.throttle import BucketTable, LineBucket
from tests.pubsubhelpers import FakeClient, FakeHub, LineSocket
from tests.support import PATIENCE, captureEvents
from tests.test_hubwire import chunked
from tests.test_pubsub_bounds import timers
from tests.test_pubsub_sockets import HubDaemon


def hub(testCase: SynchronousTestCase, **limits: Any) -> FakeHub:
    """
    An in-memory hub with C{limits} (presence off, no cap per peer),
    stopped after the test.
    """
    fake = FakeHub(
        HubLimits(**{"presence": False, **limits}), ConnectionLimits(maxPerPeer=0)
    )
    testCase.addCleanup(fake.stop)
    return fake


def caughtUp(fake: FakeHub, client: FakeClient, step: float = 0.1) -> float:
    """
    Advance the hub's clock by C{step} seconds at a time until it reads
    C{client} again (at most 10,000 steps).

    @return: The clock's time then.
    """
    for _ in range(10000):
        if not client.protocol.held or client.closed:
            return fake.clock.seconds()
        fake.clock.advance(step)
    raise AssertionError("the publisher is still held")


def throttledTotal(fake: FakeHub) -> float:
    """
    The hub's C{netdemo_pubsub_publish_throttled_total}.
    """
    return fake.metrics.value(
        "netdemo_pubsub_publish_throttled_total", service="pubsub", user="anonymous"
    )


class BucketTests(SynchronousTestCase):
    """
    L{LineBucket} and L{BucketTable}, on their own.
    """

    def test_grantAndWait(self) -> None:
        """
        A bucket starts full, grants what it holds, earns C{rate} a second
        up to C{burst}, and says how long until one step's worth is there.
        """
        bucket = LineBucket(100.0, 50, 0.0)
        self.assertEqual(bucket.grant(0.0, 80), 50)
        self.assertEqual(bucket.grant(0.0, 1), 0)
        # One step (0.1 s) is 10 lines at 100/s.
        self.assertAlmostEqual(bucket.wait(0.0, 30), 0.1)
        self.assertAlmostEqual(bucket.wait(0.0, 3), 0.03)
        self.assertEqual(bucket.grant(0.1, 30), 10)
        self.assertEqual(bucket.grant(100.0, 1000), 50)
        # A clock that steps back earns nothing.
        self.assertEqual(bucket.grant(50.0, 1), 0)

    def test_slowRate(self) -> None:
        """
        Below one line a step, a held publisher waits for one whole line.
        """
        bucket = LineBucket(0.5, 1, 0.0)
        self.assertEqual(bucket.grant(0.0, 5), 1)
        self.assertAlmostEqual(bucket.wait(0.0, 4), 2.0)
        self.assertEqual(bucket.grant(1.9, 4), 0)
        self.assertEqual(bucket.grant(2.0, 4), 1)

    def test_table(self) -> None:
        """
        A table lets C{burst} attempts of a key go at once and gives the
        next ones their turns at C{rate}, refusing one that would wait past
        C{maxWait}; a refund gives a token back.  It keeps at most C{size}
        keys; once it has forgotten one, a new key starts empty, so rotating
        keys does not reset the limit.
        """
        table = BucketTable(1.0, 2, 2, 3.0)
        self.assertEqual(
            [table.reserve("a", 0.0) for _ in range(6)], [0, 0, 1, 2, 3, None]
        )
        table.refund("a", 0.0)
        self.assertEqual(table.reserve("a", 0.0), 3)
        self.assertEqual(table.reserve("b", 0.0), 0)
        self.assertEqual(table.reserve("c", 0.0), 0)  # forgets "a"
        self.assertEqual(len(table), 2)
        self.assertEqual(table.reserve("d", 0.0), 1)
        self.assertEqual(table.reserve("a", 10.0), 1)


class PublishRateTests(SynchronousTestCase):
    """
    A publisher over its rate is read no faster than the rate.
    """

    def test_off(self) -> None:
        """
        Without C{--publish-rate} a client has no bucket: a burst of any
        size is published in the read that brought it.
        """
        fake = hub(self)
        a, b = fake.connect(), fake.connect()
        self.assertIsNone(a.protocol.bucket)
        b.new()
        a.send(b"".join(b"line %d\n" % i for i in range(5000)))
        self.assertEqual(len(b.new()), 5000)
        self.assertFalse(a.protocol.held)

    def test_burstSpread(self) -> None:
        """
        At 100 lines a second (a bucket of 100), a burst of 1,000 lines in
        one read: 100 are delivered at once and the publisher's transport is
        paused; the rest follow in order, about 10 every 0.1 s, the last 9
        s after the first; then the transport is resumed.  It counts as one
        throttling.
        """
        fake = hub(self, publishRate=100.0)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"".join(b"line %d\n" % i for i in range(1000)))
        self.assertEqual(len(b.new()), 100)
        self.assertTrue(a.protocol.held)
        self.assertEqual(a.transport.producerState, "paused")
        arrivals: list[tuple[float, int]] = []
        for _ in range(200):
            if not a.protocol.held:
                break
            fake.clock.advance(0.1)
            arrivals.append((fake.clock.seconds(), len(b.new())))
        self.assertEqual(a.transport.producerState, "producing")
        self.assertEqual(
            b.received()[1:], [b"<127.0.0.1:40001> line %d" % i for i in range(1000)]
        )
        last = max(t for t, n in arrivals if n)
        self.assertTrue(8.5 <= last <= 10.0, last)
        self.assertTrue(all(n <= 11 for _, n in arrivals), arrivals)
        self.assertEqual(throttledTotal(fake), 1)
        self.assertEqual(timers(fake), [])

    def test_burst(self) -> None:
        """
        C{--publish-burst} sizes the bucket: with 5 a second and a burst of
        20, 20 of 30 lines go at once, the other 10 within 2 s.
        """
        fake = hub(self, publishRate=5.0, publishBurst=20)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"x\n" * 30)
        self.assertEqual(len(b.new()), 20)
        self.assertAlmostEqual(caughtUp(fake, a), 2.0)
        self.assertEqual(len(b.new()), 10)

    def test_othersNotSlowed(self) -> None:
        """
        While one publisher is held, another's lines and commands are
        handled at once.
        """
        fake = hub(self, publishRate=10.0)
        a, b, c = fake.connect(), fake.connect(), fake.connect()
        c.new()
        b.new()
        a.send(b"a\n" * 100)
        self.assertTrue(a.protocol.held)
        c.new()
        b.send(b"from b\n/ping\n")
        self.assertEqual(c.new(), [b"<127.0.0.1:40002> from b"])
        self.assertEqual(b.new()[-1], b"+OK pong")
        self.assertFalse(b.protocol.held)

    def test_orderWithCommands(self) -> None:
        """
        Commands behind held lines wait for them: a C{/ping} after 30 lines
        at 10 a second is answered once the 30th is published; C{/pub}
        lines are each answered C{+OK} as they are published.
        """
        fake = hub(self, publishRate=10.0)
        a, b = fake.connect(), fake.connect()
        b.send(b"/sub t\n")
        a.new()
        b.new()
        a.send(b"x\n" * 30 + b"/ping\n" + b"/pub t y\n" * 15 + b"/ping\n")
        self.assertEqual(a.new(), [])
        self.assertEqual(len(b.new()), 10)
        fake.clock.advance(1.0)
        self.assertEqual(a.new(), [])
        caughtUp(fake, a)
        self.assertEqual(a.new(), [b"+OK pong"] + [b"+OK"] * 15 + [b"+OK pong"])
        self.assertEqual(
            b.new(), [b"<127.0.0.1:40001> x"] * 20 + [b"[t] <127.0.0.1:40001> y"] * 15
        )

    def test_readWhileHeld(self) -> None:
        """
        A read that arrives while the publisher is held (a transport may
        deliver one after C{pauseProducing}) waits behind the held lines.
        """
        fake = hub(self, publishRate=10.0)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"".join(b"%d\n" % i for i in range(15)) + b"1")
        a.send(b"5\n16\n")
        caughtUp(fake, a)
        self.assertEqual(b.new(), [b"<127.0.0.1:40001> %d" % i for i in range(17)])

    def test_notIdle(self) -> None:
        """
        A publisher whose held lines are still being published is not
        closed as idle, however long that takes.
        """
        fake = FakeHub(
            HubLimits(presence=False, publishRate=1.0),
            ConnectionLimits(maxPerPeer=0, idleTimeout=10.0),
        )
        self.addCleanup(fake.stop)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"x\n" * 40)
        caughtUp(fake, a, 1.0)
        self.assertFalse(a.closed)
        self.assertEqual(len(b.new()), 40)

    def test_closeWhileHeld(self) -> None:
        """
        A held publisher that disconnects leaves no timer, and its held
        lines are not published.
        """
        fake = hub(self, publishRate=10.0)
        a, b = fake.connect(), fake.connect()
        b.new()
        a.send(b"x\n" * 30)
        a.transport.loseConnection()
        fake.clock.advance(10)
        self.assertEqual(timers(fake), [])
        self.assertEqual(len([line for line in b.new() if b"> x" in line]), 10)

    def test_logBounded(self) -> None:
        """
        Each throttling is counted; the C{publish_throttled} event is logged
        at most once per interval (the next one says how many were not).
        """
        events = captureEvents(self)
        fake = hub(self, publishRate=10.0)
        a = fake.connect()
        for _ in range(3):
            a.send(b"x\n" * 20)
            caughtUp(fake, a)
        self.assertEqual(throttledTotal(fake), 3)
        logged = [e for e in events if e.get("event") == "publish_throttled"]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["rate"], 10.0)
        self.assertEqual(logged[0]["burst"], 10)
        self.assertEqual(logged[0]["peer"], "127.0.0.1:40001")
        fake.clock.advance(10)
        a.send(b"x\n" * 20)
        logged = [e for e in events if e.get("event") == "publish_throttled"]
        self.assertEqual(logged[-1]["suppressed"], 2)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [b"/ping", b"/pub t.a x", b"hello", b"", b"/echo on", b"more text"]
            ),
            max_size=80,
        ),
        st.lists(st.integers(0, 1000), max_size=12),
        st.floats(0.5, 50.0),
        st.integers(1, 20),
        st.integers(1, 7),
    )
    def test_sameAnswers(
        self,
        lines: list[bytes],
        cuts: list[int],
        rate: float,
        burst: int,
        turnLines: int,
    ) -> None:
        """
        Whatever the rate, the burst, the turn budget and the chunking, a
        publisher gets the same answers, and a subscriber the same lines in
        the same order, as with no rate at all; the clock is a fake one, and
        every wait is bounded.
        """

        def run(limits: HubLimits, pieces: list[bytes]) -> list[bytes]:
            fake = FakeHub(limits)
            try:
                a, b = fake.connect(), fake.connect()
                b.send(b"/sub t.>\n")
                for piece in pieces:
                    # A transport does not deliver reads while paused.
                    caughtUp(fake, a, 0.05)
                    a.send(piece)
                caughtUp(fake, a, 0.05)
                self.assertEqual(timers(fake), [])
                return a.received() + [b"--"] + b.received()
            finally:
                fake.stop()

        data = b"".join(line + b"\n" for line in lines)
        limited = HubLimits(
            presence=False, turnLines=turnLines, publishRate=rate, publishBurst=burst
        )
        self.assertEqual(
            run(limited, chunked(data, cuts)),
            run(HubLimits(presence=False), [data]),
        )


class PublishRateOptionTests(SynchronousTestCase):
    """
    C{--publish-rate} and C{--publish-burst} on the command line.
    """

    def parse(self, *argv: str) -> Options:
        """
        Parse C{argv} (with a hub).
        """
        options = Options()
        options.parseOptions(["--pubsub", "8008", *argv])
        return options

    def test_parsed(self) -> None:
        """
        The rate takes C{N} or C{N/s}; the burst defaults to one second's
        worth of the rate (at least 1).
        """
        self.assertEqual(self.parse().hubLimits().publishRate, 0.0)
        limits = self.parse("--publish-rate", "100/s").hubLimits()
        self.assertEqual((limits.publishRate, limits.publishBucket), (100.0, 100))
        limits = self.parse("--publish-rate", "0.5").hubLimits()
        self.assertEqual(limits.publishBucket, 1)
        limits = self.parse("--publish-rate", "2.5", "--publish-burst", "7").hubLimits()
        self.assertEqual((limits.publishRate, limits.publishBucket), (2.5, 7))

    def test_bad(self) -> None:
        """
        A rate that is not above 0, a burst below 1, or a burst without a
        rate: one line naming the option.
        """
        for argv, message in [
            (["--publish-rate", "0"], "--publish-rate: '0' is not a number of lines"),
            (["--publish-rate", "fast"], "--publish-rate: 'fast' is not"),
            (["--publish-rate", "inf"], "--publish-rate: 'inf' is not"),
            (
                ["--publish-rate", "5", "--publish-burst", "0"],
                "--publish-burst: '0' is not a whole number of at least 1",
            ),
            (["--publish-burst", "5"], "--publish-burst needs --publish-rate"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(message, str(caught.exception))


class PublishRateDaemonTests(SynchronousTestCase):
    """
    The issue's figure, against a real C{twistd netdemo --publish-rate 100}.
    """

    def test_thousandLines(self) -> None:
        """
        A publisher sends 1,000 lines in one burst: a subscriber gets all of
        them, in order, the last not before 8.5 s after the first; a line a
        second publisher sends meanwhile arrives before the first
        publisher's backlog is done.
        """
        daemon = HubDaemon("--publish-rate", "100")
        self.addCleanup(daemon.close)
        port = daemon.port("pubsub")
        subscriber, first, second = (LineSocket(port) for _ in range(3))
        for client in (subscriber, first, second):
            self.addCleanup(client.close)
        stamps: list[tuple[float, int]] = []
        wanted = 1001
        done = threading.Event()

        def read() -> None:
            subscriber.sock.settimeout(0.5)
            deadline = time.monotonic() + PATIENCE
            while time.monotonic() < deadline and not done.is_set():
                try:
                    data = subscriber.sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    break
                subscriber.lines.extend(subscriber._buffer.feed(data))
                stamps.append((time.monotonic(), len(subscriber.lines)))
                if len(subscriber.matching(b"<")) >= wanted:
                    break

        reader = threading.Thread(target=read)
        reader.start()
        self.addCleanup(done.set)
        first.send(
            b"".join(b"line %d from %s\n" % (i, first.identity) for i in range(1000))
        )
        firstPrefix = b"<" + first.identity + b"> "
        for _ in range(int(PATIENCE * 100)):
            if subscriber.matching(firstPrefix):
                break
            time.sleep(0.01)
        second.send(b"meanwhile\n")
        reader.join(PATIENCE)
        done.set()
        fromFirst = subscriber.matching(firstPrefix)
        self.assertEqual(
            fromFirst,
            [
                firstPrefix + b"line %d from %s" % (i, first.identity)
                for i in range(1000)
            ],
        )
        lines = subscriber.lines
        secondLine = lines.index(b"<" + second.identity + b"> meanwhile")
        self.assertLess(secondLine, lines.index(fromFirst[-1]))
        firstAt = next(t for t, n in stamps if n > lines.index(fromFirst[0]))
        lastAt = next(t for t, n in stamps if n > lines.index(fromFirst[-1]))
        self.assertGreaterEqual(lastAt - firstAt, 8.5)
        self.assertGreaterEqual(
            daemon.metric(
                "netdemo_pubsub_publish_throttled_total",
                service="pubsub",
                user="anonymous",
            ),
            1,
        )
