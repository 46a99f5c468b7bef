"""
The backplane's bounds and liveness, without Redis: what it takes from
Redis (L{SubscriberReader}, C{--backplane-max-message}, C{--max-line},
C{--max-pending}), how it splits what it publishes, and how it pings Redis
and gives up on a connection Redis does not answer on (with a L{Clock} and
stand-in connections).  C{tests/test_backplane_redis.py} has the same
behaviour against a real C{redis-server}.
"""

from __future__ import annotations

from typing import Any, cast

import hiredis
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netdemo import backplane, tap
from netdemo.backplane import (
    MemoryBackplane,
    MemoryBus,
    RedisBackplane,
    SubscriberReader,
    decodeMessage,
    parseBackplaneURL,
)
from netdemo.hubwire import linePrefix
from netdemo.limits import BackplaneLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from tests.support import captureEvents
from tests.test_backplane import dropped


def bulk(data: bytes) -> bytes:
    """
    A RESP bulk string.
    """
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pmessage(channel: bytes, payload: bytes, pattern: bytes = b"p.*") -> bytes:
    """
    What Redis sends a pattern subscriber for one message.
    """
    return b"*4\r\n" + bulk(b"pmessage") + bulk(pattern) + bulk(channel) + bulk(payload)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} cut at the given offsets (any order, any repeats).
    """
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def events(items: list[bytes | tuple[bytes, bytes]]) -> list[Any]:
    """
    What reaches the hub from what a L{SubscriberReader} returned: the
    messages it took out, and the replies C{hiredis} reads from the rest,
    messages written as C{(channel, payload)} either way.
    """
    reader = hiredis.Reader()
    found: list[Any] = []
    for item in items:
        if isinstance(item, tuple):
            found.append(item)
            continue
        reader.feed(item)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, list) and reply[:1] == [b"pmessage"]:
                reply = tuple(reply[2:])
            found.append(reply)
    return found


def read(reader: SubscriberReader, stream: bytes, cuts: list[int]) -> list[Any]:
    """
    What reaches the hub from C{stream} cut into reads at C{cuts}.
    """
    return events(
        [item for data in chunked(stream, cuts) for item in reader.feed(data)]
    )


class SubscriberReaderTests(SynchronousTestCase):
    """
    L{SubscriberReader}: messages taken out, other RESP passed unchanged, a
    bulk string over the bound replaced by its size and never held.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
        cuts=st.lists(st.integers(min_value=0), max_size=12),
        bound=st.integers(min_value=len(b"pmessage"), max_value=30),
    )
    def test_anyChunking(
        self, payloads: list[bytes], cuts: list[int], bound: int
    ) -> None:
        """
        However the bytes are cut into reads, the hub gets every message in
        order, each element over the bound replaced by its size; the other
        replies (simple strings, errors, integers, nulls, nested arrays)
        pass as they are, in order.
        """
        others = b"+OK\r\n-ERR no\r\n:42\r\n$-1\r\n*-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n"
        stream = others + b"".join(pmessage(b"p.chat", p) for p in payloads)
        reader = SubscriberReader(bound)
        found = read(reader, stream, cuts)
        self.assertEqual(found[0], b"OK")
        self.assertIsInstance(found[1], hiredis.ReplyError)
        self.assertEqual(found[2:6], [42, None, None, [[1], b""]])

        def kept(element: bytes) -> bytes | int:
            return element if len(element) <= bound else len(element)

        messages = [
            [kept(e) for e in (b"pmessage", b"p.*", b"p.chat", payload)]
            for payload in payloads
        ]
        self.assertEqual(
            found[6:],
            [tuple(m[2:]) if m[:2] == [b"pmessage", b"p.*"] else m for m in messages],
        )
        replaced = sum(isinstance(e, int) for m in messages for e in m)
        self.assertEqual(reader.refused, replaced)

    def test_messagesTakenOut(self) -> None:
        """
        Whole messages in a read are taken out, the rest (a reply, a message
        cut by the end of the read) passes on; the cut message is read by
        the parser once complete, and messages are taken out again after it.
        """
        pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        messages = [pmessage(b"p.chat", b"m%d" % i) for i in range(3)]
        stream = pong + b"".join(messages)
        reader = SubscriberReader(100)
        cut = len(stream) - 5
        first = reader.feed(stream[:cut])
        self.assertEqual(first[:3], [pong, (b"p.chat", b"m0"), (b"p.chat", b"m1")])
        second = reader.feed(stream[cut:] + messages[0])
        self.assertEqual(second[-1], (b"p.chat", b"m0"))
        self.assertEqual(
            events(first + second)[1:],
            [(b"p.chat", b"m%d" % i) for i in (0, 1, 2, 0)],
        )

    def test_unchangedUnderTheBound(self) -> None:
        """
        A read without a message or a bulk string over the bound is handed
        on as the same object, not a copy.
        """
        data = b"*3\r\n" + bulk(b"psubscribe") + bulk(b"p.*") + b":1\r\n"
        [piece] = SubscriberReader(1000).feed(data)
        self.assertIs(piece, data)

    def test_hugePayloadNeverHeld(self) -> None:
        """
        A 10 MiB payload read 64 KiB at a time: the reader hands on nothing
        of it and holds at most a partial element line; the message after
        it arrives whole.
        """
        payload = b"x" * (10 << 20)
        stream = pmessage(b"p.chat", payload) + pmessage(b"p.chat", b"after")
        reader = SubscriberReader(1 << 16)
        out: list[bytes | tuple[bytes, bytes]] = []
        for i in range(0, len(stream), 1 << 16):
            out.extend(reader.feed(stream[i : i + (1 << 16)]))
            self.assertLess(len(reader._partial), 100)
        self.assertLess(sum(map(len, out)), 500)
        self.assertEqual(
            events(out), [(b"p.chat", len(payload)), (b"p.chat", b"after")]
        )

    def test_notRESP(self) -> None:
        """
        A length that is not a number, or a line longer than C{MAX_LINE}
        without its end, is a protocol error; lengths Redis never sends and
        C{int} takes (C{" 5"}, C{"+5"}) are left to the parser, which
        refuses them.
        """
        for data in [b"$x\r\n", b"*4\r\n$8\r\npmessage\r\n$y\r\n", b"*z\r\n"]:
            self.assertRaises(ValueError, SubscriberReader(10).feed, data)
        for data in [b"$ 5\r\nhello\r\n", b"$+5\r\nhello\r\n", b"$-2\r\n"]:
            items = SubscriberReader(10).feed(data)
            self.assertRaises(hiredis.ProtocolError, events, items)
        reader = SubscriberReader(10)
        reader.feed(b"+" + b"a" * (SubscriberReader.MAX_LINE - 10))
        self.assertRaises(ValueError, reader.feed, b"a" * 20)


def receiving(
    bus: MemoryBus,
    hubLimits: HubLimits | None = None,
    limits: BackplaneLimits | None = None,
) -> tuple[MemoryBackplane, list[Any]]:
    """
    A started backplane on C{bus}, and what it hands its hub.
    """
    member = MemoryBackplane(bus, MemoryMetrics(), hubLimits=hubLimits, limits=limits)
    got: list[Any] = []
    member.attach(lambda *args: got.append(args))
    member.startService()
    return member, got


def droppedBy(member: MemoryBackplane, reason: str) -> float:
    """
    The dropped-lines counter of a backplane made by L{receiving}.
    """
    return dropped(cast(MemoryMetrics, member.metrics), reason)


class MessageBoundsTests(SynchronousTestCase):
    """
    What a backplane takes from the others, and how it splits what it
    sends so that they take it.
    """

    def setUp(self) -> None:
        self.events = captureEvents(self)

    def refusals(self) -> list[Any]:
        """
        The logged C{backplane_too_large} events.
        """
        return [e for e in self.events if e.get("event") == "backplane_too_large"]

    def test_tooLarge(self) -> None:
        """
        A message over C{maxMessage} is refused as a whole, counted once, and
        logged once however many follow within the log interval.
        """
        bus = MemoryBus()
        receiver, got = receiving(bus, limits=BackplaneLimits(maxMessage=1000))
        payload = b"<ops> " + b"x\n" * 600
        for _ in range(3):
            bus.publish(b"netdemo.chat", payload)
        bus.publish(b"netdemo.chat", b"<ops> small")
        self.assertEqual(got, [(b"chat", b"ops", [b"small"])])
        self.assertEqual(droppedBy(receiver, "too-large"), 3)
        [event] = self.refusals()
        self.assertEqual(
            (event["size"], event["bound"], event["limit"], event["channel"]),
            (len(payload), "--backplane-max-message", 1000, "netdemo.chat"),
        )

    def test_deliveryOverMaxPending(self) -> None:
        """
        A message within C{maxMessage} whose lines, each with its prefix,
        would hand a subscriber more than C{--max-pending} is refused; one
        just within it is delivered.
        """
        bus = MemoryBus()
        receiver, got = receiving(bus, HubLimits(maxPending=100_000))
        name, topic = b"n" * 64, b"t" * 200
        prefix = len(linePrefix(topic, name))
        count = 100_000 // (prefix + 2)
        within = b"<%s> " % name + b"x\n" * count
        bus.publish(b"netdemo." + topic, within + b"x\n")
        self.assertEqual(got, [])
        self.assertEqual(droppedBy(receiver, "too-large"), 1)
        [event] = self.refusals()
        self.assertEqual(
            (event["size"], event["bound"]),
            ((count + 1) * (prefix + 2), "--max-pending"),
        )
        bus.publish(b"netdemo." + topic, within)
        self.assertEqual(len(got[0][2]), count)

    @settings(max_examples=300, deadline=None)
    @given(
        head=st.sampled_from([b"", b"<" + b"n" * 64 + b"> ", b"netdemo/1 n 1 i\n"]),
        body=st.lists(st.sampled_from([b"\n", b"\x07", b"a", b"\r\n"]), max_size=150),
        topic=st.integers(1, 255),
        maxPending=st.integers(330, 3000),
    )
    def test_deliveredWhenItFits(
        self, head: bytes, body: list[bytes], topic: int, maxPending: int
    ) -> None:
        """
        Whatever a payload holds (empty lines, control characters, a long
        name; small payloads are not counted), it is delivered exactly when
        its lines with their prefixes fit C{--max-pending}.
        """
        bus = MemoryBus()
        receiver, got = receiving(bus, HubLimits(maxLine=10_000, maxPending=maxPending))
        payload = head + b"".join(body)
        channel = b"netdemo." + b"t" * topic
        bus.publish(channel, payload)
        message = decodeMessage(payload)
        if message is None:
            self.assertEqual(got, [])
            return
        prefix = linePrefix(channel[8:], message.identity)
        delivered = sum(len(line) + len(prefix) + 1 for line in message.lines)
        self.assertEqual(bool(got), delivered <= maxPending)
        self.assertEqual(droppedBy(receiver, "too-large"), int(delivered > maxPending))

    def test_linesOverMaxLine(self) -> None:
        """
        Lines over C{--max-line} are dropped, the others delivered.
        """
        bus = MemoryBus()
        receiver, got = receiving(bus, HubLimits(maxLine=10))
        bus.publish(b"netdemo.chat", b"short\n" + b"y" * 11 + b"\nfine")
        self.assertEqual(got, [(b"chat", b"redis", [b"short", b"fine"])])
        self.assertEqual(droppedBy(receiver, "too-long"), 1)

    @settings(max_examples=50, deadline=None)
    @given(
        sizes=st.lists(st.integers(1, 300), min_size=1, max_size=400),
        maxMessage=st.integers(600, 5000),
        maxPending=st.integers(1000, 20000),
        topic=st.sampled_from([b"chat", b"a" * 255]),
    )
    def test_splitToFit(
        self, sizes: list[int], maxMessage: int, maxPending: int, topic: bytes
    ) -> None:
        """
        A publication of any size is sent as messages that each fit
        C{maxMessage} and C{maxPending}, numbered in order: the other hub
        delivers every line, in order, and refuses none.
        """
        bus = MemoryBus()
        hubLimits = HubLimits(maxLine=400, maxPending=maxPending)
        limits = BackplaneLimits(maxMessage=maxMessage)
        sender, _ = receiving(bus, hubLimits, limits)
        receiver, got = receiving(bus, hubLimits, limits)
        lines = [b"%d:" % i + b"z" * size for i, size in enumerate(sizes)]
        identity = b"[2001:db8::1]:65535"
        sender.publish(topic, identity, lines)
        self.assertEqual(droppedBy(receiver, "too-large"), 0)
        self.assertEqual([line for _, _, part in got for line in part], lines)
        for _, payload in bus.sent:
            self.assertLessEqual(len(payload), maxMessage)
        seqs = [decodeMessage(p).seq for _, p in bus.sent]  # type: ignore[union-attr]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(sender.seq, len(seqs))

    def test_oneMessageUsually(self) -> None:
        """
        A publication that fits is one message.
        """
        bus = MemoryBus()
        sender, _ = receiving(bus)
        receiver, got = receiving(bus)
        sender.publish(b"chat", b"me", [b"a"] * 1000)
        self.assertEqual(len(bus.sent), 1)
        self.assertEqual(len(got[0][2]), 1000)


class FakeConnection:
    """
    Stands in for one of the Redis connections: its C{PING}s wait for the
    test to answer them.
    """

    connected = 1

    def __init__(self) -> None:
        self.pings: list[Deferred[bool]] = []
        self.transport = StringTransport()
        self.aborted = False
        self.transport.abortConnection = self.abort  # type: ignore[method-assign]

    def heartbeat(self) -> Deferred[bool]:
        """
        Send C{PING}: the answer waits for L{answer}.
        """
        d: Deferred[bool] = Deferred()
        self.pings.append(d)
        return d

    def abort(self) -> None:
        """
        The transport's C{abortConnection}.
        """
        self.aborted = True
        self.connected = 0

    def answer(self) -> None:
        """
        Redis answers every ping waiting.
        """
        pings, self.pings = self.pings, []
        for d in pings:
            d.callback(True)

    def execute_command(self, *args: Any) -> Deferred[Any]:
        """
        A command Redis never answers.
        """
        return Deferred()


class WithBackplane:
    """
    A test case's L{RedisBackplane} that connects nowhere, with its clock
    and metrics.
    """

    clock: MemoryReactorClock
    metrics: MemoryMetrics
    backplane: RedisBackplane

    def makeBackplane(self, limits: BackplaneLimits) -> None:
        """
        Make C{backplane}, with C{limits}, and its C{clock} and C{metrics}.
        """
        self.clock = MemoryReactorClock()
        self.metrics = MemoryMetrics()
        self.backplane = RedisBackplane(
            parseBackplaneURL("redis://127.0.0.1:1?prefix=p"),
            self.metrics,
            self.clock,
            limits,
        )


class LivenessTests(WithBackplane, SynchronousTestCase):
    """
    L{RedisBackplane} pings Redis and reports it down when it does not
    answer (the timing on a L{Clock}).
    """

    def setUp(self) -> None:
        self.makeBackplane(
            BackplaneLimits(pingInterval=5.0, pingTimeout=3.0, history=False)
        )
        self.events = captureEvents(self)

    def named(self, name: str) -> list[Any]:
        """
        The logged events named C{name}.
        """
        return [e for e in self.events if e.get("event") == name]

    def gauge(self) -> float:
        """
        C{netdemo_backplane_up}.
        """
        return self.metrics.value("netdemo_backplane_up", service="backplane")

    def connect(self) -> tuple[FakeConnection, FakeConnection]:
        """
        Make both connections and have Redis answer their first commands.
        """
        publisher, subscriber = FakeConnection(), FakeConnection()
        for connection in (publisher, subscriber):
            self.backplane.connecting(connection)
        self.backplane.publisherUsable(publisher)
        self.assertIsNone(self.backplane.publisher)
        publisher.answer()
        self.backplane.subscribed(subscriber)
        return publisher, subscriber

    def test_upOnceAnswered(self) -> None:
        """
        The publishing connection counts once Redis answered a C{PING} on
        it: before, lines are dropped as C{down}.
        """
        publisher, subscriber = FakeConnection(), FakeConnection()
        self.backplane.connecting(publisher)
        self.backplane.publisherUsable(publisher)
        self.backplane.subscribed(subscriber)
        self.backplane.publish(b"chat", b"me", [b"early"])
        self.assertEqual(dropped(self.metrics, "down"), 1)
        self.assertEqual(self.gauge(), 0)
        publisher.answer()
        self.assertEqual(self.gauge(), 1)
        self.assertEqual(len(self.named("backplane_up")), 1)

    def test_pingsAnswered(self) -> None:
        """
        Each round pings each connection once (not again while its answer
        is awaited); while Redis answers within C{pingTimeout}, the
        backplane stays up.
        """
        publisher, subscriber = self.connect()
        for _ in range(4):
            self.backplane.pingAll()
            self.backplane.pingAll()
            self.assertEqual((len(publisher.pings), len(subscriber.pings)), (1, 1))
            self.clock.advance(2.9)
            publisher.answer()
            subscriber.answer()
        self.clock.advance(10)
        self.assertEqual(self.gauge(), 1)
        self.assertEqual(self.named("backplane_down"), [])
        self.assertFalse(publisher.aborted or subscriber.aborted)

    def test_frozen(self) -> None:
        """
        Redis stops answering: C{pingTimeout} after an unanswered C{PING}
        the backplane is down (the gauge, one C{backplane_down} event, one
        outage), both connections are aborted, the queue is emptied, and
        lines are dropped as C{down}; reconnections that Redis does not
        answer either add no event.  When Redis answers again, it is up.
        """
        publisher, subscriber = self.connect()
        for i in range(backplane.WINDOW + 10):
            self.backplane.publish(b"chat", b"me", [b"%d" % i])
        self.assertGreater(self.backplane.queuedBytes, 0)
        self.backplane.pingAll()
        self.clock.advance(2.9)
        self.assertEqual(self.gauge(), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.gauge(), 0)
        self.assertTrue(publisher.aborted and subscriber.aborted)
        [event] = self.named("backplane_down")
        self.assertEqual(event["reason"], "no answer to PING within 3 s")
        self.assertEqual(dropped(self.metrics, "down"), 10)
        self.assertEqual(self.backplane._queued, 0)
        self.backplane.publish(b"chat", b"me", [b"while down"])
        self.assertEqual(dropped(self.metrics, "down"), 11)
        for _ in range(3):
            again = FakeConnection()
            self.backplane.connecting(again)
            self.backplane.publisherUsable(again)
            self.clock.advance(3.0)
            self.assertTrue(again.aborted)
        self.assertEqual(self.backplane.silentConnections, 5)
        self.assertEqual(len(self.named("backplane_down")), 1)
        self.assertEqual(
            self.metrics.value("netdemo_backplane_outages_total", service="backplane"),
            1,
        )
        self.connect()
        self.assertEqual(self.gauge(), 1)
        self.assertEqual(len(self.named("backplane_up")), 2)
        self.assertEqual(self.backplane.silentConnections, 0)

    def test_silentWhileConnecting(self) -> None:
        """
        A connection whose first commands Redis does not answer within
        C{pingTimeout} is aborted, and the backplane reported down.
        """
        connection = FakeConnection()
        self.backplane.connecting(connection)
        self.clock.advance(3.0)
        self.assertTrue(connection.aborted)
        [event] = self.named("backplane_down")
        self.assertEqual(event["reason"], "no answer within 3 s of connecting")

    def test_lostWhileConnecting(self) -> None:
        """
        A connection lost before it counts (a refused TLS certificate) is an
        outage too.
        """
        connection = FakeConnection()
        self.backplane.connecting(connection)
        self.backplane.connectionLost(connection, Failure(ConnectionError("bad cert")))
        [event] = self.named("backplane_down")
        self.assertEqual(event["reason"], "bad cert")
        self.clock.advance(10)
        self.assertFalse(connection.aborted)

    def test_lostWhileWaiting(self) -> None:
        """
        A connection lost while a ping waits is not aborted again later.
        """
        publisher, subscriber = self.connect()
        self.backplane.pingAll()
        self.backplane.connectionLost(publisher, Failure(ConnectionError("gone")))
        self.clock.advance(10)
        self.assertFalse(publisher.aborted)
        self.assertTrue(subscriber.aborted)

    def test_heartbeatTimer(self) -> None:
        """
        Once started, the backplane pings every C{pingInterval} seconds;
        stopped, it stops and forgets what it waited for.
        """

        class Factory:
            """
            A connection factory that never connects.
            """

            def startConnecting(self, endpoint: Any) -> None:
                """
                Connect nowhere.
                """

            def disconnect(self) -> Deferred[None]:
                """
                Never done.
                """
                return Deferred()

        self.patch(
            backplane,
            "_redisFactories",
            lambda: (lambda b: Factory(), lambda b: Factory()),
        )
        self.backplane.startService()
        publisher, subscriber = self.connect()
        self.clock.advance(4.9)
        self.assertEqual(publisher.pings, [])
        self.clock.advance(0.1)
        self.assertEqual((len(publisher.pings), len(subscriber.pings)), (1, 1))
        self.backplane.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ConnectionTests(WithBackplane, SynchronousTestCase):
    """
    The real connections' classes (C{txredisapi}) on a L{StringTransport}:
    the subscriber reads through a L{SubscriberReader}; C{PING}; the backoff.
    """

    def setUp(self) -> None:
        self.makeBackplane(BackplaneLimits(maxMessage=1000, history=False))
        self.got: list[Any] = []
        self.backplane.attach(lambda *args: self.got.append(args))
        self.makePublisher, self.makeSubscriber = backplane._redisFactories()

    def connected(self, factory: Any) -> tuple[Any, StringTransport]:
        """
        A connection of C{factory} on a L{StringTransport}, set up.
        """
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.clock.advance(0)
        return protocol, transport

    def test_subscriberBounded(self) -> None:
        """
        The subscriber subscribes; a message over C{maxMessage}, in any
        reads, is refused and counted, and the next one is delivered.
        """
        subscriber, transport = self.connected(self.makeSubscriber(self.backplane))
        self.assertIn(b"PSUBSCRIBE", transport.value())
        subscriber.dataReceived(
            b"*3\r\n" + bulk(b"psubscribe") + bulk(b"p.*") + b":1\r\n"
        )
        self.assertIs(self.backplane.subscriber, subscriber)
        stream = pmessage(b"p.chat", b"x\n" * 5000) + pmessage(b"p.chat", b"hi")
        for i in range(0, len(stream), 777):
            subscriber.dataReceived(stream[i : i + 777])
        self.assertEqual(dropped(self.metrics, "too-large"), 1)
        self.assertEqual(self.got, [(b"chat", b"redis", [b"hi"])])
        subscriber.dataReceived(b"$x\r\n")
        self.assertTrue(transport.disconnecting)

    def test_heartbeat(self) -> None:
        """
        C{heartbeat} sends C{PING}; any answer (an error too) is C{True}; a
        connection lost first is C{False}.
        """
        publisher, transport = self.connected(self.makePublisher(self.backplane))
        # Set up, it sent the PING that makes it count.
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nPING\r\n")
        self.assertIsNone(self.backplane.publisher)
        publisher.dataReceived(b"+PONG\r\n")
        self.assertIs(self.backplane.publisher, publisher)
        results: list[bool] = []
        publisher.heartbeat().addCallback(results.append)
        publisher.heartbeat().addCallback(results.append)
        publisher.dataReceived(b"+PONG\r\n-NOPERM no\r\n")
        publisher.heartbeat().addCallback(results.append)
        publisher.connectionLost(Failure(ConnectionError("gone")))
        publisher.heartbeat().addCallback(results.append)
        self.assertEqual(results, [True, True, False, False])

    def test_backoff(self) -> None:
        """
        Connections given up for silence count as failed attempts in the
        delay before the next one.
        """
        factory = self.makeSubscriber(self.backplane)
        factory.jitter = 0
        self.assertEqual(factory.retryDelay(1), 1.0)
        self.backplane.silentConnections = 3
        self.assertAlmostEqual(factory.retryDelay(1), factory.factor**2)


class OptionsTests(SynchronousTestCase):
    """
    The backplane's bounds on the command line.
    """

    def parse(self, *args: str) -> tap.Options:
        """
        Parse C{--backplane redis://h} and C{args}.
        """
        options = tap.Options()
        options.parseOptions(["--backplane", "redis://h", *args])
        return options

    def test_defaults(self) -> None:
        """
        64 KiB messages, 1 MiB queue, a C{PING} every 5 s answered within
        5 s.
        """
        self.assertEqual(self.parse().backplaneLimits(), BackplaneLimits())
        self.assertEqual(
            BackplaneLimits(),
            BackplaneLimits(
                maxQueue=1 << 20, maxMessage=1 << 16, pingInterval=5, pingTimeout=5
            ),
        )

    def test_given(self) -> None:
        """
        Each option sets its bound.
        """
        options = self.parse(
            "--backplane-max-message",
            "128KiB",
            "--backplane-queue",
            "2MiB",
            "--backplane-ping",
            "1.5",
            "--backplane-ping-timeout",
            "0.5",
        )
        self.assertEqual(
            options.backplaneLimits(), BackplaneLimits(2 << 20, 128 << 10, 1.5, 0.5)
        )

    def test_errors(self) -> None:
        """
        Bad values are one line naming the value; bad combinations name
        the options.
        """
        cases = [
            (["--backplane-ping", "0"], "'0' is not a number above 0"),
            (["--backplane-ping-timeout", "-1"], "'-1' is not a number above 0"),
            (["--backplane-ping", "inf"], "'inf' is not a number above 0"),
            (["--backplane-max-message", "0"], "'0' is not a size"),
            (
                ["--backplane-max-message", "4000"],
                "--backplane-max-message 4000 is too small for --max-line 4096",
            ),
            (
                ["--backplane-max-message", "2MiB"],
                "--backplane-queue 1048576 is smaller than --backplane-max-message",
            ),
        ]
        for args, message in cases:
            with self.assertRaises(usage.UsageError) as e:
                self.parse(*args)
            self.assertIn(message, str(e.exception), args)
