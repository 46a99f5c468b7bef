# -*- test-case-name: tests.test_history -*-
"""
The hub's bounded history, without I/O: the last lines of each topic, as
they were delivered, and each topic's sequence numbers.

Each topic keeps its last C{keep} lines.  All topics together keep at most
L{MAX_HISTORY_TOPICS} topics and L{MAX_HISTORY_BYTES} bytes: past either,
the topic published to least recently is forgotten first (never the one
being published to).

Every line published on a topic gets the topic's next sequence number
(1, 2, 3, ...), also when no history is kept (C{keep} 0).  A batch of lines
gets a consecutive range at once (one addition).  The kept lines of a topic
are always its newest ones, so their numbers are consecutive and end at the
topic's last number: they need not be stored line by line.  At most
L{MAX_SEQUENCE_TOPICS} topics keep a counter; past that, the counter of the
topic published to least recently is forgotten, and the highest number it
reached raises a floor: a topic that gets a counter again (or for the first
time) starts above the floor.  A topic's numbers therefore never go back
within one L{History} (one run of the hub); what was forgotten shows as a
gap (L{History.since}), never as a number given twice.  L{History.epoch},
chosen at random when the history is made, tells one run from another.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice

__all__ = ["MAX_HISTORY_BYTES", "MAX_HISTORY_TOPICS", "MAX_SEQUENCE_TOPICS", "History"]

#: Topics that keep a history at once, and bytes of history over all
#: topics.
MAX_HISTORY_TOPICS = 1024
MAX_HISTORY_BYTES = 16 << 20

#: Topics whose sequence counter is kept at once (at least
#: L{MAX_HISTORY_TOPICS}: a topic with history always has its counter).
MAX_SEQUENCE_TOPICS = 16384


def newEpoch() -> str:
    """
    A new epoch: 16 random hexadecimal digits.
    """
    return os.urandom(8).hex()


class History:
    """
    The last lines of each topic.

    @ivar keep: Lines kept per topic; 0 keeps nothing.
    @ivar maxTopics: Topics kept at most.
    @ivar maxBytes: Bytes kept at most, over all topics.
    @ivar size: Bytes kept now, over all topics.
    @ivar maxCounters: Topics whose sequence counter is kept at most.
    @ivar epoch: Names this history (one run of the hub): sequence numbers
        of two epochs cannot be compared.
    @ivar floor: The highest number given on a topic whose counter was
        forgotten (0: none was).
    """

    def __init__(
        self,
        keep: int,
        maxTopics: int = MAX_HISTORY_TOPICS,
        maxBytes: int = MAX_HISTORY_BYTES,
        maxCounters: int = MAX_SEQUENCE_TOPICS,
        epoch: str | None = None,
    ) -> None:
        if maxCounters < maxTopics:
            raise ValueError("maxCounters must be at least maxTopics")
        self.keep = keep
        self.maxTopics = maxTopics
        self.maxBytes = maxBytes
        self.maxCounters = maxCounters
        self.epoch = newEpoch() if epoch is None else epoch
        self.size = 0
        self.floor = 0
        # Least recently published first.
        self._lines: dict[bytes, deque[bytes]] = {}
        self._sizes: dict[bytes, int] = {}
        # Topic -> its next sequence number; least recently published first.
        self._next: dict[bytes, int] = {}

    def add(self, topic: bytes, prefix: bytes, lines: Sequence[bytes]) -> int:
        """
        Number lines published on C{topic} and remember them, each after
        C{prefix}, within the bounds.

        @return: The sequence number of the first line (the others follow
            it one by one).
        """
        counters = self._next
        first = counters.pop(topic, 0) or self.floor + 1
        counters[topic] = first + len(lines)
        if len(counters) > self.maxCounters:
            # Never the topic just numbered: it is the newest.
            oldest = next(iter(counters))
            self.floor = max(self.floor, counters.pop(oldest) - 1)
        keep = self.keep
        if not keep:
            return first
        kept = self._lines.pop(topic, None)
        if kept is None:
            kept = deque(maxlen=keep)
            self._sizes[topic] = 0
        self._lines[topic] = kept
        new = list(map(prefix.__add__, lines[-keep:]))
        overflow = len(kept) + len(new) - keep
        removed = sum(map(len, islice(kept, overflow))) if overflow > 0 else 0
        kept.extend(new)
        change = sum(map(len, new)) - removed
        self._sizes[topic] += change
        self.size += change
        while self.size > self.maxBytes or len(self._lines) > self.maxTopics:
            oldest = next(iter(self._lines))
            if oldest == topic:
                break
            del self._lines[oldest]
            self.size -= self._sizes.pop(oldest)
        return first

    def last(self, topic: bytes, count: int) -> list[bytes]:
        """
        The last C{count} lines of C{topic}, oldest first.
        """
        kept = self._lines.get(topic)
        if not kept or count <= 0:
            return []
        return list(kept)[-count:]

    def _nextSeq(self, topic: bytes) -> int:
        """
        The number the next line of C{topic} gets.
        """
        return self._next.get(topic) or self.floor + 1

    def lastSeq(self, topic: bytes) -> int:
        """
        The sequence number of the last line published on C{topic}: 0 if
        none was, the floor if its counter was forgotten.
        """
        return self._nextSeq(topic) - 1

    def firstSeq(self, topic: bytes) -> int:
        """
        The sequence number of the first line of C{topic} that is kept, or
        the next number to be given if none is.
        """
        next = self._nextSeq(topic)
        kept = self._lines.get(topic)
        return next - len(kept) if kept else next

    def since(self, topic: bytes, seq: int) -> tuple[list[bytes], bool]:
        """
        The kept lines of C{topic} numbered after C{seq}, oldest first, and
        whether there is a gap: lines after C{seq} were published that are
        not kept (forgotten, or never kept), or C{seq} is ahead of the
        topic's numbering (a position this history never gave).  With a
        gap every kept line is given.
        """
        kept = self._lines.get(topic)
        next = self._nextSeq(topic)
        first = next - len(kept) if kept else next
        if seq + 1 < first or seq >= next:
            return (list(kept) if kept else []), True
        if not kept:
            return [], False
        return list(kept)[seq + 1 - first :], False

    def topics(self) -> Iterator[bytes]:
        """
        The topics that have a history, least recently published first.
        """
        return iter(self._lines)

    def __len__(self) -> int:
        """
        How many topics have a history.
        """
        return len(self._lines)
