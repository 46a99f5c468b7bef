"""
Unit tests for L{netdemo.pubsub}: the protocol, the commands, the limits
and the slow-consumer policies, on in-memory transports and a fake clock.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from netdemo.hubwire import DEFAULT_TOPIC, escapeControls
from netdemo.limits import ConnectionLimits, HubLimits
from tests.pubsubhelpers import FakeClient, FakeHub
from tests.test_hubwire import chunked


def messages(client: FakeClient) -> list[bytes]:
    """
    The relayed lines a client got since the last call (notices and
    command answers left out).
    """
    return [line for line in client.new() if line.startswith((b"<", b"[")) or not line]


class LimitsTests(SynchronousTestCase):
    """
    The hub's limits.
    """

    def test_limitsValidated(self) -> None:
        """
        L{HubLimits} refuses nonsense values.
        """
        self.assertRaises(ValueError, HubLimits, maxLine=0)
        self.assertRaises(ValueError, HubLimits, slowPolicy="ignore")
        self.assertRaises(ValueError, HubLimits, history=-1)


class ProtocolTests(SynchronousTestCase):
    """
    The protocol as a user sees it.
    """

    def setUp(self) -> None:
        # Each presence notice at once (PresenceTests has the coalescing).
        self.hub = FakeHub(HubLimits(presenceInterval=0))
        self.addCleanup(self.hub.stop)

    def test_greeting(self) -> None:
        """
        A new client gets one greeting line with its identity, its number
        and how many are connected.
        """
        self.hub.connect()
        b = self.hub.connect()
        self.assertEqual(
            b.new(),
            [
                b"* welcome to netdemo pubsub, you are 127.0.0.1:40002 "
                b"(client #2, 2 connected)"
            ],
        )

    def test_relayToOthersNotSelf(self) -> None:
        """
        A plain line reaches every other client as C{<identity> text}, and
        not its sender.
        """
        a, b, c = (self.hub.connect() for _ in range(3))
        for client in (a, b, c):
            client.new()
        a.send(b"hello world\n")
        self.assertEqual(b.new(), [b"<127.0.0.1:40001> hello world"])
        self.assertEqual(c.new(), [b"<127.0.0.1:40001> hello world"])
        self.assertEqual(a.new(), [])

    def test_oneWritePerSubscriberPerRead(self) -> None:
        """
        All the lines of one read for one topic reach each subscriber in one
        write; a read for two topics in one write per topic.
        """
        a, b, c = (self.hub.connect() for _ in range(3))
        c.send(b"/sub t\n")
        before = b.transport.writes, c.transport.writes
        a.send(b"".join(b"line %d\n" % i for i in range(100)))
        self.assertEqual(b.transport.writes, before[0] + 1)
        self.assertEqual(len(messages(b)), 100)
        a.send(b"x\ny\n/pub t 1\n/pub t 2\n")
        self.assertEqual(b.transport.writes, before[0] + 2)
        self.assertEqual(c.transport.writes, before[1] + 3)

    def test_echoOn(self) -> None:
        """
        With C{/echo on} the sender gets its own lines back.
        """
        a = self.hub.connect()
        a.new()
        a.send(b"/echo on\nmine\n/echo off\nnot mine\n")
        self.assertEqual(
            a.new(), [b"+OK echo on", b"<127.0.0.1:40001> mine", b"+OK echo off"]
        )

    def test_crlfAndLf(self) -> None:
        """
        Lines may end in LF or CRLF; the CR is not relayed.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.new()
        a.send(b"one\r\ntwo\nthree\r\n")
        self.assertEqual(
            messages(b),
            [
                b"<127.0.0.1:40001> one",
                b"<127.0.0.1:40001> two",
                b"<127.0.0.1:40001> three",
            ],
        )

    def test_controlsEscapedUtf8Kept(self) -> None:
        """
        Control characters are escaped in relayed text; tabs and any other
        bytes, invalid UTF-8 too, pass unchanged.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.new()
        a.send(b"bell\x07 tab\t caf\xc3\xa9 \xff lone\rcr\n")
        self.assertEqual(
            messages(b),
            [b"<127.0.0.1:40001> bell\\x07 tab\t caf\xc3\xa9 \xff lone\\x0dcr"],
        )

    def test_blankLinesIgnored(self) -> None:
        """
        Blank lines publish nothing.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.new()
        a.send(b"\n\r\nx\n\n")
        self.assertEqual(messages(b), [b"<127.0.0.1:40001> x"])

    def test_doubleSlash(self) -> None:
        """
        A line starting with C{//} publishes the text after the first slash.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.new()
        a.send(b"//etc/passwd is a path\n")
        self.assertEqual(messages(b), [b"<127.0.0.1:40001> /etc/passwd is a path"])

    def test_nick(self) -> None:
        """
        C{/nick} renames, announces the change, and shows in later lines;
        a taken or malformed nickname is refused with a reason.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.new()
        a.new()
        a.send(b"/nick alice\nhi\n")
        self.assertEqual(a.new(), [b"+OK nick alice"])
        self.assertEqual(b.new(), [b"* 127.0.0.1:40001 is now alice", b"<alice> hi"])
        b.send(b"/nick alice\n/nick 9lives\n/nick " + b"x" * 33 + b"\n/nick b:c\n")
        answers = b.new()
        self.assertEqual(answers[0], b"-ERR nick alice is taken")
        self.assertEqual(len(answers), 4)
        for answer in answers[1:]:
            self.assertTrue(answer.startswith(b"-ERR bad nick"), answer)

    def test_nickFreedOnLeave(self) -> None:
        """
        A nickname can be taken again once its holder left.
        """
        a, b = self.hub.connect(), self.hub.connect()
        a.send(b"/nick alice\n/quit\n")
        b.new()
        b.send(b"/nick alice\n")
        self.assertEqual(b.new(), [b"+OK nick alice"])

    def test_topics(self) -> None:
        """
        C{/sub} takes NATS-style patterns; C{/pub} lines show their topic,
        reach only matching subscribers, and are each answered C{+OK};
        C{/unsub} stops them.
        """
        a, b, c = (self.hub.connect() for _ in range(3))
        b.send(b"/sub lab.*.temp\n")
        c.send(b"/sub lab.>\n")
        self.assertEqual(b.new()[-1], b"+OK subscribed to lab.*.temp")
        self.assertEqual(c.new()[-1], b"+OK subscribed to lab.>")
        a.send(b"/pub lab.rack1.temp 21.5\n/pub lab.rack1.fan.speed 3000\n")
        self.assertEqual(a.new()[-2:], [b"+OK", b"+OK"])
        self.assertEqual(b.new(), [b"[lab.rack1.temp] <127.0.0.1:40001> 21.5"])
        self.assertEqual(
            c.new(),
            [
                b"[lab.rack1.temp] <127.0.0.1:40001> 21.5",
                b"[lab.rack1.fan.speed] <127.0.0.1:40001> 3000",
            ],
        )
        c.send(b"/unsub lab.>\n/unsub lab.>\n")
        self.assertEqual(
            c.new(), [b"+OK unsubscribed from lab.>", b"-ERR not subscribed to lab.>"]
        )
        a.send(b"/pub lab.rack1.temp 22\n")
        self.assertEqual(c.new(), [])
        self.assertEqual(len(b.new()), 1)

    def test_unsubDefault(self) -> None:
        """
        A client that unsubscribes from the default topic gets no plain
        lines.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.send(b"/unsub " + DEFAULT_TOPIC + b"\n")
        b.new()
        a.send(b"hello\n")
        self.assertEqual(b.new(), [])

    def test_badArguments(self) -> None:
        """
        Every malformed command gets one error line, never silence.
        """
        a = self.hub.connect()
        a.new()
        bad = [
            b"/sub",
            b"/sub a..b",
            b"/sub a.>.b",
            b"/pub",
            b"/pub nospace",
            b"/pub bad..topic text",
            b"/echo maybe",
            b"/history x y z",
            b"/who a..b",
            b"/frobnicate",
            b"/",
            b"/n1ck x",
        ]
        a.send(b"\n".join(bad) + b"\n")
        answers = a.new()
        self.assertEqual(len(answers), len(bad), answers)
        for line, answer in zip(bad, answers, strict=False):
            self.assertTrue(answer.startswith(b"-ERR "), (line, answer))
        self.assertEqual(answers[9], b"-ERR unknown command /frobnicate")

    def test_pingWhoTopics(self) -> None:
        """
        C{/ping} answers a pong; C{/who} lists identities (of a topic's
        subscribers when one is named); C{/topics} lists subscriptions and
        topics with history.
        """
        a, b = self.hub.connect(), self.hub.connect()
        a.new()
        b.send(b"/nick bob\n/sub x.y\n")
        a.send(b"/ping\n/who\n/who x.y\n/pub x.y hi\n/topics\n")
        self.assertEqual(
            a.new(),
            [
                b"* 127.0.0.1:40002 is now bob",
                b"+OK pong",
                b"+OK who 2: 127.0.0.1:40001 bob",
                b"+OK who 1: bob",
                b"+OK",
                b"+OK topics subscribed: chat; with history: x.y",
            ],
        )

    def test_history(self) -> None:
        """
        C{/history [N] [TOPIC]} replays the last lines of a topic from a
        ring buffer of C{history} lines, then one OK line.
        """
        hub = FakeHub(HubLimits(history=3))
        self.addCleanup(hub.stop)
        a, b = hub.connect(), hub.connect()
        a.send(b"1\n2\n3\n4\n/pub t.x five\n")
        b.new()
        b.send(b"/history\n/history 2\n/history 10 t.x\n/history t.none\n")
        p = b"<127.0.0.1:40001> "
        self.assertEqual(
            b.new(),
            [
                p + b"2",
                p + b"3",
                p + b"4",
                b"+OK history 3 lines, last seq 4",
                p + b"3",
                p + b"4",
                b"+OK history 2 lines, last seq 4",
                b"[t.x] " + p + b"five",
                b"+OK history 1 lines, last seq 1",
                b"+OK history 0 lines, last seq 0",
            ],
        )

    def test_historyOff(self) -> None:
        """
        With C{history=0} nothing is kept.
        """
        hub = FakeHub(HubLimits(history=0))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.send(b"1\n/history\n")
        self.assertEqual(a.new()[-1], b"+OK history 0 lines, last seq 1")

    def test_seq(self) -> None:
        """
        C{/seq on} makes a client get each line with its topic's sequence
        number (C{#SEQ LINE}), counted per topic from 1 and per batch;
        other clients get the lines as before; C{/seq off} ends it.
        """
        hub = FakeHub(HubLimits(history=3))
        self.addCleanup(hub.stop)
        a, b, c = hub.connect(), hub.connect(), hub.connect()
        c.send(b"/sub t.x\n/sub t.y\n")
        a.new(), b.new(), c.new()
        epoch = hub.factory.history.epoch.encode()
        b.send(b"/seq on\n/sub t.x\n")
        self.assertEqual(
            b.new(), [b"+OK seq on, epoch " + epoch, b"+OK subscribed to t.x"]
        )
        a.send(b"one\n")
        a.send(b"two\nthree\n/pub t.x four\n/pub t.y only c\n")
        p = b"<127.0.0.1:40001> "
        self.assertEqual(
            b.new(),
            [
                b"#1 " + p + b"one",
                b"#2 " + p + b"two",
                b"#3 " + p + b"three",
                b"#1 [t.x] " + p + b"four",
            ],
        )
        self.assertEqual(
            c.new(),
            [
                p + b"one",
                p + b"two",
                p + b"three",
                b"[t.x] " + p + b"four",
                b"[t.y] " + p + b"only c",
            ],
        )
        b.send(b"/history 2\n/seq off\n/seq maybe\n")
        a.send(b"five\n")
        self.assertEqual(
            b.new(),
            [
                b"#2 " + p + b"two",
                b"#3 " + p + b"three",
                b"+OK history 2 lines, last seq 3",
                b"+OK seq off",
                b"-ERR usage: /seq on|off",
                p + b"five",
            ],
        )
        self.assertNotIn(b.protocol, hub.factory.sequenced)

    def test_seqEcho(self) -> None:
        """
        A sender with C{/echo on} and C{/seq on} gets its own lines
        numbered; a client with C{/seq on} that leaves is forgotten.
        """
        hub = FakeHub(HubLimits(history=3))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.send(b"/echo on\n/seq on\n")
        a.new()
        a.send(b"x\n")
        self.assertEqual(a.new(), [b"#1 <127.0.0.1:40001> x"])
        a.send(b"/quit\n")
        self.assertEqual(hub.factory.sequenced, set())

    def test_historySince(self) -> None:
        """
        C{/history since SEQ [TOPIC]} replays the lines numbered after SEQ
        and names the last number and the epoch; when history no longer
        reaches back to SEQ + 1 a gap notice comes first.
        """
        hub = FakeHub(HubLimits(history=3))
        self.addCleanup(hub.stop)
        a, b = hub.connect(), hub.connect()
        a.send(b"1\n2\n3\n4\n5\n/pub t.x six\n")
        b.new()
        epoch = hub.factory.history.epoch.encode()
        p = b"<127.0.0.1:40001> "
        b.send(b"/history since 3\n/history since 5\n/history since 0 t.x\n")
        self.assertEqual(
            b.new(),
            [
                p + b"4",
                p + b"5",
                b"+OK history 2 lines since 3, last seq 5, epoch " + epoch,
                b"+OK history 0 lines since 5, last seq 5, epoch " + epoch,
                b"[t.x] " + p + b"six",
                b"+OK history 1 lines since 0, last seq 1, epoch " + epoch,
            ],
        )
        b.send(b"/seq on\n/history since 1\n/history since 9 t.none\n")
        self.assertEqual(
            b.new(),
            [
                b"+OK seq on, epoch " + epoch,
                b"* gap: history of chat starts at seq 3",
                b"#3 " + p + b"3",
                b"#4 " + p + b"4",
                b"#5 " + p + b"5",
                b"+OK history 3 lines since 1, last seq 5, epoch " + epoch,
                b"* gap: history of t.none starts at seq 1",
                b"+OK history 0 lines since 9, last seq 0, epoch " + epoch,
            ],
        )

    def test_historySinceUsage(self) -> None:
        """
        A sequence number of more than 18 digits, or extra words, are usage
        errors; C{since} not followed by a number is a topic.
        """
        hub = FakeHub(HubLimits(history=3))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.new()
        a.send(
            b"/history since " + b"9" * 19 + b"\n"
            b"/history since 1 t.x extra\n"
            b"/history since 1 bad..topic\n"
            b"/history since\n"
            b"/history since " + b"9" * 18 + b"\n"
        )
        usage = b"-ERR usage: /history since SEQ[@EPOCH] [TOPIC]"
        self.assertEqual(
            a.new(),
            [
                usage,
                usage,
                usage,
                b"+OK history 0 lines, last seq 0",
                b"* gap: history of chat starts at seq 1",
                b"+OK history 0 lines since %s, last seq 0, epoch %s"
                % (b"9" * 18, hub.factory.history.epoch.encode()),
            ],
        )

    def test_historySinceEpoch(self) -> None:
        """
        C{/history since SEQ@EPOCH} of the hub's epoch is C{/history since
        SEQ}; of another epoch, the position is gone: a notice, then all
        the history there is; an epoch that is no word is a usage error.
        """
        hub = FakeHub(HubLimits(history=3))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.new()
        a.send(b"one\ntwo\n")
        epoch = hub.factory.history.epoch.encode()
        a.send(
            b"/history since 1@" + epoch + b"\n"
            b"/history since 1@0ther\n"
            b"/history since 1@bad-epoch\n"
        )
        prefix = b"<%s> " % a.identity
        self.assertEqual(
            a.new(),
            [
                prefix + b"two",
                b"+OK history 1 lines since 1, last seq 2, epoch " + epoch,
                b"* gap: epoch 0ther is gone",
                prefix + b"one",
                prefix + b"two",
                b"+OK history 2 lines since 1, last seq 2, epoch " + epoch,
                b"-ERR usage: /history since SEQ[@EPOCH] [TOPIC]",
            ],
        )

    def test_replayOnJoin(self) -> None:
        """
        With C{replayOnJoin=N} a new client gets the default topic's last N
        lines after its greeting.
        """
        hub = FakeHub(HubLimits(replayOnJoin=2))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.send(b"1\n2\n3\n")
        b = hub.connect()
        lines = b.new()
        self.assertEqual(lines[1:], [b"<127.0.0.1:40001> 2", b"<127.0.0.1:40001> 3"])

    def test_presence(self) -> None:
        """
        Joins and leaves are announced on the default topic, not to the
        client concerned.
        """
        a = self.hub.connect()
        a.new()
        b = self.hub.connect()
        self.assertEqual(a.new(), [b"* 127.0.0.1:40002 joined (2 connected)"])
        b.send(b"/quit\n")
        self.assertEqual(b.new()[-1], b"+OK bye")
        self.assertTrue(b.closed)
        self.assertEqual(a.new(), [b"* 127.0.0.1:40002 left (1 connected)"])

    def test_noPresence(self) -> None:
        """
        With presence off there are no join, leave or nick notices.
        """
        hub = FakeHub(HubLimits(presence=False))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.new()
        b = hub.connect()
        b.send(b"/nick bob\n/quit\n")
        self.assertEqual(a.new(), [])

    def test_bareClose(self) -> None:
        """
        A bare C{close} line, as in the classic broadcast example, says
        goodbye and closes; lines before it are still relayed.
        """
        a, b = self.hub.connect(), self.hub.connect()
        b.new()
        a.send(b"last words\nclose\nnever sent\n")
        self.assertTrue(a.closed)
        self.assertEqual(a.new()[-1], b"+OK bye")
        self.assertEqual(messages(b), [b"<127.0.0.1:40001> last words"])

    def test_maxLine(self) -> None:
        """
        A line longer than C{maxLine} gets an error line and closes the
        connection; nothing of it is relayed, the complete lines before it
        are; the refusal is counted.
        """
        hub = FakeHub(HubLimits(maxLine=10))
        self.addCleanup(hub.stop)
        a, b = hub.connect(), hub.connect()
        b.new()
        a.send(b"0123456789\n" + b"x" * 11 + b"\nafter\n")
        self.assertTrue(a.closed)
        self.assertEqual(a.new()[-1], b"-ERR line longer than 10 bytes, closing")
        self.assertEqual(messages(b), [b"<127.0.0.1:40001> 0123456789"])
        self.assertEqual(
            hub.metrics.value(
                "netdemo_refused_total", service="pubsub", reason="max-line"
            ),
            1,
        )

    def test_maxLinePartial(self) -> None:
        """
        An overlong line is refused as soon as its partial length shows it,
        without waiting for its end.
        """
        hub = FakeHub(HubLimits(maxLine=10))
        self.addCleanup(hub.stop)
        a = hub.connect()
        for byte in b"y" * 11:
            a.send(bytes([byte]))
        self.assertFalse(a.closed)
        a.send(b"y")
        self.assertTrue(a.closed)

    def test_lineTimeoutIgnoresTrickle(self) -> None:
        """
        A partial line must complete within C{lineTimeout} even if bytes
        keep trickling in; complete lines reset the clock.
        """
        hub = FakeHub(HubLimits(lineTimeout=10.0), ConnectionLimits(idleTimeout=0))
        self.addCleanup(hub.stop)
        a = hub.connect()
        a.send(b"partial")
        for _ in range(9):
            hub.clock.advance(1.0)
            a.send(b".")
        self.assertFalse(a.closed)
        hub.clock.pump([0.5] * 5)
        self.assertTrue(a.closed)
        self.assertEqual(a.new()[-1], b"-ERR line not completed in time, closing")

        b = hub.connect()
        for _ in range(30):
            b.send(b"line\nnext")
            hub.clock.advance(1.0)
        self.assertFalse(b.closed)

    def test_idleTimeout(self) -> None:
        """
        The idle timeout (from L{netdemo.limits}) closes a silent client, and
        counts it.
        """
        hub = FakeHub(limits=ConnectionLimits(idleTimeout=10.0))
        self.addCleanup(hub.stop)
        a = hub.connect()
        hub.clock.pump([1.0] * 9)
        self.assertFalse(a.closed)
        hub.clock.pump([1.0] * 3)
        self.assertTrue(a.closed)
        self.assertEqual(
            hub.metrics.value(
                "netdemo_refused_total", service="pubsub", reason="idle-timeout"
            ),
            1,
        )

    def test_listenerReceivingIsNotIdle(self) -> None:
        """
        A subscriber that never sends but keeps being sent lines is not
        idle; once nothing reaches it either, it is closed.
        """
        hub = FakeHub(limits=ConnectionLimits(idleTimeout=10.0))
        self.addCleanup(hub.stop)
        listener = hub.connect()
        talker = hub.connect()
        for _ in range(30):
            hub.clock.advance(1.0)
            talker.send(b"still here\n")
        self.assertFalse(listener.closed)
        # Then silence both ways: one of them is closed first, whichever the
        # sweep reaches first; the other is sent that one's leave notice,
        # which restarts its idle period once more.
        hub.clock.pump([1.0] * 12)
        self.assertTrue(listener.closed or talker.closed)
        hub.clock.pump([1.0] * 12)
        self.assertTrue(listener.closed and talker.closed)

    def test_refusedGetsReason(self) -> None:
        """
        A connection over C{maxConnections} gets one reason line and is
        closed.
        """
        hub = FakeHub(limits=ConnectionLimits(maxConnections=1))
        self.addCleanup(hub.stop)
        hub.connect()
        from twisted.internet.testing import StringTransport

        refused = hub.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9))
        transport = StringTransport()
        refused.makeConnection(transport)
        self.assertEqual(transport.value(), b"-ERR refused: max-connections\n")
        self.assertTrue(transport.disconnecting)

    def test_shutdownDrain(self) -> None:
        """
        A drain tells every client the server is shutting down and closes.
        """
        a = self.hub.connect()
        d = self.hub.factory.drain()
        self.assertEqual(a.new()[-1], b"* server shutting down")
        self.assertTrue(a.closed)
        self.successResultOf(d)

    def test_metrics(self) -> None:
        """
        Published and delivered line totals are reported.
        """
        a, b, c = (self.hub.connect() for _ in range(3))
        a.send(b"1\n2\n")
        m = self.hub.metrics
        self.assertEqual(
            m.value("netdemo_pubsub_published_lines_total", service="pubsub"), 2
        )
        self.assertEqual(
            m.value("netdemo_pubsub_delivered_lines_total", service="pubsub"), 4
        )


class SlowConsumerTests(SynchronousTestCase):
    """
    The slow-consumer policies, driven by the pause and resume calls that a
    real transport makes.
    """

    def test_disconnectOverMaxPending(self) -> None:
        """
        A paused subscriber is disconnected once more than C{maxPending}
        bytes were queued for it; the publisher and the others go on.
        """
        hub = FakeHub(HubLimits(maxPending=1000, writeDeadline=0))
        self.addCleanup(hub.stop)
        pub, slow, fast = hub.connect(), hub.connect(), hub.connect()
        fast.new()
        slow.protocol.pauseProducing()
        line = b"x" * 99 + b"\n"
        sent = 0
        while not slow.closed and sent < 20:
            pub.send(line)
            sent += 1
        self.assertTrue(slow.closed)
        self.assertTrue(slow.transport.aborted)
        self.assertFalse(pub.closed)
        self.assertEqual(
            hub.metrics.value(
                "netdemo_refused_total", service="pubsub", reason="slow-consumer"
            ),
            1,
        )
        pub.send(b"more\n")
        lines = messages(fast)
        self.assertEqual(len(lines), sent + 1)

    def test_resumeResetsPending(self) -> None:
        """
        Bytes queued during one pause do not count against the next.
        """
        hub = FakeHub(HubLimits(maxPending=1000, writeDeadline=0))
        self.addCleanup(hub.stop)
        pub, sub = hub.connect(), hub.connect()
        for _ in range(5):
            sub.protocol.pauseProducing()
            pub.send(b"x" * 800 + b"\n")
            sub.protocol.resumeProducing()
        self.assertFalse(sub.closed)

    def test_writeDeadline(self) -> None:
        """
        A subscriber paused for longer than C{writeDeadline} is disconnected;
        one that resumes in time is not.
        """
        hub = FakeHub(HubLimits(writeDeadline=3.0), ConnectionLimits(idleTimeout=0))
        self.addCleanup(hub.stop)
        _pub, slow, ok = hub.connect(), hub.connect(), hub.connect()
        slow.protocol.pauseProducing()
        ok.protocol.pauseProducing()
        hub.clock.advance(2.9)
        ok.protocol.resumeProducing()
        self.assertFalse(slow.closed)
        hub.clock.advance(0.2)
        self.assertTrue(slow.closed)
        self.assertFalse(ok.closed)
        self.assertEqual(
            hub.metrics.value(
                "netdemo_refused_total", service="pubsub", reason="write-deadline"
            ),
            1,
        )

    def test_dropOldest(self) -> None:
        """
        With the C{drop-oldest} policy a paused subscriber loses its oldest
        lines beyond C{maxPending}, stays connected, and on resuming is told
        how many lines it lost before the newest ones.
        """
        hub = FakeHub(HubLimits(maxPending=250, slowPolicy="drop-oldest"))
        self.addCleanup(hub.stop)
        pub, sub = hub.connect(), hub.connect()
        sub.new()
        sub.protocol.pauseProducing()
        for i in range(10):
            pub.send(b"%02d" % (i,) + b"." * 77 + b"\n")
        self.assertEqual(sub.new(), [])
        hub.clock.advance(60)
        self.assertFalse(sub.closed)
        sub.protocol.resumeProducing()
        lines = sub.new()
        self.assertEqual(lines[0], b"* dropped 8 lines (slow consumer)")
        self.assertEqual([line[18:20] for line in lines[1:]], [b"08", b"09"])
        self.assertEqual(
            hub.metrics.value("netdemo_pubsub_dropped_lines_total", service="pubsub"), 8
        )


_lineText = st.binary(max_size=40).map(
    lambda b: b.replace(b"\n", b"").replace(b"\r", b"").lstrip(b"/")
)


class ChunkingTests(SynchronousTestCase):
    """
    The parser yields the same lines whatever the chunking.
    """

    STREAM = (
        b"plain one\r\n/sub t.>\n/pub t.a in topic\r\nctl\x01char\n\n"
        b"/nick chunky\nafter nick\n//slash\n/pub t.b b1\n/pub t.b b2\nend\r\n"
    )

    def deliver(self, pieces: list[bytes]) -> list[bytes]:
        """
        Feed the pieces to a publisher; return what a subscriber got.
        """
        hub = FakeHub()
        self.addCleanup(hub.stop)
        pub, sub = hub.connect(), hub.connect()
        sub.send(b"/sub t.>\n")
        sub.new()
        for piece in pieces:
            pub.send(piece)
        return sub.new() + [b"--"] + pub.new()

    def test_everyChunkSize(self) -> None:
        """
        Every fixed chunk size from one byte to the whole stream gives the
        same result.
        """
        data = self.STREAM
        expected = self.deliver([data])
        self.assertIn(b"[t.a] <127.0.0.1:40001> in topic", expected)
        self.assertIn(b"<chunky> after nick", expected)
        for size in range(1, len(data) + 1):
            pieces = [data[i : i + size] for i in range(0, len(data), size)]
            self.assertEqual(self.deliver(pieces), expected, size)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(_lineText, max_size=30), st.lists(st.integers(0, 2000), max_size=40)
    )
    def test_anyChunking(self, texts: list[bytes], cuts: list[int]) -> None:
        """
        Random lines, LF or CRLF, cut anywhere: the subscriber gets every
        non-blank line, escaped, in order.
        """
        data = b"".join(
            t + (b"\r\n" if i % 3 == 0 else b"\n") for i, t in enumerate(texts)
        )
        hub = FakeHub()
        try:
            pub, sub = hub.connect(), hub.connect()
            sub.new()
            for piece in chunked(data, cuts):
                pub.send(piece)
            got = [line for line in sub.new() if not line.startswith(b"* ")]
        finally:
            hub.stop()
        expected = [
            b"<127.0.0.1:40001> " + escapeControls(t)
            for t in texts
            if t and t != b"close"
        ]
        if b"close" in texts:
            expected = expected[: [t for t in texts if t].index(b"close")]
        self.assertEqual(got, expected)
