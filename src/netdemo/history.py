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
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from netdemo.hubwire import linePrefix

__all__ = [
    "MAX_HISTORY_BYTES",
    "MAX_HISTORY_TOPICS",
    "MAX_SEQUENCE_TOPICS",
    "History",
    "SharedHistory",
    "numbered",
]

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


class _Bounded:
    """
    The bounds and counters L{History} and L{SharedHistory} share.

    @ivar keep: Lines kept per topic; 0 keeps nothing.
    @ivar maxTopics: Topics kept at most.
    @ivar maxBytes: Bytes kept at most, over all topics.
    @ivar size: Bytes kept now, over all topics.
    @ivar maxCounters: Topics whose sequence counter is kept at most.
    @ivar epoch: Names the history: sequence numbers of two epochs cannot
        be compared.
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
        # Topic -> bytes kept of it.
        self._sizes: dict[bytes, int] = {}


class History(_Bounded):
    """
    The last lines of each topic, within L{_Bounded}'s bounds.

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
        super().__init__(keep, maxTopics, maxBytes, maxCounters, epoch)
        self.floor = 0
        # Least recently published first.
        self._lines: dict[bytes, deque[bytes]] = {}
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

    def lastNumbered(self, topic: bytes, count: int) -> list[bytes]:
        """
        L{last}, each line numbered (C{#SEQ LINE}).
        """
        entries = self.last(topic, count)
        first = self.lastSeq(topic) - len(entries) + 1
        return [b"#%d %s" % pair for pair in enumerate(entries, first)]

    def replaySince(
        self, topic: bytes, seq: int, numbers: bool
    ) -> tuple[list[bytes], int, bool]:
        """
        L{since}, numbered if asked, with the number of its first line.
        """
        entries, gap = self.since(topic, seq)
        first = self.lastSeq(topic) - len(entries) + 1
        if numbers:
            entries = [b"#%d %s" % pair for pair in enumerate(entries, first)]
        return entries, first, gap

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


class SharedHistory(_Bounded):
    """
    A hub's view of the history that the hubs of one backplane share in
    Redis Streams (L{netdemo.streams}): Redis numbers the lines, this keeps
    what the hub delivered (for when Redis cannot be read), and decides
    when a numbered line may be delivered.

    The interface is L{History}'s, with more: lines numbered by Redis are
    recorded with their numbers (L{record}); L{add} records a line that
    Redis did not number (published while Redis was down, or by something
    else than a hub) as local only, number 0 (shown C{#- }).  Kept lines are
    numbered one by one, so the numbers of a topic's kept lines need not be
    consecutive.  The same bounds hold as for L{History}.

    Order: L{accept} says whether numbered lines are delivered now.  A
    hub delivers its own lines when Redis answers the script only if it
    delivered every earlier number of the topic already; otherwise it waits
    for them to come through the subscription, which brings every hub's
    lines in Redis's order.  So each topic's lines reach the clients of
    every hub in the same order, the order of their numbers.

    @ivar epoch: Redis's epoch, once learnt (at first a random one of this
        hub's, as L{History}'s).
    @ivar gaps: Numbers skipped by the subscription (lines that were never
        delivered here).
    """

    def __init__(
        self,
        keep: int,
        maxTopics: int = MAX_HISTORY_TOPICS,
        maxBytes: int = MAX_HISTORY_BYTES,
        maxCounters: int = MAX_SEQUENCE_TOPICS,
        epoch: str | None = None,
    ) -> None:
        super().__init__(keep, maxTopics, maxBytes, maxCounters, epoch)
        self.gaps = 0
        # Least recently published first: topic -> its kept lines, each
        # with its number (0: local only).
        self._lines: dict[bytes, deque[tuple[int, bytes]]] = {}
        # Topic -> the last number delivered; least recently first.
        self._last: dict[bytes, int] = {}

    def changeEpoch(self, epoch: str) -> None:
        """
        Redis's epoch is now C{epoch}: numbers of the old one mean nothing
        any more, so what is kept is forgotten.
        """
        self.epoch = epoch
        self._lines.clear()
        self._sizes.clear()
        self._last.clear()
        self.size = 0

    def accept(self, topic: bytes, first: int, count: int, answered: bool) -> bool:
        """
        Whether lines numbered C{first} to C{first + count - 1} on C{topic}
        are delivered now.

        @param answered: They come with the script's answer (this hub's own
            lines): delivered only if every earlier number was; else they
            come through the subscription: delivered unless already
            delivered (an earlier number never delivered is a gap).
        """
        last = self._last.get(topic)
        if answered:
            return (last or 0) == first - 1
        if last is not None and first + count - 1 <= last:
            return False
        if last is not None and first > last + 1:
            self.gaps += first - last - 1
        return True

    def record(
        self, topic: bytes, prefix: bytes, lines: Sequence[bytes], first: int
    ) -> None:
        """
        Remember lines numbered by Redis from C{first} (0: not numbered),
        each after C{prefix}.
        """
        if first:
            counters = self._last
            counters.pop(topic, None)
            counters[topic] = first + len(lines) - 1
            if len(counters) > self.maxCounters:
                del counters[next(iter(counters))]
        keep = self.keep
        if not keep:
            return
        kept = self._lines.pop(topic, None)
        if kept is None:
            kept = deque(maxlen=keep)
            self._sizes[topic] = 0
        self._lines[topic] = kept
        start = max(len(lines) - keep, 0)
        new = [
            (first + i if first else 0, prefix + line)
            for i, line in enumerate(lines[start:], start)
        ]
        overflow = len(kept) + len(new) - keep
        removed = sum(len(e[1]) for e in islice(kept, overflow)) if overflow > 0 else 0
        kept.extend(new)
        change = sum(len(e[1]) for e in new) - removed
        self._sizes[topic] += change
        self.size += change
        while self.size > self.maxBytes or len(self._lines) > self.maxTopics:
            oldest = next(iter(self._lines))
            if oldest == topic:
                break
            del self._lines[oldest]
            self.size -= self._sizes.pop(oldest)

    def add(self, topic: bytes, prefix: bytes, lines: Sequence[bytes]) -> int:
        """
        Remember lines that Redis did not number (local only).

        @return: 0: they have no number.
        """
        self.record(topic, prefix, lines, 0)
        return 0

    def _kept(self, topic: bytes, count: int) -> list[tuple[int, bytes]]:
        kept = self._lines.get(topic)
        if not kept or count <= 0:
            return []
        return list(kept)[-count:]

    def last(self, topic: bytes, count: int) -> list[bytes]:
        """
        The last C{count} lines of C{topic} kept here, oldest first.
        """
        return [line for _, line in self._kept(topic, count)]

    def lastNumbered(self, topic: bytes, count: int) -> list[bytes]:
        """
        L{last}, each line numbered (C{#SEQ LINE}, C{#- LINE} if local
        only).
        """
        return numbered(self._kept(topic, count))

    def lastSeq(self, topic: bytes) -> int:
        """
        The last number delivered on C{topic} (0: none is known).
        """
        return self._last.get(topic, 0)

    def firstSeq(self, topic: bytes) -> int:
        """
        The number of the first numbered line of C{topic} kept here, or the
        next number if none is.
        """
        for seq, _ in self._lines.get(topic, ()):
            if seq:
                return seq
        return self.lastSeq(topic) + 1

    def since(self, topic: bytes, seq: int) -> tuple[list[bytes], bool]:
        """
        As L{History.since}, from what is kept here (lines kept after a
        numbered line past C{seq}, local ones included).
        """
        entries, _, gap = self.replaySince(topic, seq, False)
        return entries, gap

    def replaySince(
        self, topic: bytes, seq: int, numbers: bool
    ) -> tuple[list[bytes], int, bool]:
        """
        The kept lines after number C{seq}, numbered if asked; the number
        of the first of them; whether there is a gap (lines numbered after
        C{seq} that are not kept here, before or between those given).
        """
        kept = list(self._lines.get(topic, ()))
        last = self.lastSeq(topic)
        first = self.firstSeq(topic)
        if seq + 1 < first or seq > last:
            chosen = kept
            gap = True
        else:
            start = 0
            for index, (number, _) in enumerate(kept):
                if number and number <= seq:
                    start = index + 1
            chosen = kept[start:]
            # Numbers this hub never delivered (its subscription was down)
            # leave holes: a gap too, never a silent skip.
            expected = seq + 1
            gap = False
            for number, _ in chosen:
                if number:
                    if number != expected:
                        gap = True
                        break
                    expected += 1
        start = next((n for n, _ in chosen if n), last + 1)
        if numbers:
            return numbered(chosen), start, gap
        return [line for _, line in chosen], start, gap

    def fromRedis(
        self, topic: bytes, entries: Iterable[Any], numbers: bool
    ) -> list[bytes]:
        """
        Lines read from Redis (each with C{seq}, C{identity} and C{line}),
        as a replay shows them: C{[TOPIC] <IDENTITY> LINE}, numbered if
        asked.
        """
        prefixes: dict[bytes, bytes] = {}
        out = []
        for entry in entries:
            identity = entry.identity
            prefix = prefixes.get(identity)
            if prefix is None:
                prefix = prefixes[identity] = linePrefix(topic, identity)
            if numbers:
                out.append(b"#%d %s%s" % (entry.seq, prefix, entry.line))
            else:
                out.append(prefix + entry.line)
        return out

    def topics(self) -> Iterator[bytes]:
        """
        The topics with lines kept here, least recently published first.
        """
        return iter(self._lines)

    def __len__(self) -> int:
        """
        How many topics have lines kept here.
        """
        return len(self._lines)


def numbered(entries: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """
    Kept lines with their numbers, as a client with C{/seq on} gets them:
    C{#SEQ LINE}, or C{#- LINE} for a line without a number.
    """
    return [b"#%d %s" % (seq, line) if seq else b"#- " + line for seq, line in entries]
