# -*- test-case-name: tests.test_routing -*-
"""
Who gets a topic's lines: the hub's subscriptions and its cached routes,
without I/O.

A L{Router} holds each client's subscription patterns and, per topic, the
list of clients subscribed to it, computed once and kept until any
subscription changes (publishing is far more frequent than subscribing).
Its tables are bounded: L{MAX_SUBSCRIPTIONS} patterns per client, and a
route cache cleared when it holds L{MAX_ROUTES} topics or lists
L{MAX_ROUTE_ENTRIES} subscribers in all.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum
from typing import Generic, TypeVar

from netdemo.hubwire import patternMatches

__all__ = [
    "MAX_ROUTES",
    "MAX_ROUTE_ENTRIES",
    "MAX_SUBSCRIPTIONS",
    "Router",
    "Subscribed",
]

#: Subscriptions one client may hold at once.
MAX_SUBSCRIPTIONS = 256

#: Topics whose routes are cached at once, and subscribers listed over all
#: cached routes; the cache is cleared when either is reached.
MAX_ROUTES = 4096
MAX_ROUTE_ENTRIES = 1 << 20

Client = TypeVar("Client", bound=Hashable)


class Subscribed(Enum):
    """
    What L{Router.subscribe} did.
    """

    NEW = "new"
    ALREADY = "already"
    TOO_MANY = "too many"


class Router(Generic[Client]):
    """
    The subscriptions of every client, and the subscribers of each topic.

    @ivar entries: Subscribers listed over all cached routes.
    """

    def __init__(self) -> None:
        self._patterns: dict[Client, dict[bytes, tuple[bytes, ...]]] = {}
        self._routes: dict[bytes, list[Client]] = {}
        self.entries = 0

    def subscribe(self, client: Client, pattern: bytes) -> Subscribed:
        """
        Subscribe C{client} to C{pattern} (a valid pattern), unless it is
        already subscribed or holds L{MAX_SUBSCRIPTIONS} patterns.
        """
        patterns = self._patterns.setdefault(client, {})
        if pattern in patterns:
            return Subscribed.ALREADY
        if len(patterns) >= MAX_SUBSCRIPTIONS:
            return Subscribed.TOO_MANY
        patterns[pattern] = tuple(pattern.split(b"."))
        self._invalidate()
        return Subscribed.NEW

    def unsubscribe(self, client: Client, pattern: bytes) -> bool:
        """
        Unsubscribe C{client} from C{pattern}.

        @return: Whether it was subscribed.
        """
        patterns = self._patterns.get(client)
        if patterns is None or patterns.pop(pattern, None) is None:
            return False
        self._invalidate()
        return True

    def drop(self, client: Client) -> None:
        """
        Forget C{client} and all its subscriptions.
        """
        if self._patterns.pop(client, None) is not None:
            self._invalidate()

    def patterns(self, client: Client) -> Iterable[bytes]:
        """
        The patterns C{client} is subscribed to, in the order given.
        """
        return self._patterns.get(client, {}).keys()

    def subscribers(self, topic: bytes) -> list[Client]:
        """
        The clients subscribed to C{topic} (a valid topic), each once,
        however many of its patterns match.  The list is cached: do not
        change it.
        """
        subscribers = self._routes.get(topic)
        if subscribers is None:
            subscribers = self._route(topic)
        return subscribers

    def _route(self, topic: bytes) -> list[Client]:
        """
        Compute and cache the subscribers of C{topic}.
        """
        tokens = topic.split(b".")
        subscribers = [
            client
            for client, patterns in self._patterns.items()
            if topic in patterns
            or any(patternMatches(p, tokens) for p in patterns.values())
        ]
        self.entries += len(subscribers)
        if len(self._routes) >= MAX_ROUTES or self.entries > MAX_ROUTE_ENTRIES:
            self._invalidate()
            self.entries = len(subscribers)
        self._routes[topic] = subscribers
        return subscribers

    def _invalidate(self) -> None:
        """
        Forget the cached routes: a subscription changed.
        """
        self._routes.clear()
        self.entries = 0
