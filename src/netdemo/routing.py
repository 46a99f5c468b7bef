# -*- test-case-name: tests.test_routing -*-
"""
Who gets a topic's lines: the hub's subscriptions, indexed, without I/O.

A L{Router} keeps every subscription pattern in a trie of tokens, the model
of NATS's sublist: a pattern C{lab.*.temp} is the path C{lab}, C{*},
C{temp} from the root, and C{lab.>} the path C{lab} with the client in that
node's C{rest} table.  Finding the subscribers of a topic walks the topic's
tokens down the literal branch and the C{*} branch of each node, collecting
the tables met on the way: its cost depends on the topic's depth and on the
subscriptions that match, never on all the subscriptions.  Chains of nodes
with one child each are kept as one node (a radix trie over tokens), so a
pattern of many tokens costs one or two nodes, not one per token.

The answer is usually one table of the trie, returned as it is: every
client that subscribed to C{chat} is in the C{chat} node's table, and a
client joining or leaving changes that table in O(1).  When several tables
match (C{chat} and C{>}), their union is computed once.  Routes are cached
in two caches, each of at most L{MAX_ROUTES} topics, the least recently
used route forgotten first, one at a time: one for the topics that one
table matches, or none (cheap to find again), one for unions (at most
L{MAX_ROUTE_ENTRIES} subscribers listed over all of them), so that asking
for many topics of the first kind cannot push out the unions.  A
subscription change
keeps the cache right without touching more than the pattern's path: a
literal pattern (no wildcard) only matches the topic it spells, whose
cached union is updated in place (a cached table is the one that changed);
a wildcard pattern changes a generation number, and each cached route of
an older generation is recomputed when it is next asked for.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Collection, Hashable, Iterable
from enum import Enum
from typing import Any, Generic, TypeVar

__all__ = [
    "MAX_ROUTES",
    "MAX_ROUTE_ENTRIES",
    "MAX_SUBSCRIPTIONS",
    "Router",
    "Subscribed",
]

#: Subscriptions one client may hold at once.
MAX_SUBSCRIPTIONS = 256

#: Topics whose union of subscribers is cached at once, and subscribers
#: listed over all cached unions; past either, the least recently used
#: union is forgotten.
MAX_ROUTES = 4096
MAX_ROUTE_ENTRIES = 1 << 20

Client = TypeVar("Client", bound=Hashable)

#: The table of a topic nobody is subscribed to (never changed).
_NOBODY: dict[Any, None] = {}


class Subscribed(Enum):
    """
    What L{Router.subscribe} did.
    """

    NEW = "new"
    ALREADY = "already"
    TOO_MANY = "too many"


class _Node:
    """
    One node of the trie.

    @ivar edge: The pattern tokens from the parent to this node (one or
        more; none for the root).
    @ivar wild: Whether C{edge} holds a C{*}.
    @ivar children: The child nodes, by the first token of their edge.
    @ivar here: The clients whose pattern ends at this node (as an ordered
        set), or L{None}.
    @ivar rest: The clients whose pattern ends with C{>} after this node,
        or L{None}.
    """

    __slots__ = ("children", "edge", "here", "rest", "wild")

    def __init__(self, edge: tuple[bytes, ...]) -> None:
        self.edge = edge
        self.wild = b"*" in edge
        self.children: dict[bytes, _Node] | None = None
        self.here: dict[Any, None] | None = None
        self.rest: dict[Any, None] | None = None


class _Route:
    """
    The cached subscribers of one topic.

    @ivar table: The one table of the trie that matches the topic, or the
        union of several (L{union}): each subscriber with the number of its
        patterns that match the topic.
    @ivar subscribers: The clients of C{table}.
    @ivar generation: The router's generation when it was computed.
    """

    __slots__ = ("generation", "subscribers", "table", "union")

    def __init__(self, table: dict[Any, Any], union: bool, generation: int) -> None:
        self.table = table
        self.union = union
        self.subscribers = table.keys()
        self.generation = generation


def _split(pattern: bytes) -> tuple[tuple[bytes, ...], bool]:
    """
    A pattern's tokens without its final C{>}, and whether it had one.
    """
    tokens = pattern.split(b".")
    if tokens[-1] == b">":
        tokens.pop()
        return tuple(tokens), True
    return tuple(tokens), False


def _isWild(pattern: bytes) -> bool:
    """
    Whether a pattern matches more than the one topic it spells.
    """
    return b"*" in pattern or pattern.endswith(b">")


class Router(Generic[Client]):
    """
    The subscriptions of every client, and the subscribers of each topic.

    @ivar entries: Subscribers listed over all cached unions.
    """

    def __init__(self) -> None:
        self._patterns: dict[Client, dict[bytes, None]] = {}
        self._root = _Node(())
        # The routes of the topics one table matches, and the unions.
        self._tables: OrderedDict[bytes, _Route] = OrderedDict()
        self._routes: OrderedDict[bytes, _Route] = OrderedDict()
        self._generation = 0
        self.entries = 0

    # Subscriptions.

    def subscribe(self, client: Client, pattern: bytes) -> Subscribed:
        """
        Subscribe C{client} to C{pattern} (a valid pattern), unless it is
        already subscribed or holds L{MAX_SUBSCRIPTIONS} patterns.
        """
        patterns = self._patterns.get(client)
        if patterns is None:
            patterns = self._patterns[client] = {}
        elif pattern in patterns:
            return Subscribed.ALREADY
        elif len(patterns) >= MAX_SUBSCRIPTIONS:
            return Subscribed.TOO_MANY
        patterns[pattern] = None
        self._add(client, pattern)
        return Subscribed.NEW

    def unsubscribe(self, client: Client, pattern: bytes) -> bool:
        """
        Unsubscribe C{client} from C{pattern}.

        @return: Whether it was subscribed.
        """
        patterns = self._patterns.get(client)
        if patterns is None or pattern not in patterns:
            return False
        del patterns[pattern]
        if not patterns:
            del self._patterns[client]
        self._remove(client, pattern)
        return True

    def drop(self, client: Client) -> None:
        """
        Forget C{client} and all its subscriptions.
        """
        patterns = self._patterns.pop(client, None)
        if patterns:
            for pattern in patterns:
                self._remove(client, pattern)

    def patterns(self, client: Client) -> Iterable[bytes]:
        """
        The patterns C{client} is subscribed to, in the order given.
        """
        return self._patterns.get(client, {}).keys()

    # Topics.

    def subscribers(self, topic: bytes) -> Collection[Client]:
        """
        The clients subscribed to C{topic} (a valid topic), each once,
        however many of its patterns match.

        The collection is the router's own and changes with the
        subscriptions: do not change it, and copy it before iterating if
        the subscriptions may change meanwhile.
        """
        for routes in (self._tables, self._routes):
            route = routes.get(topic)
            if route is not None:
                if route.generation == self._generation:
                    routes.move_to_end(topic)
                    return route.subscribers
                self._forget(routes, topic)
        tables = self._match(tuple(topic.split(b".")))
        if not tables:
            return self._cache(topic, _NOBODY, False)
        if len(tables) == 1:
            return self._cache(topic, tables[0], False)
        union: Counter[Client] = Counter()
        for table in tables:
            union.update(table.keys())
        return self._cache(topic, union, True)

    def _match(self, tokens: tuple[bytes, ...]) -> list[dict[Client, None]]:
        """
        The tables of the patterns that match a topic's tokens.
        """
        found: list[dict[Client, None]] = []
        count = len(tokens)
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            edge = node.edge
            j = i + len(edge)
            if j > count:
                continue
            if node.wild:
                if any(
                    e != t and e != b"*" for e, t in zip(edge, tokens[i:j], strict=True)
                ):
                    continue
            elif j - i > 1 and tokens[i:j] != edge:
                # A literal child was found by its first token already.
                continue
            if j == count:
                if node.here:
                    found.append(node.here)
                continue
            if node.rest:
                found.append(node.rest)
            children = node.children
            if children is not None:
                child = children.get(tokens[j])
                if child is not None:
                    stack.append((child, j))
                star = children.get(b"*")
                if star is not None:
                    stack.append((star, j))
        return found

    # The trie.

    def _add(self, client: Client, pattern: bytes) -> None:
        """
        Put C{client} in the table of C{pattern}, creating its path, and
        keep the cache right.
        """
        tokens, rest = _split(pattern)
        node = self._root
        i = 0
        count = len(tokens)
        while i < count:
            children = node.children
            if children is None:
                children = node.children = {}
            child = children.get(tokens[i])
            if child is None:
                child = children[tokens[i]] = _Node(tokens[i:])
                node = child
                break
            edge = child.edge
            shared = 1
            most = min(len(edge), count - i)
            while shared < most and edge[shared] == tokens[i + shared]:
                shared += 1
            if shared < len(edge):
                # The pattern leaves (or ends inside) the edge: split it.
                middle = _Node(edge[:shared])
                child.edge = edge[shared:]
                child.wild = b"*" in child.edge
                middle.children = {child.edge[0]: child}
                children[tokens[i]] = middle
                child = middle
            node = child
            i += shared
        if rest:
            if node.rest is None:
                node.rest = {}
            node.rest[client] = None
        else:
            if node.here is None:
                node.here = {}
            node.here[client] = None
        self._changed(client, pattern, 1, node.here)

    def _remove(self, client: Client, pattern: bytes) -> None:
        """
        Take C{client} out of the table of C{pattern}, pruning what is left
        empty, and keep the cache right.
        """
        tokens, rest = _split(pattern)
        path: list[tuple[_Node, bytes]] = []
        node = self._root
        i = 0
        while i < len(tokens):
            child = node.children.get(tokens[i]) if node.children else None
            if child is None:
                return
            path.append((node, tokens[i]))
            node = child
            i += len(child.edge)
        table = node.rest if rest else node.here
        if table is None or client not in table:
            return
        del table[client]
        if not table:
            if rest:
                node.rest = None
            else:
                node.here = None
        self._changed(client, pattern, -1, node.here)
        while path and node.here is None and node.rest is None:
            parent, key = path.pop()
            children = node.children
            if children is None:
                assert parent.children is not None
                del parent.children[key]
                if not parent.children:
                    parent.children = None
                node = parent
                continue
            if len(children) == 1:
                # A node that only leads to another: merge the two.
                [child] = children.values()
                child.edge = node.edge + child.edge
                child.wild = child.wild or node.wild
                assert parent.children is not None
                parent.children[key] = child
            break

    # The cache.

    def _changed(
        self,
        client: Client,
        pattern: bytes,
        change: int,
        table: dict[Client, None] | None,
    ) -> None:
        """
        C{client}'s subscription to C{pattern} was added (C{change} 1) or
        removed (-1): keep the cached routes right.

        @param table: The table of C{pattern}'s node now (literal patterns).
        """
        if _isWild(pattern):
            self._generation += 1
            return
        # A literal pattern matches one topic: the one it spells.
        route = self._tables.get(pattern)
        if route is not None and route.table is not table:
            # Only right if it is that very table, which just changed.
            self._forget(self._tables, pattern)
        route = self._routes.get(pattern)
        if route is None:
            return
        subscribers = route.table
        matching = subscribers.get(client, 0) + change
        if matching > 0:
            if client not in subscribers:
                self.entries += 1
            subscribers[client] = matching
        elif client in subscribers:
            del subscribers[client]
            self.entries -= 1
        while self.entries > MAX_ROUTE_ENTRIES:
            self._forget(self._routes, next(iter(self._routes)))

    def _cache(
        self, topic: bytes, table: dict[Client, Any], union: bool
    ) -> Collection[Client]:
        """
        Cache the subscribers of C{topic}, forgetting the least recently
        used routes of the same cache past its bounds.

        @param table: The one table that matches, or the union of several.
        @return: Its subscribers.
        """
        route = _Route(table, union, self._generation)
        size = len(table) if union else 0
        if size > MAX_ROUTE_ENTRIES:
            return route.subscribers
        routes = self._routes if union else self._tables
        while routes and (
            len(routes) >= MAX_ROUTES
            or (union and self.entries + size > MAX_ROUTE_ENTRIES)
        ):
            self._forget(routes, next(iter(routes)))
        routes[topic] = route
        self.entries += size
        return route.subscribers

    def _forget(self, routes: OrderedDict[bytes, _Route], topic: bytes) -> None:
        """
        Forget the cached route of C{topic} in C{routes}.
        """
        route = routes.pop(topic)
        if route.union:
            self.entries -= len(route.table)
