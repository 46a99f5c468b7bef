"""
Tests for the shared history without Redis: the answers of the scripts of
L{netdemo.streams} (as untrusted as anything from Redis), the numbered
backplane messages, and L{netdemo.history.SharedHistory}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from netdemo.backplane import decodeMessage
from netdemo.history import SharedHistory
from netdemo.streams import (
    PUBLISH_SCRIPT,
    Entry,
    parseEntryId,
    parsePublishAnswer,
    parseReadAnswer,
)


class ScriptAnswerTests(SynchronousTestCase):
    """
    The scripts' answers are checked before anything is taken from them.
    """

    def test_publishAnswer(self) -> None:
        """
        The publishing script answers the first number and the epoch;
        anything else is refused.
        """
        self.assertEqual(parsePublishAnswer([7, b"abc123"]), (7, b"abc123"))
        self.assertEqual(parsePublishAnswer([b"7", b"abc123"]), (7, b"abc123"))
        for bad in (
            None,
            [7],
            [0, b"abc"],
            [-1, b"abc"],
            [7, b"a b"],
            [7, b""],
            [7, b"x" * 65],
            [True, b"abc"],
            [b"9" * 19, b"abc"],
        ):
            self.assertIsNone(parsePublishAnswer(bad), bad)

    def test_readAnswer(self) -> None:
        """
        A read answers the epoch, the last number and the entries newest
        first: they come oldest first, control characters escaped; entries
        that are not a hub's (a foreign id, no identity, a line too long)
        are left out and counted.
        """
        answer = parseReadAnswer(
            [
                b"e1",
                b"12",
                [
                    [b"12-0", [b"i", b"bob", b"l", b"two\x07"]],
                    [b"11-0", [b"i", b"alice", b"l", b"one"]],
                    [b"10-1", [b"i", b"x", b"l", b"foreign id"]],
                    [b"9-0", [b"l", b"no identity"]],
                    [b"8-0", [b"i", b"bad name", b"l", b"x"]],
                    [b"7-0", [b"i", b"x", b"l", b"y" * 11]],
                    b"junk",
                ],
            ],
            maxLine=10,
        )
        self.assertEqual(answer.epoch, b"e1")
        self.assertEqual(answer.last, 12)
        self.assertEqual(
            answer.entries,
            [Entry(11, b"alice", b"one"), Entry(12, b"bob", b"two\\x07")],
        )
        self.assertEqual(answer.bad, 5)
        empty = parseReadAnswer([None, None, []], 10)
        self.assertEqual((empty.epoch, empty.last, empty.entries), (b"", 0, []))
        for bad in (None, [b"e", b"1"], [b"e", b"1", b"not a list"]):
            self.assertRaises(ValueError, parseReadAnswer, bad, 10)

    def test_entryId(self) -> None:
        """
        Only C{SEQ-0} ids are numbers of the shared history.
        """
        self.assertEqual(parseEntryId(b"5-0"), 5)
        for bad in (b"5", b"5-1", b"-0", b"a-0", 5, b"9" * 19 + b"-0"):
            self.assertIsNone(parseEntryId(bad), bad)

    def test_scriptArguments(self) -> None:
        """
        C{EVALSHA} names the script by its SHA1; C{EVAL} sends it.
        """
        self.assertEqual(
            PUBLISH_SCRIPT.evalsha([b"k"], [b"a"]),
            [b"EVALSHA", PUBLISH_SCRIPT.sha, 1, b"k", b"a"],
        )
        self.assertEqual(
            PUBLISH_SCRIPT.eval([b"k"], [b"a"]),
            [b"EVAL", PUBLISH_SCRIPT.body, 1, b"k", b"a"],
        )
        self.assertEqual(len(PUBLISH_SCRIPT.sha), 40)


class NumberedMessageTests(SynchronousTestCase):
    """
    Batches numbered by the script travel as C{netdemo/2} messages.
    """

    def test_decode(self) -> None:
        """
        The header names the node, its message number, the identity, the
        first line's number and the epoch.
        """
        message = decodeMessage(b"netdemo/2 n1 4 alice 17 e1\none\ntwo")
        assert message is not None
        self.assertEqual(
            (message.node, message.seq, message.identity, message.first),
            (b"n1", 4, b"alice", 17),
        )
        self.assertEqual((message.epoch, message.lines), (b"e1", [b"one", b"two"]))

    def test_malformed(self) -> None:
        """
        A numbered message with a bad header is no message.
        """
        for bad in (
            b"netdemo/2 n1 4 alice 17\none",
            b"netdemo/2 n1 4 alice 0 e1\none",
            b"netdemo/2 n1 4 alice x e1\none",
            b"netdemo/2 n1 4 alice 17 e-1\none",
            b"netdemo/2 n1 4 alice 17 e1\n",
            b"netdemo/2 n1 4 alice " + b"9" * 19 + b" e1\none",
        ):
            self.assertIsNone(decodeMessage(bad), bad)


class SharedHistoryTests(SynchronousTestCase):
    """
    L{SharedHistory} with plain calls.
    """

    def test_order(self) -> None:
        """
        A hub's own lines are delivered at the script's answer only if
        every earlier number was; through the subscription, lines are
        delivered unless already delivered, and skipped numbers are counted.
        """
        history = SharedHistory(10)
        self.assertTrue(history.accept(b"t", 1, 2, answered=True))
        history.record(b"t", b"<a> ", [b"1", b"2"], 1)
        self.assertFalse(history.accept(b"t", 1, 2, answered=False))
        self.assertFalse(history.accept(b"t", 4, 1, answered=True))
        self.assertTrue(history.accept(b"t", 3, 1, answered=False))
        history.record(b"t", b"<b> ", [b"3"], 3)
        self.assertTrue(history.accept(b"t", 4, 1, answered=True))
        history.record(b"t", b"<a> ", [b"4"], 4)
        self.assertTrue(history.accept(b"t", 7, 1, answered=False))
        self.assertEqual(history.gaps, 2)
        # A topic this hub knows nothing of: its own lines wait for the
        # subscription, unless they are the topic's first.
        self.assertFalse(history.accept(b"u", 5, 1, answered=True))
        self.assertTrue(history.accept(b"v", 1, 1, answered=True))

    def test_numberedAndLocal(self) -> None:
        """
        Kept lines have their own numbers; lines without one (local only)
        are shown C{#- }; a resume counts numbers, not lines.
        """
        history = SharedHistory(10)
        history.record(b"t", b"<a> ", [b"x", b"y"], 5)
        self.assertEqual(history.add(b"t", b"<a> ", [b"local"]), 0)
        history.record(b"t", b"<b> ", [b"z"], 9)
        self.assertEqual(
            history.lastNumbered(b"t", 10),
            [b"#5 <a> x", b"#6 <a> y", b"#- <a> local", b"#9 <b> z"],
        )
        self.assertEqual(history.last(b"t", 2), [b"<a> local", b"<b> z"])
        self.assertEqual((history.firstSeq(b"t"), history.lastSeq(b"t")), (5, 9))
        self.assertEqual(
            history.replaySince(b"t", 6, True),
            ([b"#- <a> local", b"#9 <b> z"], 9, False),
        )
        entries, first, gap = history.replaySince(b"t", 2, False)
        self.assertEqual((len(entries), first, gap), (4, 5, True))
        self.assertEqual(history.since(b"t", 9), ([], False))
        self.assertTrue(history.since(b"t", 10)[1])

    def test_bounds(self) -> None:
        """
        Each topic keeps its last C{keep} lines; past the byte bound the
        topic published to least recently goes; an epoch change forgets
        everything.
        """
        history = SharedHistory(2, maxTopics=2, maxBytes=100, maxCounters=2)
        history.record(b"a", b"", [b"1", b"2", b"3"], 1)
        self.assertEqual(history.lastNumbered(b"a", 5), [b"#2 2", b"#3 3"])
        history.record(b"b", b"", [b"x" * 60], 1)
        history.record(b"c", b"", [b"y" * 60], 1)
        self.assertEqual(sorted(history.topics()), [b"c"])
        self.assertEqual(history.size, 60)
        self.assertEqual(history.lastSeq(b"a"), 0)
        history.changeEpoch("e2")
        self.assertEqual((history.epoch, len(history), history.size), ("e2", 0, 0))
