# -*- test-case-name: tests.test_history -*-
"""
The hub's bounded history, without I/O: the last lines of each topic, as
they were delivered.

Each topic keeps its last C{keep} lines.  All topics together keep at most
L{MAX_HISTORY_TOPICS} topics and L{MAX_HISTORY_BYTES} bytes: past either,
the topic published to least recently is forgotten first (never the one
being published to).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice

__all__ = ["MAX_HISTORY_BYTES", "MAX_HISTORY_TOPICS", "History"]

#: Topics that keep a history at once, and bytes of history over all
#: topics.
MAX_HISTORY_TOPICS = 1024
MAX_HISTORY_BYTES = 16 << 20


class History:
    """
    The last lines of each topic.

    @ivar keep: Lines kept per topic; 0 keeps nothing.
    @ivar maxTopics: Topics kept at most.
    @ivar maxBytes: Bytes kept at most, over all topics.
    @ivar size: Bytes kept now, over all topics.
    """

    def __init__(
        self,
        keep: int,
        maxTopics: int = MAX_HISTORY_TOPICS,
        maxBytes: int = MAX_HISTORY_BYTES,
    ) -> None:
        self.keep = keep
        self.maxTopics = maxTopics
        self.maxBytes = maxBytes
        self.size = 0
        # Least recently published first.
        self._lines: dict[bytes, deque[bytes]] = {}
        self._sizes: dict[bytes, int] = {}

    def add(self, topic: bytes, prefix: bytes, lines: Sequence[bytes]) -> None:
        """
        Remember lines published on C{topic}, each after C{prefix}, within
        the bounds.
        """
        keep = self.keep
        if not keep:
            return
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

    def last(self, topic: bytes, count: int) -> list[bytes]:
        """
        The last C{count} lines of C{topic}, oldest first.
        """
        kept = self._lines.get(topic)
        if not kept or count <= 0:
            return []
        return list(kept)[-count:]

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
