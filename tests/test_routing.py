"""
Tests for L{netdemo.routing}: the subscription trie and its route cache,
with plain calls and against a brute-force model.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo import routing
from netdemo.hubwire import DEFAULT_TOPIC, patternMatches
from netdemo.routing import MAX_SUBSCRIPTIONS, Router, Subscribed

TOKENS = [b"a", b"b", b"c"]
TOPICS = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=5).map(b".".join)
PATTERNS = st.one_of(
    st.just(b">"),
    st.tuples(
        st.lists(st.sampled_from([*TOKENS, b"*"]), min_size=1, max_size=5),
        st.booleans(),
    ).map(lambda p: b".".join(p[0]) + (b".>" if p[1] else b"")),
)


class Counted:
    """
    A client that counts how often the router hashes or compares it: the
    work a lookup does on account of this client.
    """

    touched = 0

    def __init__(self, name: int) -> None:
        self.name = name

    def __hash__(self) -> int:
        Counted.touched += 1
        return self.name

    def __eq__(self, other: object) -> bool:
        Counted.touched += 1
        return isinstance(other, Counted) and other.name == self.name


def nodes(router: Router[Any]) -> list[Any]:
    """
    Every node of C{router}'s trie but the root.
    """
    found = []
    stack = [router._root]
    while stack:
        node = stack.pop()
        children = list((node.children or {}).values())
        found.extend(children)
        stack.extend(children)
    return found


def expected(model: dict[int, set[bytes]], topic: bytes) -> set[int]:
    """
    The clients of C{model} subscribed to C{topic}, by brute force.
    """
    tokens = topic.split(b".")
    return {
        c
        for c, patterns in model.items()
        if any(patternMatches(p.split(b"."), tokens) for p in patterns)
    }


class RouterTests(SynchronousTestCase):
    """
    L{Router} with plain calls.
    """

    def test_subscribers(self) -> None:
        """
        A topic's subscribers are the clients with a matching pattern, each
        once, however many of its patterns match.
        """
        router: Router[str] = Router()
        for client, pattern in [
            ("a", b"lab.*.temp"),
            ("a", b"lab.>"),
            ("b", b"lab.>"),
            ("c", DEFAULT_TOPIC),
        ]:
            self.assertIs(router.subscribe(client, pattern), Subscribed.NEW)
        self.assertEqual(sorted(router.subscribers(b"lab.rack1.temp")), ["a", "b"])
        self.assertEqual(list(router.subscribers(DEFAULT_TOPIC)), ["c"])
        self.assertEqual(list(router.subscribers(b"lab")), [])
        self.assertEqual(list(router.patterns("a")), [b"lab.*.temp", b"lab.>"])
        self.assertEqual(list(router.patterns("nobody")), [])

    def test_changes(self) -> None:
        """
        Subscribing, unsubscribing and dropping a client change the
        subscribers at once.
        """
        router: Router[str] = Router()
        router.subscribe("a", b"t")
        self.assertEqual(list(router.subscribers(b"t")), ["a"])
        router.subscribe("b", b"*")
        self.assertEqual(sorted(router.subscribers(b"t")), ["a", "b"])
        self.assertTrue(router.unsubscribe("a", b"t"))
        self.assertFalse(router.unsubscribe("a", b"t"))
        self.assertFalse(router.unsubscribe("nobody", b"t"))
        self.assertEqual(list(router.subscribers(b"t")), ["b"])
        router.drop("b")
        router.drop("b")
        self.assertEqual(list(router.subscribers(b"t")), [])

    def test_maxSubscriptions(self) -> None:
        """
        A client holds at most L{MAX_SUBSCRIPTIONS} patterns; subscribing
        twice to one is no change.
        """
        router: Router[str] = Router()
        for i in range(MAX_SUBSCRIPTIONS):
            router.subscribe("a", b"t%d" % i)
        self.assertIs(router.subscribe("a", b"t0"), Subscribed.ALREADY)
        self.assertIs(router.subscribe("a", b"more"), Subscribed.TOO_MANY)
        self.assertEqual(len(list(router.patterns("a"))), MAX_SUBSCRIPTIONS)

    def test_lookupTouchesOnlyMatches(self) -> None:
        """
        Finding the subscribers of a topic does no work for the clients
        that do not match it: with 5,000 clients, each on a topic of its
        own and on the default topic, looking up a topic nobody has, or one
        client's topic, hashes no client; joining and leaving touch only
        the client concerned.
        """
        router: Router[Counted] = Router()
        clients = [Counted(n) for n in range(5000)]
        for client in clients:
            router.subscribe(client, DEFAULT_TOPIC)
            router.subscribe(client, b"u%d" % client.name)
        Counted.touched = 0
        self.assertEqual(len(router.subscribers(b"nobody.here")), 0)
        self.assertEqual(list(router.subscribers(b"u17")), [clients[17]])
        self.assertEqual(len(router.subscribers(DEFAULT_TOPIC)), 5000)
        self.assertEqual(Counted.touched, 0)
        newcomer = Counted(5000)
        router.subscribe(newcomer, DEFAULT_TOPIC)
        router.drop(newcomer)
        self.assertLessEqual(Counted.touched, 10)

    def test_oneTableAsItIs(self) -> None:
        """
        When one table matches, it is returned as it is, not copied: the
        collection changes with the subscriptions.
        """
        router: Router[str] = Router()
        router.subscribe("a", DEFAULT_TOPIC)
        chat = router.subscribers(DEFAULT_TOPIC)
        router.subscribe("b", DEFAULT_TOPIC)
        self.assertEqual(list(chat), ["a", "b"])
        self.assertIs(router.subscribers(DEFAULT_TOPIC), chat)

    def test_literalChangeUpdatesUnion(self) -> None:
        """
        The cached union of several tables is updated in place when a
        client subscribes to, or leaves, the literal topic: it is not
        recomputed, and stays right.
        """
        router: Router[str] = Router()
        router.subscribe("watcher", b">")
        router.subscribe("a", DEFAULT_TOPIC)
        union = router.subscribers(DEFAULT_TOPIC)
        route = router._routes[DEFAULT_TOPIC]
        router.subscribe("b", DEFAULT_TOPIC)
        router.subscribe("watcher", DEFAULT_TOPIC)
        router.drop("a")
        self.assertIs(router._routes[DEFAULT_TOPIC], route)
        self.assertIs(router.subscribers(DEFAULT_TOPIC), union)
        self.assertEqual(sorted(union), ["b", "watcher"])
        router.unsubscribe("watcher", DEFAULT_TOPIC)
        self.assertEqual(sorted(router.subscribers(DEFAULT_TOPIC)), ["b", "watcher"])
        self.assertEqual(router.entries, 2)

    def test_wildChangeIsLazy(self) -> None:
        """
        A wildcard subscription does not scan the cached routes: the ones it
        may change are recomputed when next asked for.
        """
        router: Router[str] = Router()
        router.subscribe("watcher", b">")
        router.subscribe("a", b"x")
        router.subscribe("b", b"y")
        self.assertEqual(sorted(router.subscribers(b"x")), ["a", "watcher"])
        self.assertEqual(sorted(router.subscribers(b"y")), ["b", "watcher"])
        router.subscribe("late", b"*")
        self.assertEqual(len(router._routes), 2)
        self.assertEqual(sorted(router.subscribers(b"x")), ["a", "late", "watcher"])
        router.unsubscribe("late", b"*")
        self.assertEqual(sorted(router.subscribers(b"y")), ["b", "watcher"])

    def test_evictOneAtATime(self) -> None:
        """
        Past L{routing.MAX_ROUTES} cached unions, or
        L{routing.MAX_ROUTE_ENTRIES} subscribers listed in them, the least
        recently used union is forgotten, one at a time.  Topics that one
        table matches, or none, are cached apart, so that asking for many
        of them forgets none of the unions.
        """
        self.patch(routing, "MAX_ROUTES", 5)
        router: Router[int] = Router()
        router.subscribe(0, b">")
        for i in range(1, 7):
            router.subscribe(i, b"t%d" % i)
        for i in range(1, 6):
            router.subscribers(b"t%d" % i)
        router.subscribers(b"t1")
        for i in range(100):
            self.assertEqual(list(router.subscribers(b"other.%d" % i)), [0])
        self.assertEqual(len(router._tables), 5)
        self.assertEqual(list(router._routes), [b"t2", b"t3", b"t4", b"t5", b"t1"])
        router.subscribers(b"t6")
        self.assertEqual(list(router._routes), [b"t3", b"t4", b"t5", b"t1", b"t6"])
        self.assertEqual(router.entries, 10)
        self.patch(routing, "MAX_ROUTE_ENTRIES", 11)
        router.subscribe(7, b"t6")
        router.subscribe(8, b"t6")
        self.assertEqual(list(router._routes), [b"t4", b"t5", b"t1", b"t6"])
        self.assertEqual(sorted(router.subscribers(b"t6")), [0, 6, 7, 8])
        router.subscribers(b"t2")
        self.assertEqual(list(router._routes), [b"t5", b"t1", b"t6", b"t2"])
        self.assertEqual(router.entries, 10)

    def test_longPatternsCompact(self) -> None:
        """
        A pattern of many tokens costs one node, not one per token; nodes
        split where patterns part, and merge back when they are gone.
        """
        router: Router[str] = Router()
        long = b".".join([b"aa"] * 80)
        router.subscribe("a", long)
        self.assertEqual(len(nodes(router)), 1)
        router.subscribe("b", long + b".x")
        router.subscribe("c", long[:-3] + b".*.y")
        self.assertEqual(len(nodes(router)), 4)
        self.assertEqual(list(router.subscribers(long)), ["a"])
        self.assertEqual(list(router.subscribers(long[:-3] + b".q.y")), ["c"])
        router.drop("a")
        router.drop("c")
        self.assertEqual(len(nodes(router)), 1)
        self.assertEqual(list(router.subscribers(long + b".x")), ["b"])
        router.drop("b")
        self.assertEqual(nodes(router), [])

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["sub", "sub", "unsub", "drop", "route"]),
                st.integers(0, 5),
                PATTERNS,
                TOPICS,
            ),
            max_size=80,
        ),
        st.integers(1, 6),
    )
    def test_bruteForce(
        self, steps: list[tuple[str, int, bytes, bytes]], maxRoutes: int
    ) -> None:
        """
        After any sequence of changes (routes looked up in between, so that
        the cache is exercised, and evicts), each topic's subscribers are
        exactly the clients that L{patternMatches} says match, each once;
        every cached union is right; the trie keeps no node without a
        subscription that leads to fewer than two others.
        """
        self.patch(routing, "MAX_ROUTES", maxRoutes)
        router: Router[int] = Router()
        model: dict[int, set[bytes]] = {}
        for action, client, pattern, topic in steps:
            if action == "sub":
                router.subscribe(client, pattern)
                model.setdefault(client, set()).add(pattern)
            elif action == "unsub":
                router.unsubscribe(client, pattern)
                model.get(client, set()).discard(pattern)
            elif action == "drop":
                router.drop(client)
                model.pop(client, None)
            got = list(router.subscribers(topic))
            self.assertEqual(len(got), len(set(got)))
            self.assertEqual(set(got), expected(model, topic), (topic, model))
            for cache in (router._tables, router._routes):
                for cached, route in cache.items():
                    if route.generation == router._generation:
                        self.assertEqual(
                            set(route.subscribers), expected(model, cached)
                        )
            self.assertEqual(
                router.entries,
                sum(len(r.table) for r in router._routes.values() if r.union),
            )
            for node in nodes(router):
                self.assertTrue(node.here or node.rest or len(node.children) > 1)
