"""
Tests for L{netdemo.routing}: subscriptions and cached routes, with plain
calls and against a brute-force model.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo import routing
from netdemo.hubwire import DEFAULT_TOPIC, patternMatches
from netdemo.routing import MAX_SUBSCRIPTIONS, Router, Subscribed

TOKENS = [b"a", b"b", b"c"]
TOPICS = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map(b".".join)
PATTERNS = st.one_of(
    st.just(b">"),
    st.tuples(
        st.lists(st.sampled_from([*TOKENS, b"*"]), min_size=1, max_size=4),
        st.booleans(),
    ).map(lambda p: b".".join(p[0]) + (b".>" if p[1] else b"")),
)


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
        self.assertEqual(router.subscribers(b"lab.rack1.temp"), ["a", "b"])
        self.assertEqual(router.subscribers(DEFAULT_TOPIC), ["c"])
        self.assertEqual(router.subscribers(b"lab"), [])
        self.assertEqual(list(router.patterns("a")), [b"lab.*.temp", b"lab.>"])
        self.assertEqual(list(router.patterns("nobody")), [])

    def test_changesInvalidate(self) -> None:
        """
        Subscribing, unsubscribing and dropping a client change the routes
        at once.
        """
        router: Router[str] = Router()
        router.subscribe("a", b"t")
        self.assertEqual(router.subscribers(b"t"), ["a"])
        router.subscribe("b", b"*")
        self.assertEqual(router.subscribers(b"t"), ["a", "b"])
        self.assertTrue(router.unsubscribe("a", b"t"))
        self.assertFalse(router.unsubscribe("a", b"t"))
        self.assertFalse(router.unsubscribe("nobody", b"t"))
        self.assertEqual(router.subscribers(b"t"), ["b"])
        router.drop("b")
        router.drop("b")
        self.assertEqual(router.subscribers(b"t"), [])

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

    def test_routeCacheBounded(self) -> None:
        """
        The route cache is cleared once it lists too many subscribers or
        holds too many topics; answers stay right.
        """
        self.patch(routing, "MAX_ROUTE_ENTRIES", 10)
        self.patch(routing, "MAX_ROUTES", 5)
        router: Router[int] = Router()
        for client in range(4):
            router.subscribe(client, b">")
        for i in range(20):
            self.assertEqual(router.subscribers(b"t.%d" % i), [0, 1, 2, 3])
            self.assertLessEqual(router.entries, 10)
        router.drop(0)
        for i in range(20):
            self.assertEqual(router.subscribers(b"t%d" % i), [1, 2, 3])
            self.assertLessEqual(len(router._routes), 5)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["sub", "unsub", "drop", "route"]),
                st.integers(0, 4),
                PATTERNS,
                TOPICS,
            ),
            max_size=60,
        )
    )
    def test_bruteForce(self, steps: list[tuple[str, int, bytes, bytes]]) -> None:
        """
        After any sequence of changes (routes looked up in between, so the
        cache is exercised), each topic's subscribers are exactly the
        clients that L{patternMatches} says match, each once.
        """
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
            tokens = topic.split(b".")
            expected = {
                c
                for c, patterns in model.items()
                if any(patternMatches(p.split(b"."), tokens) for p in patterns)
            }
            got = router.subscribers(topic)
            self.assertEqual(len(got), len(set(got)))
            self.assertEqual(set(got), expected, (topic, model))
