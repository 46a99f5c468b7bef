"""
Tests for L{netdemo.history}: the bounded per-topic history, with plain
calls and against a simple model.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo.history import MAX_HISTORY_BYTES, History


def kept(history: History) -> dict[bytes, list[bytes]]:
    """
    Every topic's lines, in the order the topics were last published to.
    """
    return {t: history.last(t, history.keep) for t in history.topics()}


class HistoryTests(SynchronousTestCase):
    """
    L{History} with plain calls.
    """

    def test_ring(self) -> None:
        """
        Each topic keeps its last C{keep} lines, prefixed, oldest first;
        fewer can be asked for.
        """
        history = History(3)
        history.add(b"t", b"<a> ", [b"1", b"2"])
        history.add(b"t", b"<b> ", [b"3", b"4"])
        self.assertEqual(history.last(b"t", 10), [b"<a> 2", b"<b> 3", b"<b> 4"])
        self.assertEqual(history.last(b"t", 1), [b"<b> 4"])
        self.assertEqual(history.last(b"t", 0), [])
        self.assertEqual(history.last(b"other", 5), [])
        self.assertEqual(history.size, 15)

    def test_off(self) -> None:
        """
        With C{keep} 0 nothing is kept.
        """
        history = History(0)
        history.add(b"t", b"", [b"x"])
        self.assertEqual((len(history), history.size), (0, 0))

    def test_bytesBound(self) -> None:
        """
        Past the byte budget the least recently published topics are
        forgotten, and the accounting matches what is kept.
        """
        history = History(10, maxBytes=5000)
        for i in range(50):
            history.add(b"t.%d" % i, b"<p> ", [b"x" * 90] * 12)
            lines = kept(history)
            self.assertEqual(history.size, sum(map(len, sum(lines.values(), []))))
            self.assertLessEqual(history.size, 5000)
        topics = list(history.topics())
        self.assertEqual(topics[-1], b"t.49")
        self.assertNotIn(b"t.0", topics)
        self.assertEqual(len(history.last(b"t.49", 100)), 10)

    def test_topicsBound(self) -> None:
        """
        At most C{maxTopics} topics keep a history; publishing to a topic
        makes it the most recent.
        """
        history = History(5, maxTopics=3)
        for i in range(10):
            history.add(b"t.%d" % i, b"", [b"x"])
        history.add(b"t.7", b"", [b"y"])
        history.add(b"t.10", b"", [b"z"])
        self.assertEqual(list(history.topics()), [b"t.9", b"t.7", b"t.10"])

    def test_oneTopicOverBudget(self) -> None:
        """
        The topic being published to is never forgotten for it, even alone
        over the budget.
        """
        history = History(10, maxBytes=10)
        history.add(b"big", b"", [b"x" * 50])
        self.assertEqual(history.last(b"big", 1), [b"x" * 50])
        self.assertEqual(history.size, 50)

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(1, 5),
        st.lists(
            st.tuples(
                st.sampled_from([b"a", b"b", b"c", b"d"]),
                st.lists(st.binary(max_size=20), min_size=1, max_size=8),
            ),
            max_size=30,
        ),
    )
    def test_model(self, keep: int, adds: list[tuple[bytes, list[bytes]]]) -> None:
        """
        Within generous bounds the history is each topic's last C{keep}
        lines, and its size their total length.
        """
        history = History(keep)
        model: dict[bytes, list[bytes]] = {}
        for topic, lines in adds:
            history.add(topic, b"> ", lines)
            previous = model.pop(topic, [])
            model[topic] = (previous + [b"> " + line for line in lines])[-keep:]
        self.assertEqual(kept(history), model)
        self.assertEqual(history.size, sum(len(x) for v in model.values() for x in v))


class SequenceTests(SynchronousTestCase):
    """
    L{History}'s sequence numbers and L{History.since}.
    """

    def test_numbers(self) -> None:
        """
        Each topic numbers its lines from 1; a batch gets a consecutive
        range; C{since} gives the lines after a number.
        """
        history = History(10)
        self.assertEqual(history.add(b"t", b"", [b"a", b"b", b"c"]), 1)
        self.assertEqual(history.add(b"u", b"", [b"x"]), 1)
        self.assertEqual(history.add(b"t", b"", [b"d"]), 4)
        self.assertEqual((history.lastSeq(b"t"), history.firstSeq(b"t")), (4, 1))
        self.assertEqual(history.since(b"t", 2), ([b"c", b"d"], False))
        self.assertEqual(history.since(b"t", 0), ([b"a", b"b", b"c", b"d"], False))
        self.assertEqual(history.since(b"t", 4), ([], False))
        self.assertEqual(history.since(b"none", 0), ([], False))
        self.assertEqual(history.lastSeq(b"none"), 0)

    def test_gap(self) -> None:
        """
        When history no longer reaches back to the line after the number
        asked for, C{since} says so and gives every kept line.
        """
        history = History(2)
        history.add(b"t", b"", [b"a", b"b", b"c", b"d", b"e"])
        self.assertEqual(history.firstSeq(b"t"), 4)
        self.assertEqual(history.since(b"t", 3), ([b"d", b"e"], False))
        self.assertEqual(history.since(b"t", 2), ([b"d", b"e"], True))
        self.assertEqual(history.since(b"t", 0), ([b"d", b"e"], True))

    def test_ahead(self) -> None:
        """
        A number that this history never gave (of another run of the hub) is
        a gap.
        """
        history = History(5)
        history.add(b"t", b"", [b"a"])
        self.assertEqual(history.since(b"t", 7), ([b"a"], True))
        self.assertEqual(history.since(b"none", 3), ([], True))

    def test_counted_without_history(self) -> None:
        """
        With C{keep} 0 lines are still numbered, and every position but the
        last is a gap.
        """
        history = History(0)
        history.add(b"t", b"", [b"a", b"b"])
        self.assertEqual(history.add(b"t", b"", [b"c"]), 3)
        self.assertEqual(history.since(b"t", 3), ([], False))
        self.assertEqual(history.since(b"t", 2), ([], True))

    def test_forgottenCounter(self) -> None:
        """
        Past C{maxCounters} topics the least recently published topic's
        counter is forgotten; numbering goes on above the floor, so a
        position from before shows a gap instead of other lines.
        """
        history = History(5, maxTopics=2, maxCounters=2)
        history.add(b"a", b"", [b"1", b"2", b"3"])
        history.add(b"b", b"", [b"x"])
        history.add(b"c", b"", [b"y"])
        self.assertEqual(history.floor, 3)
        self.assertEqual(history.lastSeq(b"a"), 3)
        self.assertEqual(history.since(b"a", 3), ([], False))
        self.assertEqual(history.since(b"a", 2), ([], True))
        self.assertEqual(history.add(b"a", b"", [b"4"]), 4)
        self.assertEqual(history.add(b"new", b"", [b"z"]), 4)

    def test_counterBound(self) -> None:
        """
        Fewer counters than topics with history is refused.
        """
        self.assertRaises(ValueError, History, 5, maxTopics=10, maxCounters=5)

    def test_epoch(self) -> None:
        """
        Each history has its own epoch, unless given one.
        """
        self.assertNotEqual(History(1).epoch, History(1).epoch)
        self.assertEqual(History(1, epoch="e1").epoch, "e1")

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(0, 4),
        st.integers(1, 3),
        st.integers(0, 2),
        st.sampled_from([12, 40, MAX_HISTORY_BYTES]),
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("add"),
                    st.sampled_from([b"a", b"b", b"c", b"d"]),
                    st.integers(1, 6),
                ),
                st.tuples(
                    st.just("since"),
                    st.sampled_from([b"a", b"b", b"c", b"d"]),
                    st.integers(0, 40),
                ),
            ),
            max_size=40,
        ),
    )
    def test_resumeModel(
        self,
        keep: int,
        maxTopics: int,
        extraCounters: int,
        maxBytes: int,
        steps: list[tuple[str, bytes, int]],
    ) -> None:
        """
        Over interleavings of publishing, resuming and forgetting (small
        bounds of lines, topics, bytes and counters), a numbered line is
        never given twice, and a resume either gives exactly the lines after
        its position or says there is a gap.
        """
        history = History(
            keep,
            maxTopics=maxTopics,
            maxBytes=maxBytes,
            maxCounters=maxTopics + extraCounters,
        )
        published: dict[bytes, list[tuple[int, bytes]]] = {}
        serial = 0
        for kind, topic, value in steps:
            lines = published.setdefault(topic, [])
            if kind == "add":
                batch = [b"%d" % (serial + i) for i in range(value)]
                serial += value
                first = history.add(topic, b"", batch)
                seqs = range(first, first + value)
                if lines:
                    # Numbers of a topic only grow.
                    self.assertGreater(first, lines[-1][0])
                lines.extend(zip(seqs, batch, strict=True))
                continue
            got, gap = history.since(topic, value)
            numbered = dict(lines)
            last = history.lastSeq(topic)
            # What is given is the newest lines, numbered consecutively.
            start = last - len(got) + 1
            self.assertEqual(got, [numbered[s] for s in range(start, last + 1)])
            if not gap:
                # Exactly what was published after the position.
                self.assertEqual(got, [line for s, line in lines if s > value])
            else:
                # History does not reach back to the line after the
                # position, or the position was never given.
                self.assertTrue(value + 1 < history.firstSeq(topic) or value > last)
