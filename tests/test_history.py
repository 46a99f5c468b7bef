"""
Tests for L{netdemo.history}: the bounded per-topic history, with plain
calls and against a simple model.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo.history import History


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
