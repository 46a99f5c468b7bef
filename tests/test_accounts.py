"""
Tests for L{netdemo.accounts}: pattern containment and overlap against a
brute force over a small universe of topics, rules (deny wins, a delivery
never crosses a deny), the file's grammar and errors, password hashes.
"""

from __future__ import annotations

import itertools
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netdemo.accounts import (
    ANONYMOUS,
    Access,
    Rule,
    contains,
    hashPassword,
    intersects,
    loadAccounts,
    verifyPassword,
)
from netdemo.hubwire import patternMatches
from tests.support import PATIENCE
from tests.test_cli import NETDEMO

#: Every topic of 1 to 4 tokens drawn from a, b and c: patterns below use
#: only a and b, so c is the token no pattern names, and 4 tokens is one
#: more than a pattern has (what a final ">" may add).
UNIVERSE = [
    b".".join(tokens)
    for length in range(1, 5)
    for tokens in itertools.product([b"a", b"b", b"c"], repeat=length)
]

patterns = st.builds(
    lambda body, last: b".".join([*body, last] if last else body),
    st.lists(st.sampled_from([b"a", b"b", b"*"]), min_size=0, max_size=3),
    st.sampled_from([b"", b">"]),
).filter(lambda p: p != b"" and len(p.split(b".")) <= 3)


def matching(pattern: bytes) -> set[bytes]:
    """
    The topics of L{UNIVERSE} that C{pattern} matches.
    """
    tokens = pattern.split(b".")
    return {t for t in UNIVERSE if patternMatches(tokens, t.split(b"."))}


def rule(allow: list[bytes], deny: list[bytes]) -> Rule:
    """
    A rule from lists.
    """
    return Rule(tuple(allow), tuple(deny))


class PatternAlgebraTests(SynchronousTestCase):
    """
    L{contains} and L{intersects} say what the sets of topics say.
    """

    @settings(max_examples=400, deadline=None)
    @given(patterns, patterns)
    def test_containsIsSubset(self, outer: bytes, inner: bytes) -> None:
        """
        C{contains(outer, inner)} exactly when every topic C{inner} matches,
        C{outer} matches.
        """
        self.assertEqual(
            contains(outer, inner), matching(inner) <= matching(outer), (outer, inner)
        )

    @settings(max_examples=400, deadline=None)
    @given(patterns, patterns)
    def test_intersectsIsOverlap(self, a: bytes, b: bytes) -> None:
        """
        C{intersects(a, b)} exactly when some topic matches both.
        """
        self.assertEqual(intersects(a, b), bool(matching(a) & matching(b)), (a, b))
        self.assertEqual(intersects(a, b), intersects(b, a))

    def test_examples(self) -> None:
        """
        The cases people write.
        """
        self.assertTrue(contains(b"lab.>", b"lab.*.temp"))
        self.assertTrue(contains(b">", b"a.>"))
        self.assertFalse(contains(b"lab.*", b"lab.>"))
        self.assertFalse(contains(b"lab.>", b"lab"))
        self.assertTrue(intersects(b"lab.*", b"*.x"))
        self.assertFalse(intersects(b"lab.*", b"lab"))


class RuleTests(SynchronousTestCase):
    """
    Deny wins; a subscription is refused, accepted whole, or accepted with
    each delivery checked; no delivery ever crosses a deny.
    """

    def test_publish(self) -> None:
        """
        Allowed and not denied.
        """
        r = rule([b"lab.>"], [b"lab.secret.>"])
        self.assertTrue(r.permits(b"lab.x"))
        self.assertFalse(r.permits(b"lab.secret.x"))
        self.assertFalse(r.permits(b"other"))
        self.assertFalse(Rule().permits(b"anything"))

    def test_subscription(self) -> None:
        """
        Past every allow: refused; inside a deny: refused; overlapping a
        deny: filtered; else full.
        """
        r = rule([b"lab.>"], [b"lab.secret.>"])
        self.assertIs(r.subscription(b">"), Access.REFUSED)
        self.assertIs(r.subscription(b"lab.secret.*"), Access.REFUSED)
        self.assertIs(r.subscription(b"lab.>"), Access.FILTERED)
        self.assertIs(r.subscription(b"lab.rack1.*"), Access.FULL)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(patterns, max_size=3),
        st.lists(patterns, max_size=3),
        st.lists(patterns, min_size=1, max_size=4),
    )
    def test_noDeliveryCrossesADeny(
        self, allow: list[bytes], deny: list[bytes], subscriptions: list[bytes]
    ) -> None:
        """
        Whatever the rules and subscriptions: a topic reaches a subscriber
        (an accepted subscription matches it, and a filtered one checks
        L{Rule.permits}) only if the rule permits it; and every permitted
        topic an accepted subscription matches is delivered.
        """
        r = rule(allow, deny)
        for pattern in subscriptions:
            access = r.subscription(pattern)
            for topic in matching(pattern):
                delivered = access is Access.FULL or (
                    access is Access.FILTERED and r.permits(topic)
                )
                if delivered:
                    self.assertTrue(r.permits(topic), (pattern, topic, access))
                elif access is not Access.REFUSED:
                    self.assertFalse(r.permits(topic), (pattern, topic))
            if access is Access.FULL:
                self.assertTrue(all(r.permits(t) for t in matching(pattern)))


GOOD = """
[users.alice]
password = "{hash}"
publish = {{ allow = ["lab.>"], deny = ["lab.secret.>"] }}
subscribe = {{ allow = [">"] }}
nicks = ["al"]

[users.sensor7]
token = "long-random-string"
publish = {{ allow = ["lab.rack7.>"] }}

[anonymous]
subscribe = {{ allow = ["public.>"] }}
"""


class FileTests(SynchronousTestCase):
    """
    The C{--hub-auth} file: its shape, and an error naming the key for
    anything else.
    """

    def setUp(self) -> None:
        self.hash = hashPassword("wonderland", n=1 << 10)

    def test_good(self) -> None:
        """
        Users with a password or a token, their rules and nicks; the
        anonymous rights; logins.
        """
        accounts = loadAccounts(GOOD.format(hash=self.hash))
        alice = accounts.users["alice"]
        self.assertTrue(alice.publish.permits(b"lab.x"))
        self.assertFalse(alice.publish.permits(b"lab.secret.x"))
        self.assertTrue(alice.mayUseNick("AL"))
        self.assertFalse(alice.mayUseNick("bob"))
        self.assertIs(accounts.login("alice", "wonderland"), alice)
        self.assertIsNone(accounts.login("alice", "wonder"))
        self.assertIsNone(accounts.login("nobody", "wonderland"))
        self.assertIs(
            accounts.login("sensor7", "long-random-string"), accounts.users["sensor7"]
        )
        self.assertIsNone(accounts.login("sensor7", "long-random-strinG"))
        self.assertEqual(accounts.anonymous.name, ANONYMOUS)
        self.assertTrue(accounts.anonymous.subscribe.permits(b"public.news"))
        self.assertNotIn("wonderland", repr(alice))
        self.assertNotIn(self.hash, repr(alice))

    def test_certificates(self) -> None:
        """
        A user may be named by TLS client certificate subjects (one or a
        list), with or without a secret; a subject maps to that user, any
        other to none.  A subject of two users is an error.
        """
        accounts = loadAccounts(
            '[users.alice]\ncertificate = "CN=alice,O=Lab"\n'
            '[users.sensor7]\ntoken = "0123456789abcdefg"\n'
            'certificate = ["CN=sensor7", "CN=sensor7-spare"]\n'
        )
        self.assertIs(
            accounts.forCertificate("CN=alice,O=Lab"), accounts.users["alice"]
        )
        self.assertIs(
            accounts.forCertificate("CN=sensor7-spare"), accounts.users["sensor7"]
        )
        self.assertIsNone(accounts.forCertificate("CN=alice"))
        self.assertIsNone(accounts.login("alice", ""))
        e = self.assertRaises(
            ValueError,
            loadAccounts,
            '[users.a]\ncertificate = "CN=x"\n[users.b]\ncertificate = "CN=x"\n',
        )
        self.assertIn("users.b.certificate: 'CN=x' is users.a's too", str(e))

    def test_noAnonymousTable(self) -> None:
        """
        Without C{[anonymous]}, a client that has not logged in may do
        nothing.
        """
        accounts = loadAccounts('[users.bob]\ntoken = "0123456789abcdefg"\n')
        self.assertIs(accounts.anonymous.subscribe.subscription(b">"), Access.REFUSED)
        self.assertFalse(accounts.anonymous.publish.permits(b"x"))

    def test_errors(self) -> None:
        """
        Each mistake is one line naming where it is.
        """
        for text, where in [
            ("[users.bob]\npublish = { allow = ['x'] }\n", "users.bob: needs"),
            ("[users.bob]\ntoken='0123456789abcdefg'\npublsh = {}\n", "'publsh'"),
            (
                "[users.bob]\ntoken='0123456789abcdefg'\n"
                "publish = { allow = ['lab..x'] }\n",
                "users.bob.publish.allow[0]: 'lab..x'",
            ),
            ("[users.bob]\ntoken = 'short'\n", "users.bob.token"),
            ("[users.bob]\ncertificate = 7\n", "users.bob.certificate"),
            ("[users.bob]\ncertificate = ['alice']\n", "users.bob.certificate"),
            ("[anonymous]\ncertificate = 'CN=x'\n", "anonymous: anonymous"),
            ("[users.bob]\npassword = 'plain'\n", "users.bob.password: not a hash"),
            ("[anonymous]\ntoken = '0123456789abcdefg'\n", "anonymous: anonymous"),
            ("[groups.x]\n", "unknown table 'groups'"),
            ("[users.bob\n", "not TOML"),
            (
                "[users.bob]\npassword = 'scrypt:1048576:8:1:AAAA:AAAA'\n",
                "over 64 MiB",
            ),
        ]:
            e = self.assertRaises(ValueError, loadAccounts, text)
            self.assertIn(where, str(e))
            self.assertNotIn("\n", str(e))


class PasswordTests(SynchronousTestCase):
    """
    Hashes made by L{hashPassword} verify their password only; each has its
    own salt.
    """

    def test_roundTrip(self) -> None:
        """
        Right, wrong, and two hashes of one password differ.
        """
        first = hashPassword("secret", n=1 << 10)
        self.assertTrue(first.startswith("scrypt:1024:8:1:"))
        self.assertTrue(verifyPassword(first, "secret"))
        self.assertFalse(verifyPassword(first, "secreT"))
        self.assertNotEqual(first, hashPassword("secret", n=1 << 10))
        self.assertFalse(verifyPassword("scrypt:garbage", "secret"))


class PasswdCommandTests(SynchronousTestCase):
    """
    C{netdemo passwd} prints a hash of the first line of its input, and
    refuses an empty one.
    """

    def test_hash(self) -> None:
        """
        The printed hash verifies the password; nothing else is printed.
        """
        result = subprocess.run(
            [*NETDEMO, "passwd"],
            input="wonderland\n",
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [line] = result.stdout.splitlines()
        self.assertTrue(verifyPassword(line, "wonderland"))
        self.assertNotIn("wonderland", result.stdout + result.stderr)
        self.assertTrue(loadAccounts(f'[users.a]\npassword = "{line}"\n').users)

    def test_empty(self) -> None:
        """
        An empty password: one line, exit status 2.
        """
        result = subprocess.run(
            [*NETDEMO, "passwd"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr, "netdemo: an empty password\n")
