"""
Unit tests for L{netdemo.backplane}: the URL, the wire format, and hubs
joined in one process by a L{MemoryBus}; the Redis backplane's queue and
connection state with a fake publishing connection; the command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from netdemo import backplane, tap
from netdemo.backplane import (
    BackplaneURL,
    IBackplane,
    MemoryBackplane,
    MemoryBus,
    RedisBackplane,
    decodeMessage,
    encodeMessage,
    parseBackplaneURL,
)
from netdemo.hubwire import escapeControls
from netdemo.limits import BackplaneLimits, ConnectionLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from netdemo.pubsub import PubSubFactory
from netdemo.web import ServerInfo, statusDocument
from tests.pubsubhelpers import FakeClient, FakeHub
from tests.support import PATIENCE


def relayed(client: FakeClient) -> list[bytes]:
    """
    The relayed lines a client got since the last call (notices and command
    answers left out).
    """
    return [line for line in client.new() if line.startswith((b"<", b"["))]


def joined(bus: MemoryBus, hubLimits: HubLimits | None = None) -> FakeHub:
    """
    An in-memory hub whose factory has a started L{MemoryBackplane} on
    C{bus}.
    """
    hub = FakeHub()
    hub.factory.stopFactory()
    hub.metrics = MemoryMetrics()
    hub.backplane = MemoryBackplane(  # type: ignore[attr-defined]
        bus, hub.metrics, hubLimits=hubLimits
    )
    hub.backplane.startService()  # type: ignore[attr-defined]
    hub.factory = PubSubFactory(
        "pubsub",
        ConnectionLimits(),
        hubLimits or HubLimits(),
        hub.metrics,
        hub.clock,
        hub.backplane,  # type: ignore[attr-defined]
    )
    hub.factory.startFactory()
    return hub


def dropped(metrics: MemoryMetrics, reason: str) -> float:
    """
    The backplane's dropped-lines counter for C{reason}.
    """
    return metrics.value(
        "netdemo_backplane_dropped_total", service="backplane", reason=reason
    )


class URLTests(SynchronousTestCase):
    """
    L{parseBackplaneURL}.
    """

    def test_minimal(self) -> None:
        """
        A host alone means port 6379, no database, prefix C{netdemo}, no TLS.
        """
        self.assertEqual(
            parseBackplaneURL("redis://redis.example"),
            BackplaneURL(tls=False, host="redis.example", port=6379),
        )

    def test_full(self) -> None:
        """
        User, password (percent-decoded), port, database, prefix and CA are
        all read; the display form hides the password.
        """
        url = parseBackplaneURL(
            "rediss://hub:s%40cret@[::1]:6380/3?prefix=chat.eu&ca=/etc/ca.pem"
        )
        self.assertEqual(
            url,
            BackplaneURL(
                tls=True,
                host="::1",
                port=6380,
                db=3,
                prefix="chat.eu",
                username="hub",
                password="s@cret",
                ca="/etc/ca.pem",
            ),
        )
        self.assertEqual(url.display(), "rediss://hub@[::1]:6380/3?prefix=chat.eu")
        self.assertNotIn("s@cret", repr(url))

    def test_passwordOnly(self) -> None:
        """
        C{redis://:PASSWORD@HOST} gives a password and no user.
        """
        url = parseBackplaneURL("redis://:pw@127.0.0.1:7000")
        self.assertEqual((url.username, url.password, url.port), (None, "pw", 7000))

    def test_errors(self) -> None:
        """
        Bad URLs are refused with a message that names the value, never
        with its password.
        """
        cases = {
            "http://h:1": "is not a redis:// or rediss:// URL",
            "redis://:pw@h:99999": "is not a Redis URL",
            "redis://:pw@h:1/x": "database 'x' is not a number",
            "redis://:pw@h:1?prefix=a*b": "prefix 'a*b'",
            "redis://:pw@h:1?prefix=": "prefix ''",
            "redis://:pw@h:1?db=2": "unknown parameter 'db'",
            "redis://:pw@h:1?ca=x.pem": "ca= needs rediss://",
            "redis://:pw@:1": "names no host",
        }
        for value, message in cases.items():
            with self.assertRaises(ValueError) as e:
                parseBackplaneURL(value)
            self.assertIn(message, str(e.exception), value)
            self.assertNotIn("pw", str(e.exception), value)


class WireTests(SynchronousTestCase):
    """
    L{encodeMessage} and L{decodeMessage}.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        node=st.from_regex(rb"[a-f0-9]{1,16}", fullmatch=True),
        seq=st.integers(min_value=1, max_value=2**63),
        identity=st.from_regex(rb"[A-Za-z0-9:.\[\]_-]{1,64}", fullmatch=True),
        lines=st.lists(
            st.binary(min_size=1).filter(lambda b: b"\n" not in b),
            min_size=1,
            max_size=5,
        ),
    )
    def test_roundTrip(
        self, node: bytes, seq: int, identity: bytes, lines: list[bytes]
    ) -> None:
        """
        A hub's message decodes to what was encoded, its control characters
        escaped.
        """
        message = decodeMessage(encodeMessage(node, seq, identity, lines))
        assert message is not None
        self.assertEqual(
            (message.node, message.seq, message.identity),
            (node, seq, identity),
        )
        self.assertEqual(message.lines, [escapeControls(line) for line in lines])

    @settings(max_examples=300, deadline=None)
    @given(payload=st.binary(max_size=200))
    def test_anyPayload(self, payload: bytes) -> None:
        """
        Any payload decodes to C{None} or to non-empty lines without LF.
        """
        message = decodeMessage(payload)
        if message is not None:
            self.assertTrue(message.lines)
            for line in message.lines:
                self.assertTrue(line)
                self.assertNotIn(b"\n", line)

    def test_external(self) -> None:
        """
        A payload without the header is plain text: every non-empty line is
        relayed, from C{redis} or from the C{<NAME>} it starts with.
        """
        cases: dict[bytes, tuple[bytes, list[bytes]] | None] = {
            b"hello": (b"redis", [b"hello"]),
            b"<ops> back in 5": (b"ops", [b"back in 5"]),
            b"<ops>tight": (b"ops", [b"tight"]),
            b"a\r\nb\n\nc\n": (b"redis", [b"a", b"b", b"c"]),
            b"bell\x07": (b"redis", [b"bell\\x07"]),
            b"<not a name> x": (b"redis", [b"<not a name> x"]),
            b"": None,
            b"\n\r\n": None,
            b"<ops> ": None,
        }
        for payload, expected in cases.items():
            message = decodeMessage(payload)
            if expected is None:
                self.assertIsNone(message, payload)
                continue
            assert message is not None
            self.assertEqual((message.identity, message.lines), expected, payload)
            self.assertEqual((message.node, message.seq), (None, 0))

    def test_badHeader(self) -> None:
        """
        A payload that starts like a hub's message but is malformed is
        refused.
        """
        for payload in [
            b"netdemo/1 n 1\nx",
            b"netdemo/1 n x i\nx",
            b"netdemo/1 n 1 i",
            b"netdemo/1 n 1 i\n",
            b"netdemo/1 n! 1 i\nx",
            b"netdemo/1 n 1 a b\nx",
        ]:
            self.assertIsNone(decodeMessage(payload), payload)


class OrderTests(SynchronousTestCase):
    """
    Duplicates and order, over any interleaving of several nodes' messages.
    """

    @settings(max_examples=200, deadline=None)
    @given(data=st.data())
    def test_exactlyOnceInOrder(self, data: st.DataObject) -> None:
        """
        Each node's messages, interleaved in any way with copies of messages
        already sent, reach the hub exactly once each and in each node's
        order.
        """
        counts = data.draw(st.lists(st.integers(0, 8), min_size=1, max_size=4))
        pending = {b"n%d" % i: list(range(1, n + 1)) for i, n in enumerate(counts)}
        sent: list[tuple[bytes, int]] = []
        arrivals: list[tuple[bytes, int]] = []
        while any(pending.values()):
            again = bool(sent) and data.draw(st.booleans())
            if again:
                arrivals.append(data.draw(st.sampled_from(sent)))
                continue
            node = data.draw(st.sampled_from([n for n, q in pending.items() if q]))
            message = (node, pending[node].pop(0))
            sent.append(message)
            arrivals.append(message)
        metrics = MemoryMetrics()
        bus = MemoryBus()
        backplane = MemoryBackplane(bus, metrics, node=b"self")
        got: list[tuple[bytes, int]] = []
        backplane.attach(
            lambda topic, identity, lines: got.append((identity, int(lines[0])))
        )
        for node, seq in arrivals:
            backplane.messageReceived(
                b"netdemo.chat", encodeMessage(node, seq, node, [b"%d" % seq])
            )
        self.assertEqual(sorted(got), sorted(sent))
        for node in pending:
            mine = [seq for n, seq in got if n == node]
            self.assertEqual(mine, sorted(mine))
        self.assertEqual(dropped(metrics, "duplicate"), len(arrivals) - len(sent))


class MemoryBusTests(SynchronousTestCase):
    """
    Hubs joined by a L{MemoryBus}: what crosses and what does not.
    """

    def setUp(self) -> None:
        self.bus = MemoryBus()
        self.hubs = [joined(self.bus) for _ in range(3)]
        for hub in self.hubs:
            self.addCleanup(hub.stop)

    def test_exactlyOnceEverywhere(self) -> None:
        """
        A line published on hub A reaches the other clients of A and the
        clients of B and C exactly once, with the publisher's identity; the
        publisher does not get it back.
        """
        a, b, c = self.hubs
        sender, localPeer = a.connect(), a.connect()
        remote = [b.connect(), b.connect(), c.connect()]
        for client in [sender, localPeer, *remote]:
            client.new()
        sender.send(b"hello all\n")
        expected = [b"<" + sender.identity + b"> hello all"]
        self.assertEqual(relayed(localPeer), expected)
        for client in remote:
            self.assertEqual(relayed(client), expected)
        self.assertEqual(relayed(sender), [])
        self.assertEqual(len(self.bus.sent), 1)
        self.assertEqual(
            a.metrics.value("netdemo_backplane_sent_lines_total", service="backplane"),
            1,
        )
        self.assertEqual(
            b.metrics.value(
                "netdemo_backplane_received_lines_total", service="backplane"
            ),
            1,
        )
        self.assertEqual(
            a.metrics.value(
                "netdemo_backplane_received_lines_total", service="backplane"
            ),
            0,
        )

    def test_orderKeptInBatches(self) -> None:
        """
        Many lines, in reads of any size, arrive in order on the other hub.
        """
        a, b = self.hubs[:2]
        sender, receiver = a.connect(), b.connect()
        receiver.new()
        data = b"".join(b"line %d\n" % i for i in range(100))
        for i in range(0, len(data), 37):
            sender.send(data[i : i + 37])
        prefix = b"<" + sender.identity + b"> "
        self.assertEqual(
            relayed(receiver), [prefix + b"line %d" % i for i in range(100)]
        )

    def test_topics(self) -> None:
        """
        C{/pub TOPIC} crosses too, and reaches only the matching
        subscriptions on the other hubs.
        """
        a, b, c = self.hubs
        sender = a.connect()
        news, plain = b.connect(), c.connect()
        news.send(b"/sub news.>\n")
        news.new()
        plain.new()
        sender.send(b"/pub news.eu rain\n")
        self.assertEqual(relayed(news), [b"[news.eu] <" + sender.identity + b"> rain"])
        self.assertEqual(relayed(plain), [])

    def test_notPublishedAgain(self) -> None:
        """
        Lines from other hubs are delivered, never published again: one
        message on the bus per local publication.
        """
        a, b, c = self.hubs
        a.connect().send(b"one\n")
        b.connect().send(b"two\n")
        self.assertEqual(len(self.bus.sent), 2)

    def test_duplicatesDropped(self) -> None:
        """
        A message delivered twice (or replayed) reaches subscribers once; the
        copy is counted as a duplicate.
        """
        self.bus.copies = 2
        a, b = self.hubs[:2]
        sender, receiver = a.connect(), b.connect()
        receiver.new()
        sender.send(b"x\ny\n")
        self.assertEqual(len(relayed(receiver)), 2)
        self.assertEqual(dropped(b.metrics, "duplicate"), 2)
        channel, payload = self.bus.sent[0]
        b.backplane.messageReceived(channel, payload)  # type: ignore[attr-defined]
        self.assertEqual(relayed(receiver), [])
        self.assertEqual(dropped(b.metrics, "duplicate"), 4)

    def test_gapsCounted(self) -> None:
        """
        Skipped message numbers are counted as gaps; a late message older
        than one already delivered is dropped, so order is kept.
        """
        b = self.hubs[1]
        receiver = b.connect()
        receiver.new()
        deliver = b.backplane.messageReceived  # type: ignore[attr-defined]
        deliver(b"netdemo.chat", encodeMessage(b"other", 1, b"p", [b"1"]))
        deliver(b"netdemo.chat", encodeMessage(b"other", 4, b"p", [b"4"]))
        deliver(b"netdemo.chat", encodeMessage(b"other", 3, b"p", [b"3"]))
        deliver(b"netdemo.chat", encodeMessage(b"other", 5, b"p", [b"5"]))
        self.assertEqual(relayed(receiver), [b"<p> 1", b"<p> 4", b"<p> 5"])
        self.assertEqual(
            b.metrics.value("netdemo_backplane_gaps_total", service="backplane"), 2
        )
        self.assertEqual(dropped(b.metrics, "duplicate"), 1)

    def test_external(self) -> None:
        """
        A plain payload (as C{redis-cli PUBLISH} sends) reaches every hub's
        subscribers.
        """
        clients = [hub.connect() for hub in self.hubs]
        for client in clients:
            client.new()
        self.bus.publish(b"netdemo.chat", b"<ops> maintenance at 3")
        self.bus.publish(b"netdemo.chat", b"plain")
        for client in clients:
            self.assertEqual(
                relayed(client), [b"<ops> maintenance at 3", b"<redis> plain"]
            )

    def test_refused(self) -> None:
        """
        Messages on channels outside the prefix or with a bad topic, and
        lines longer than the hub takes, are dropped and counted.
        """
        b = self.hubs[1]
        receiver = b.connect()
        receiver.new()
        self.bus.publish(b"other.chat", b"x")
        self.bus.publish(b"netdemo.bad topic", b"x")
        self.bus.publish(b"netdemo.", b"x")
        self.bus.publish(b"netdemo.chat", b"netdemo/1 n x i\ny")
        self.bus.publish(b"netdemo.chat", b"ok\n" + b"z" * 5000)
        self.assertEqual(relayed(receiver), [b"<redis> ok"])
        self.assertEqual(dropped(b.metrics, "bad-message"), 4)
        self.assertEqual(dropped(b.metrics, "too-long"), 1)

    def test_historyHasRemoteLines(self) -> None:
        """
        A hub's history holds the lines it got from other hubs.
        """
        a, b = self.hubs[:2]
        sender = a.connect()
        sender.send(b"remember me\n")
        late = b.connect()
        late.new()
        late.send(b"/history\n")
        self.assertEqual(late.new()[0], b"<" + sender.identity + b"> remember me")

    def test_presenceStaysLocal(self) -> None:
        """
        Join and leave notices do not cross.
        """
        a, b = self.hubs[:2]
        watcher = b.connect()
        watcher.new()
        a.connect().transport.loseConnection()
        self.assertEqual(watcher.new(), [])

    def test_busDown(self) -> None:
        """
        While the bus is down, local delivery goes on, lines for other hubs
        are dropped and counted, and the gauge says so; then it resumes.
        """
        a, b = self.hubs[:2]
        sender, localPeer, remote = a.connect(), a.connect(), b.connect()
        localPeer.new()
        remote.new()
        self.bus.up = False
        sender.send(b"during\n")
        self.assertEqual(len(relayed(localPeer)), 1)
        self.assertEqual(relayed(remote), [])
        self.assertEqual(dropped(a.metrics, "down"), 1)
        self.assertEqual(
            a.metrics.value("netdemo_backplane_up", service="backplane"), 0
        )
        self.bus.up = True
        sender.send(b"after\n")
        self.assertEqual(relayed(remote), [b"<" + sender.identity + b"> after"])
        self.assertEqual(
            a.metrics.value("netdemo_backplane_up", service="backplane"), 1
        )


class FakePublisher:
    """
    Stands in for the publishing Redis connection: records commands and
    leaves their answers to the test.
    """

    connected = 1

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.answers: list[Deferred[Any]] = []

    def execute_command(self, *args: Any) -> Deferred[Any]:
        self.commands.append(args)
        d: Deferred[Any] = Deferred()
        self.answers.append(d)
        return d

    def answer(self, count: int) -> None:
        """
        Answer the first C{count} unanswered commands.
        """
        answers, self.answers = self.answers[:count], self.answers[count:]
        for d in answers:
            d.callback(1)


class RedisBackplaneTests(SynchronousTestCase):
    """
    L{RedisBackplane}'s queue and state, with fake connections.
    """

    def setUp(self) -> None:
        self.metrics = MemoryMetrics()
        self.url = parseBackplaneURL("redis://127.0.0.1:1?prefix=p")
        self.clock = MemoryReactorClock()
        self.backplane = RedisBackplane(
            self.url, self.metrics, self.clock, BackplaneLimits()
        )
        self.received: list[tuple[bytes, bytes, list[bytes]]] = []
        self.backplane.attach(lambda *args: self.received.append(args))
        # Any trial test case will do; the stub asks for the asynchronous one.
        self.log = EventLoggingObserver.createWithCleanup(
            self,  # type: ignore[arg-type]
            globalLogPublisher,
        )

    def events(self, name: str) -> list[Any]:
        """
        The logged events named C{name}.
        """
        return [e for e in self.log if e.get("event") == name]

    def test_downAtStart(self) -> None:
        """
        Before Redis answers, lines are dropped as C{down}, not queued.
        """
        self.backplane.publish(b"chat", b"me", [b"a", b"b"])
        self.assertEqual(dropped(self.metrics, "down"), 2)
        self.assertEqual(self.backplane.queuedBytes, 0)

    def test_windowAndQueue(self) -> None:
        """
        At most C{WINDOW} commands are unanswered; the rest wait, in order;
        past C{maxQueue} bytes waiting or unanswered, new lines are dropped
        as C{queue-full}.  Answers release the queue.
        """
        fits = 5
        # Numbers of 7 digits: every message has the same size.
        size = len(encodeMessage(self.backplane.node, 10**6, b"me", [b"x"]))
        self.metrics = MemoryMetrics()
        self.backplane = RedisBackplane(
            self.url,
            self.metrics,
            self.clock,
            BackplaneLimits(maxQueue=(backplane.WINDOW + fits) * size),
        )
        self.backplane.seq = 10**6
        publisher = FakePublisher()
        self.backplane.publisherReady(publisher)
        for i in range(backplane.WINDOW):
            self.backplane.publish(b"chat", b"me", [b"%d" % (i % 10)])
        self.assertEqual(len(publisher.commands), backplane.WINDOW)
        self.assertEqual(self.backplane.queuedBytes, backplane.WINDOW * size)
        for i in range(fits + 3):
            self.backplane.publish(b"chat", b"me", [b"%d" % i])
        self.assertEqual(len(publisher.commands), backplane.WINDOW)
        self.assertEqual(self.backplane.queuedBytes, (backplane.WINDOW + fits) * size)
        self.assertEqual(dropped(self.metrics, "queue-full"), 3)
        publisher.answer(backplane.WINDOW)
        self.assertEqual(self.backplane.queuedBytes, fits * size)
        publisher.answer(fits)
        self.assertEqual(self.backplane.queuedBytes, 0)
        self.assertEqual(len(publisher.commands), backplane.WINDOW + fits)
        payloads = [args[2] for args in publisher.commands]
        seqs = [int(p.split(b" ", 3)[2]) for p in payloads]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(publisher.commands[0][:2], ("PUBLISH", b"p.chat"))
        self.assertEqual(
            self.metrics.value(
                "netdemo_backplane_sent_lines_total", service="backplane"
            ),
            backplane.WINDOW + fits,
        )

    def test_errorReply(self) -> None:
        """
        A command Redis refuses counts its lines as C{error}.
        """
        publisher = FakePublisher()
        self.backplane.publisherReady(publisher)
        self.backplane.publish(b"chat", b"me", [b"a"])
        publisher.answers.pop().errback(Exception("ERR"))
        self.assertEqual(dropped(self.metrics, "error"), 1)

    def test_outageLoggedOnce(self) -> None:
        """
        The backplane is up once both connections work; losing either, and
        every failed attempt after that, is one C{backplane_down} event and
        one outage; the next success is logged again.
        """
        publisher, subscriber = FakePublisher(), object()
        self.backplane.publisherReady(publisher)
        self.assertFalse(self.backplane.isUp())
        self.backplane.subscribed(subscriber)
        self.assertTrue(self.backplane.isUp())
        self.assertEqual(len(self.events("backplane_up")), 1)
        self.backplane.publish(b"chat", b"me", [b"in flight"])
        for _ in range(backplane.WINDOW):
            self.backplane.publish(b"chat", b"me", [b"queued"])
        reason = Failure(ConnectionError("gone"))
        self.backplane.connectionLost(publisher, reason)
        self.assertEqual(dropped(self.metrics, "down"), 1)
        publisher.answers.pop(0).errback(reason)
        self.assertEqual(dropped(self.metrics, "down"), 2)
        self.backplane.connectionLost(subscriber, reason)
        for _ in range(5):
            self.backplane.connectionFailed(Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.events("backplane_down")), 1)
        self.assertEqual(
            self.metrics.value("netdemo_backplane_outages_total", service="backplane"),
            1,
        )
        self.assertEqual(
            self.metrics.value("netdemo_backplane_up", service="backplane"), 0
        )
        self.backplane.publisherReady(FakePublisher())
        self.backplane.subscribed(subscriber)
        self.assertEqual(len(self.events("backplane_up")), 2)
        self.assertNotIn("gone", str(self.events("backplane_up")))

    def test_interface(self) -> None:
        """
        Both backplanes provide L{IBackplane}.
        """
        self.assertTrue(verifyObject(IBackplane, self.backplane))
        self.assertTrue(
            verifyObject(IBackplane, MemoryBackplane(MemoryBus(), MemoryMetrics()))
        )

    def test_statusDocument(self) -> None:
        """
        The backplane's state shows in C{/status.json}, as the C{backplane}
        service.
        """
        self.backplane.publisherReady(FakePublisher())
        self.backplane.subscribed(object())
        doc = statusDocument(self.metrics.samples(), ServerInfo("0", 0.0), 1.0)
        [service] = [s for s in doc["services"] if s["name"] == "backplane"]
        values = {m["series"]: m["value"] for m in service["metrics"]}
        self.assertEqual(values['netdemo_backplane_up{service="backplane"}'], 1)
        self.assertIn(
            'netdemo_backplane_dropped_total{reason="queue-full",service="backplane"}',
            values,
        )

    def test_messageReceived(self) -> None:
        """
        Messages from Redis reach the hub; this node's own are dropped
        silently.
        """
        node = self.backplane.node
        self.backplane.messageReceived(b"p.a.b", encodeMessage(b"n2", 1, b"i", [b"x"]))
        self.backplane.messageReceived(b"p.chat", encodeMessage(node, 7, b"i", [b"y"]))
        self.assertEqual(self.received, [(b"a.b", b"i", [b"x"])])
        self.assertEqual(sum(self.backplane.dropped.values()), 0)


class OptionsTests(SynchronousTestCase):
    """
    The backplane's command line.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def path(self, name: str, content: str | None) -> str:
        """
        A file in a temporary directory, with C{content} unless C{None}.
        """
        path = os.path.join(self.directory, name)
        if content is not None:
            with open(path, "w") as f:
                f.write(content)
        return path

    def parse(self, *args: str) -> tap.Options:
        """
        Parse C{args}.
        """
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_default(self) -> None:
        """
        No backplane unless asked for.
        """
        self.assertIsNone(self.parse()["backplane"])

    def test_url(self) -> None:
        """
        C{--backplane} takes a URL; the default services include the hub.
        """
        options = self.parse("--backplane", "redis://10.0.0.5:6380/2?prefix=eu")
        url = options["backplane"]
        self.assertEqual(
            (url.host, url.port, url.db, url.prefix), ("10.0.0.5", 6380, 2, "eu")
        )
        self.assertEqual(options["backplane-queue"], 1 << 20)

    def test_passwordFile(self) -> None:
        """
        C{--backplane-password-file} reads the first line of a file.
        """
        path = self.path("password", "s3cret\nignored\n")
        options = self.parse(
            "--backplane", "redis://h", "--backplane-password-file", path
        )
        self.assertEqual(options["backplane"].password, "s3cret")

    def test_errors(self) -> None:
        """
        Bad combinations are one line naming the value.
        """
        empty = self.path("empty", "\n")
        cases = [
            (["--backplane", "http://h"], "is not a redis:// or rediss:// URL"),
            (["--backplane-password-file", empty], "needs --backplane"),
            (["--tcp", "0", "--backplane", "redis://h"], "needs a --pubsub listener"),
            (
                [
                    "--backplane",
                    "redis://:Zq9-secret@h",
                    "--backplane-password-file",
                    empty,
                ],
                "the URL has a password too",
            ),
            (["--backplane", "redis://h", "--backplane-password-file", empty], "empty"),
            (
                [
                    "--backplane",
                    "redis://h",
                    "--backplane-password-file",
                    self.path("none", None),
                ],
                "cannot read it",
            ),
        ]
        for args, message in cases:
            with self.assertRaises(usage.UsageError) as e:
                self.parse(*args)
            self.assertIn(message, str(e.exception), args)
            # The password never shows (the temporary path may hold any
            # letters, so look for the whole password).
            self.assertNotIn("Zq9-secret", str(e.exception))

    def test_makeService(self) -> None:
        """
        With C{--backplane}, the daemon has a C{backplane} service and the hub
        publishes to it.
        """
        options = self.parse(
            "--pubsub", "tcp:0", "--backplane", "redis://127.0.0.1:1?prefix=x"
        )
        top = tap.makeService(options, MemoryReactorClock())
        service: Any = top.getServiceNamed("backplane")
        self.assertIsInstance(service, RedisBackplane)
        self.assertEqual(service.prefix, b"x")
        hub: Any = top.getServiceNamed("pubsub")
        self.assertIs(hub.factory.backplane, service)


class ImportTests(SynchronousTestCase):
    """
    The backplane's import-time footprint, and its Redis connections.
    """

    def test_noReactorAtImport(self) -> None:
        """
        Importing L{netdemo.backplane} and L{netdemo.tap} and parsing
        C{--backplane} (as C{twistd} does before it installs the reactor
        asked for with C{--reactor}) imports neither C{txredisapi} nor the
        global reactor.
        """
        code = (
            "import sys, netdemo.backplane, netdemo.tap\n"
            "netdemo.tap.Options().parseOptions(['--backplane', 'redis://h'])\n"
            "print(sorted(m for m in ('txredisapi', 'twisted.internet.reactor')"
            " if m in sys.modules))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        self.assertEqual(result.stdout.strip(), "[]", result.stderr)

    def test_factories(self) -> None:
        """
        At start, the backplane builds its two connections' factories, for
        its URL, bytes in and out.
        """
        url = parseBackplaneURL("redis://u:pw@127.0.0.1:1/3?prefix=p")
        redis = RedisBackplane(url, MemoryMetrics(), MemoryReactorClock())
        makePublisher, makeSubscriber = backplane._redisFactories()
        self.assertIs(backplane._redisFactories()[0], makePublisher)
        for factory in (makePublisher(redis), makeSubscriber(redis)):
            self.assertIs(factory.backplane, redis)
            self.assertEqual(
                (factory.charset, factory.convertNumbers, factory.password),
                (None, False, "pw"),
            )
            self.assertEqual(factory.username, "u")
        self.assertEqual(makePublisher(redis).dbid, 3)
