"""
The hub with accounts (C{--hub-auth}): C{/login}, the rights of users and of
anonymous clients, filtered subscriptions, nicknames, the counting and
logging of refusals and failed logins, the reload on C{SIGHUP}; in memory
with a fake clock (and a hypothesis test that no delivery crosses a
permission), then against a real C{twistd netdemo} driven by C{nc}.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netdemo.accounts import Accounts, Rule, User, hashPassword, loadAccounts
from netdemo.hubauth import (
    LOGIN_BURST,
    LOGIN_QUEUE,
    AccountsFile,
    LoginBusy,
    LoginVerifier,
    isLoopback,
)
from netdemo.hubwire import parseDelivery, patternMatches
from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from netdemo.pubsub import HubService
from netdemo.signals import HangupService
from netdemo.tap import Options
from tests.pubsubhelpers import FakeClient, FakeHub
from tests.support import PATIENCE, Daemon, captureEvents, poll, requireTool
from tests.test_pubsub_bounds import timers

ALICE = "alice-token-0123456789"
ROOT = "root-token-0123456789ab"
BOB = "bob password"

#: A cheap hash (the tests check many logins); the real cost is the default.
BOB_HASH = hashPassword(BOB, n=16, r=1, p=1)

ACCOUNTS = f"""
[users.alice]
token = "{ALICE}"
publish = {{ allow = ["lab.>"], deny = ["lab.secret.>"] }}
subscribe = {{ allow = [">"], deny = ["lab.secret.>"] }}
nicks = ["al"]

[users.bob]
password = "{BOB_HASH}"
publish = {{ allow = ["chat", "lab.bob.>"] }}
subscribe = {{ allow = ["chat", "lab.>"] }}

[users.root]
token = "{ROOT}"
publish = {{ allow = [">"] }}
subscribe = {{ allow = [">"] }}
"""

ANONYMOUS = """
[anonymous]
publish = { allow = ["public.>"] }
subscribe = { allow = ["public.>", "chat"] }
nicks = ["guest"]
"""


def accountsFile(testCase: SynchronousTestCase, text: str) -> str:
    """
    A file holding C{text}, removed after the test.
    """
    fd, path = tempfile.mkstemp(prefix="netdemo-accounts-", suffix=".toml")
    os.write(fd, text.encode())
    os.close(fd)
    testCase.addCleanup(os.remove, path)
    return path


class AuthHub(FakeHub):
    """
    An in-memory hub with accounts read from a file of the test's, whose
    secrets are checked at once on the reactor thread (unless
    C{verifyLogin} is replaced).
    """

    def __init__(
        self, testCase: SynchronousTestCase, text: str = ACCOUNTS, **limits: Any
    ) -> None:
        self.path = accountsFile(testCase, text)
        metrics = MemoryMetrics()
        self.auth = AccountsFile(self.path, loadAccounts(text), metrics)
        super().__init__(
            HubLimits(**{"presence": False, **limits}),
            ConnectionLimits(maxPerPeer=0),
            self.auth,
            metrics,
        )
        self.factory.verifyLogin = lambda accounts, name, secret, wanted: succeed(
            accounts.login(name, secret)
        )
        testCase.addCleanup(self.stop)

    def login(self, name: str, secret: str) -> FakeClient:
        """
        A client logged in as C{name}, its lines so far read.
        """
        client = self.connect()
        client.send(f"/login {name} {secret}\n".encode())
        answers = client.new()
        assert answers[-1] == b"+OK logged in as " + name.encode(), answers
        return client

    def rewrite(self, text: str) -> bool:
        """
        Write C{text} to the file and reload it, as C{SIGHUP} does.
        """
        Path(self.path).write_text(text)
        return self.auth.reload()

    def denied(self, user: str, action: str) -> float:
        """
        C{netdemo_pubsub_permission_denied_total} of C{user} and C{action}.
        """
        return self.metrics.value(
            "netdemo_pubsub_permission_denied_total",
            service="pubsub",
            user=user,
            action=action,
        )


class AnonymousTests(SynchronousTestCase):
    """
    Clients that have not logged in.
    """

    def test_onlyLogin(self) -> None:
        """
        Without C{[anonymous]}, a client is told to log in, is not
        subscribed to the default topic, and may only C{/login}, C{/ping}
        and C{/quit}: anything else is C{-ERR permission denied}, counted
        for the user C{anonymous}.
        """
        hub = AuthHub(self)
        a, root = hub.connect(), hub.login("root", ROOT)
        self.assertEqual(a.new()[1:], [b"* this hub needs a login: /login USER SECRET"])
        root.send(b"hello\n")
        a.send(b"hello\n/pub lab.x y\n/who\n/sub chat\n/nick zed\n/ping\n")
        self.assertEqual(
            a.new(),
            [
                b"-ERR permission denied: publish chat",
                b"-ERR permission denied: publish lab.x",
                b"-ERR permission denied: /who (log in first)",
                b"-ERR permission denied: /sub (log in first)",
                b"-ERR permission denied: /nick (log in first)",
                b"+OK pong",
            ],
        )
        self.assertEqual(root.new(), [])
        self.assertEqual(hub.denied("anonymous", "publish"), 2)
        self.assertEqual(hub.denied("anonymous", "command"), 3)
        a.send(b"/quit\n")
        self.assertEqual(a.new(), [b"+OK bye"])

    def test_anonymousTable(self) -> None:
        """
        With C{[anonymous]}, a client that has not logged in has its rights:
        subscribed to the default topic if they allow it, commands allowed,
        publish and subscribe as the table says, nicknames it lists.
        """
        hub = AuthHub(self, ACCOUNTS + ANONYMOUS)
        a, root = hub.connect(), hub.login("root", ROOT)
        a.new()
        root.send(b"hello\n/pub public.x hi\n/pub lab.x no\n")
        a.send(b"/sub public.>\n/sub lab.>\n/nick guest\n/nick al\n")
        self.assertEqual(
            a.new(),
            [
                b"<root> hello",
                b"+OK subscribed to public.>",
                b"-ERR permission denied: subscribe lab.>",
                b"+OK nick guest",
                b"-ERR permission denied: nick al",
            ],
        )
        root.send(b"/pub public.y one\n/pub lab.y two\n")
        a.send(b"/pub public.z three\nfour\n/who\n")
        self.assertEqual(
            a.new(),
            [
                b"[public.y] <root> one",
                b"+OK",
                b"-ERR permission denied: publish chat",
                b"+OK who 2: guest root",
            ],
        )


class LoginTests(SynchronousTestCase):
    """
    C{/login USER SECRET}.
    """

    def test_token(self) -> None:
        """
        A token logs in: the answer names the user, who is then shown by
        name and may publish where the file says, and nowhere else.
        """
        hub = AuthHub(self)
        root = hub.login("root", ROOT)
        root.send(b"/sub lab.>\n")
        root.new()
        a = hub.login("alice", ALICE)
        self.assertEqual(a.identity, b"alice")
        a.send(b"/pub lab.x hi\n/pub lab.secret.x no\n/pub other no\nplain\n")
        self.assertEqual(
            a.new(),
            [
                b"+OK",
                b"-ERR permission denied: publish lab.secret.x",
                b"-ERR permission denied: publish other",
                b"-ERR permission denied: publish chat",
            ],
        )
        self.assertEqual(root.new(), [b"[lab.x] <alice> hi"])
        self.assertEqual(hub.denied("alice", "publish"), 3)

    def test_sameRead(self) -> None:
        """
        Lines after C{/login} in the same read are handled with the rights
        of the user it logged in as.
        """
        hub = AuthHub(self)
        root = hub.login("root", ROOT)
        root.send(b"/sub lab.>\n")
        root.new()
        a = hub.connect()
        a.new()
        a.send(f"/login alice {ALICE}\n/pub lab.x hi\n".encode())
        self.assertEqual(a.new(), [b"+OK logged in as alice", b"+OK"])
        self.assertEqual(root.new(), [b"[lab.x] <alice> hi"])

    def test_password(self) -> None:
        """
        A password (scrypt hash) logs in too; the secret is the rest of the
        line, spaces included.
        """
        hub = AuthHub(self)
        b = hub.login("bob", BOB)
        b.send(b"/sub lab.>\n/sub >\n")
        self.assertEqual(
            b.new(),
            [b"+OK subscribed to lab.>", b"-ERR permission denied: subscribe >"],
        )

    def test_failed(self) -> None:
        """
        A wrong secret and an unknown user get the same answer; both are
        counted; the secret is never logged, and a name that is not a user
        is not either (it may be a password typed in the wrong place).
        """
        events = captureEvents(self)
        hub = AuthHub(self)
        a = hub.connect()
        a.new()
        a.send(b"/login alice wrong-secret\n/login s3cret-typed-as-name x\n")
        self.assertEqual(a.new(), [b"-ERR login failed"] * 2)
        self.assertEqual(a.identity, b"127.0.0.1:40001")
        self.assertEqual(
            hub.metrics.value("netdemo_pubsub_login_failures_total", service="pubsub"),
            2,
        )
        logged = repr(list(events))
        self.assertNotIn("wrong-secret", logged)
        self.assertNotIn("s3cret-typed-as-name", logged)
        [failed] = [e for e in events if e.get("event") == "login_failed"]
        self.assertEqual(failed["user"], "alice")

    def test_usage(self) -> None:
        """
        C{/login} without both words, a second C{/login}, and C{/login} on a
        hub without accounts are usage errors.
        """
        hub = AuthHub(self)
        b = hub.connect()
        b.new()
        b.send(b"/login alice\n")
        self.assertEqual(b.new(), [b"-ERR usage: /login USER SECRET"])
        a = hub.login("alice", ALICE)
        a.send(b"/login root " + ROOT.encode() + b"\n")
        self.assertEqual(a.new(), [b"-ERR already logged in as alice"])
        plain = FakeHub(HubLimits(presence=False))
        self.addCleanup(plain.stop)
        c = plain.connect()
        c.new()
        c.send(b"/login alice x\n")
        self.assertEqual(c.new(), [b"-ERR login: this hub has no accounts"])

    def test_waitsForTheAnswer(self) -> None:
        """
        While a secret is being checked (in a thread), the hub stops
        reading the client; what it sent after C{/login} is handled once the
        answer came, with the new rights.
        """
        hub = AuthHub(self)
        pending: list[Deferred[Any]] = []

        def verify(
            accounts: Accounts, name: str, secret: str, wanted: Any
        ) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            d.addCallback(lambda _: accounts.login(name, secret))
            return d

        hub.factory.verifyLogin = verify
        a = hub.connect()
        a.new()
        a.send(f"/login alice {ALICE}\n/pub lab.x hi\n/ping\n".encode())
        self.assertEqual(a.new(), [])
        self.assertEqual(a.transport.producerState, "paused")
        pending[0].callback(None)
        hub.clock.advance(0)
        self.assertEqual(a.new(), [b"+OK logged in as alice", b"+OK", b"+OK pong"])
        self.assertEqual(a.transport.producerState, "producing")

    def test_failuresSlowed(self) -> None:
        """
        Failed logins from one address: a few at once, then one a second;
        each later attempt waits for its turn (the client's input held),
        and a success gives its turn back.
        """
        hub = AuthHub(self)
        a = hub.connect()
        a.new()
        a.send(b"/login alice nope\n" * LOGIN_BURST)
        self.assertEqual(a.new(), [b"-ERR login failed"] * LOGIN_BURST)
        a.send(b"/login alice nope\n/ping\n")
        self.assertEqual(a.new(), [])
        hub.clock.advance(0.9)
        self.assertEqual(a.new(), [])
        hub.clock.advance(0.1)
        self.assertEqual(a.new(), [b"-ERR login failed", b"+OK pong"])
        b = hub.connect()
        b.new()
        b.send(f"/login alice {ALICE}\n".encode())
        hub.clock.advance(1.0)
        self.assertEqual(b.new(), [b"+OK logged in as alice"])

    def test_closedWhileWaiting(self) -> None:
        """
        A client that goes away while its login waits for its turn leaves
        no timer behind.
        """
        hub = AuthHub(self)
        a = hub.connect()
        a.send(b"/login alice nope\n" * (LOGIN_BURST + 1))
        self.assertEqual(len(timers(hub)), 1)
        a.transport.loseConnection()
        self.assertEqual(timers(hub), [])


class FakePool:
    """
    A thread pool that runs nothing until told: each call waits in
    L{calls} for L{finish}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, onResult: Any, f: Any, *args: Any) -> None:
        self.calls.append((onResult, f, args))

    def finish(self) -> None:
        """
        Run the oldest call and report its result, as a thread would.
        """
        onResult, f, args = self.calls.pop(0)
        onResult(True, f(*args))


class FakeThreadReactor:
    """
    Just what L{LoginVerifier} uses of a reactor.
    """

    def __init__(self) -> None:
        self.pool = FakePool()

    def getThreadPool(self) -> FakePool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


class LoginVerifierTests(SynchronousTestCase):
    """
    L{LoginVerifier}: a few secrets checked at once, a bounded queue of
    logins waiting, and no check for a client that went away.
    """

    def test_queueBounded(self) -> None:
        """
        With every thread busy and the queue full, one more login fails at
        once with L{LoginBusy}, unchecked; a finished check lets the next
        waiting one start.
        """
        reactor = FakeThreadReactor()
        verify = LoginVerifier(reactor, concurrency=2, queue=3)
        accounts = loadAccounts(ACCOUNTS)
        results: list[Any] = []
        for _ in range(5):
            verify(accounts, "alice", ALICE).addCallback(results.append)
        self.assertEqual((len(reactor.pool.calls), verify.waiting), (2, 3))
        busy = verify(accounts, "alice", ALICE)
        self.failureResultOf(busy, LoginBusy)
        self.assertEqual((len(reactor.pool.calls), verify.waiting), (2, 3))
        reactor.pool.finish()
        self.assertEqual([user.name for user in results], ["alice"])
        self.assertEqual((len(reactor.pool.calls), verify.waiting), (2, 2))
        while reactor.pool.calls:
            reactor.pool.finish()
        self.assertEqual(len(results), 5)
        self.assertEqual(verify.waiting, 0)

    def test_unwantedNotChecked(self) -> None:
        """
        A login whose answer is no longer wanted when its turn comes (its
        client went away) takes no thread and answers L{None}.
        """
        reactor = FakeThreadReactor()
        verify = LoginVerifier(reactor, concurrency=1, queue=8)
        accounts = loadAccounts(ACCOUNTS)
        first = verify(accounts, "alice", ALICE)
        gone = [False]
        second = verify(accounts, "alice", ALICE, lambda: not gone[0])
        gone[0] = True
        reactor.pool.finish()
        self.assertEqual(self.successResultOf(first).name, "alice")
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(reactor.pool.calls, [])

    def test_hubAnswersBusy(self) -> None:
        """
        The hub answers a login that found the queue full with C{-ERR login
        busy, try again}, counts it as a failed login, and gives its
        address's turn back: a later attempt is checked at once.
        """
        hub = AuthHub(self)
        reactor = FakeThreadReactor()
        hub.factory.verifyLogin = LoginVerifier(reactor, concurrency=1, queue=0)
        a, b = hub.connect(), hub.connect()
        a.new()
        b.new()
        a.send(f"/login alice {ALICE}\n".encode())
        b.send(f"/login root {ROOT}\n/ping\n".encode())
        self.assertEqual(a.new(), [])
        self.assertEqual(b.new(), [b"-ERR login busy, try again", b"+OK pong"])
        self.assertEqual(hub.factory.loginFailures, 1)
        reactor.pool.finish()
        hub.clock.advance(0)
        self.assertEqual(a.new(), [b"+OK logged in as alice"])
        # The busy answer gave its token back: LOGIN_BURST failures are
        # checked at once, then the next one waits for its turn.
        for _ in range(LOGIN_BURST):
            b.send(b"/login root nope\n")
            reactor.pool.finish()
            hub.clock.advance(0)
        self.assertEqual(b.new(), [b"-ERR login failed"] * LOGIN_BURST)
        b.send(b"/login root nope\n")
        self.assertEqual(reactor.pool.calls, [])
        hub.clock.advance(1.0)
        self.assertEqual(len(reactor.pool.calls), 1)

    def test_goneClientNotChecked(self) -> None:
        """
        A client that goes away while its login waits for a thread costs
        no check.
        """
        hub = AuthHub(self)
        reactor = FakeThreadReactor()
        hub.factory.verifyLogin = LoginVerifier(reactor, concurrency=1, queue=8)
        a, b = hub.connect(), hub.connect()
        a.send(f"/login alice {ALICE}\n".encode())
        b.send(f"/login root {ROOT}\n".encode())
        b.transport.loseConnection()
        reactor.pool.finish()
        hub.clock.advance(0)
        self.assertEqual(reactor.pool.calls, [])
        self.assertEqual(a.new()[-1], b"+OK logged in as alice")


class RightsTests(SynchronousTestCase):
    """
    What a logged-in user may subscribe to and be called.
    """

    def test_filtered(self) -> None:
        """
        A subscription that overlaps a deny is accepted, filtered: it never
        gets a line of a denied topic; one inside a deny is refused.
        """
        hub = AuthHub(self)
        a, root = hub.login("alice", ALICE), hub.login("root", ROOT)
        a.send(b"/sub lab.>\n/sub lab.secret.*\n/sub lab.rack.>\n")
        self.assertEqual(
            a.new(),
            [
                b"+OK subscribed to lab.> (filtered: some of its topics are denied)",
                b"-ERR permission denied: subscribe lab.secret.*",
                b"+OK subscribed to lab.rack.>",
            ],
        )
        root.send(b"/pub lab.secret.k no\n/pub lab.a yes\n/pub lab.rack.b yes\n")
        self.assertEqual(a.new(), [b"[lab.a] <root> yes", b"[lab.rack.b] <root> yes"])
        a.send(b"/unsub lab.>\n")
        self.assertNotIn(a.protocol, hub.factory.filtered)

    def test_history(self) -> None:
        """
        C{/history} of a topic one may not receive is refused; C{/topics}
        lists only topics one may receive.
        """
        hub = AuthHub(self)
        a, root = hub.login("alice", ALICE), hub.login("root", ROOT)
        root.send(b"/pub lab.secret.k no\n/pub lab.a yes\n")
        a.send(b"/history lab.secret.k\n/history lab.a\n/topics\n")
        self.assertEqual(
            a.new(),
            [
                b"-ERR permission denied: history lab.secret.k",
                b"[lab.a] <root> yes",
                b"+OK history 1 lines, last seq 1",
                b"+OK topics subscribed: chat; with history: lab.a",
            ],
        )
        epoch = hub.factory.history.epoch.encode()
        a.send(b"/history since 0 lab.secret.k\n/history since 0 lab.a\n")
        self.assertEqual(
            a.new(),
            [
                b"-ERR permission denied: history lab.secret.k",
                b"[lab.a] <root> yes",
                b"+OK history 1 lines since 0, last seq 1, epoch " + epoch,
            ],
        )

    def test_nick(self) -> None:
        """
        A user may take only the nicknames the file gives it (its name
        included), never another user's.
        """
        hub = AuthHub(self)
        a = hub.login("alice", ALICE)
        a.send(b"/nick al\n/nick bob\n/nick zed\n/nick alice\n")
        self.assertEqual(
            a.new(),
            [
                b"+OK nick al",
                b"-ERR permission denied: nick bob",
                b"-ERR permission denied: nick zed",
                b"+OK nick alice",
            ],
        )
        self.assertEqual(hub.denied("alice", "nick"), 2)


class PublishRateTests(SynchronousTestCase):
    """
    C{--publish-rate} with accounts.
    """

    def test_perUser(self) -> None:
        """
        A user's connections share one bucket; an anonymous connection has
        its own.
        """
        hub = AuthHub(self, ACCOUNTS + ANONYMOUS, publishRate=10.0)
        root = hub.login("root", ROOT)
        root.send(b"/sub lab.>\n/sub public.>\n")
        root.new()
        first, second = hub.login("alice", ALICE), hub.login("alice", ALICE)
        first.send(b"/pub lab.a x\n" * 10)
        second.send(b"/pub lab.b y\n" * 5)
        self.assertEqual(len(root.new()), 10)
        self.assertTrue(second.protocol.held)
        guest = hub.connect()
        guest.send(b"/pub public.c z\n" * 10)
        self.assertEqual(len(root.new()), 10)
        hub.clock.advance(0.5)
        self.assertEqual(len(root.new()), 5)
        self.assertFalse(second.protocol.held)
        throttled = {
            user: hub.metrics.value(
                "netdemo_pubsub_publish_throttled_total", service="pubsub", user=user
            )
            for user in ("alice", "anonymous", "root")
        }
        self.assertEqual(throttled, {"alice": 1, "anonymous": 0, "root": 0})


class ReloadTests(SynchronousTestCase):
    """
    The file read again (C{SIGHUP}) applies to every connection at once.
    """

    def test_rightsChange(self) -> None:
        """
        A subscription no longer allowed is dropped, with a notice, and gets
        nothing more; publishing follows the new rules at once.
        """
        events = captureEvents(self)
        hub = AuthHub(self)
        a, root = hub.login("alice", ALICE), hub.login("root", ROOT)
        a.send(b"/sub lab.>\n/sub public.x\n")
        a.new()
        changed = ACCOUNTS.replace(
            'subscribe = { allow = [">"], deny = ["lab.secret.>"] }',
            'subscribe = { allow = ["public.>", "chat"] }',
        ).replace('allow = ["lab.>"], deny', 'allow = ["public.>"], deny')
        self.assertTrue(hub.rewrite(changed))
        self.assertEqual(
            a.new(), [b"* subscription to lab.> dropped: permission denied"]
        )
        root.send(b"/pub lab.a no\n/pub public.x yes\n")
        a.send(b"/pub lab.a no\n/pub public.x mine\n")
        self.assertEqual(
            a.new(),
            [
                b"[public.x] <root> yes",
                b"-ERR permission denied: publish lab.a",
                b"+OK",
            ],
        )
        self.assertIn("accounts_reloaded", [e.get("event") for e in events])
        self.assertEqual(
            hub.metrics.value(
                "netdemo_accounts_reloads_total", service="pubsub", result="ok"
            ),
            1,
        )

    def test_anonymousGranted(self) -> None:
        """
        Rights given to anonymous clients by a reload apply to those
        connected: they are subscribed to the default topic if allowed.
        """
        hub = AuthHub(self)
        a, root = hub.connect(), hub.login("root", ROOT)
        hub.rewrite(ACCOUNTS + ANONYMOUS)
        a.new()
        root.send(b"hi\n")
        self.assertEqual(a.new(), [b"<root> hi"])

    def test_userRemoved(self) -> None:
        """
        A connection whose user is no longer in the file is closed, and
        the user's counts are forgotten.
        """
        hub = AuthHub(self)
        b = hub.login("bob", BOB)
        b.send(b"/pub nope x\n")
        self.assertEqual(hub.denied("bob", "publish"), 1)
        start = ACCOUNTS.index("[users.bob]")
        end = ACCOUNTS.index("[users.root]")
        hub.rewrite(ACCOUNTS[:start] + ACCOUNTS[end:])
        self.assertEqual(b.new()[-1], b"-ERR closing: account removed")
        self.assertTrue(b.closed)
        self.assertNotIn(("bob", "publish"), hub.factory.denied)

    def test_badFileKept(self) -> None:
        """
        A file that cannot be used keeps the accounts in use, logs an error
        naming what is wrong, and is counted.
        """
        events = captureEvents(self)
        hub = AuthHub(self)
        self.assertFalse(hub.rewrite("[users.x]\npublish = 3\n"))
        a = hub.login("alice", ALICE)
        self.assertEqual(a.identity, b"alice")
        self.assertEqual(
            hub.metrics.value(
                "netdemo_accounts_reloads_total", service="pubsub", result="error"
            ),
            1,
        )
        [failed] = [e for e in events if e.get("event") == "accounts_reload_failed"]
        self.assertIn("users.x", failed["error"])


class HangupTests(SynchronousTestCase):
    """
    L{HangupService}: C{SIGHUP} while it runs, shared through
    L{netdemo.signals.chainSignal}.
    """

    def setUp(self) -> None:
        original = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, original)

    def test_chained(self) -> None:
        """
        While running, C{SIGHUP} calls the handler installed before, then
        calls back on the reactor thread; stopping puts that one back.
        """
        calls: list[str] = []

        class Reactor:
            def callFromThread(self, f: Any) -> None:
                calls.append("from-thread")
                f()

        def previous(signum: int, frame: Any) -> None:
            calls.append("previous")

        signal.signal(signal.SIGHUP, previous)
        service = HangupService(Reactor(), lambda: calls.append("reload"))
        service.startService()
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(calls, ["previous", "from-thread", "reload"])
        service.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), previous)

    def test_defaultNotChained(self) -> None:
        """
        The default action (terminate) is not chained: it is put back when
        the service stops.
        """
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        service = HangupService(None, lambda: None)
        service.startService()
        self.assertTrue(callable(signal.getsignal(signal.SIGHUP)))
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_DFL)


class FakePort:
    """
    A listening port bound to C{address}.
    """

    def __init__(self, address: Any) -> None:
        self.address = address

    def getHost(self) -> Any:
        return self.address


def fakePort(address: Any) -> Any:
    """
    A L{FakePort}, for where a listening port is expected.
    """
    return FakePort(address)


class PlaintextWarningTests(SynchronousTestCase):
    """
    C{--hub-auth} with a plain-TCP listener beyond loopback is warned of
    once.
    """

    def test_once(self) -> None:
        """
        Two listeners on every address: one warning; loopback: none.
        """
        events = captureEvents(self)
        hub = AuthHub(self)
        service = HubService("pubsub", hub.factory, [], hub.clock)
        service.listened(fakePort(IPv4Address("TCP", "127.0.0.1", 1)), "tcp:1")
        service.listened(fakePort(IPv6Address("TCP", "::1", 1)), "tcp6:1")
        self.assertEqual(
            [e for e in events if e.get("event") == "hub_auth_plaintext"], []
        )
        service.listened(fakePort(IPv4Address("TCP", "0.0.0.0", 1)), "tcp:1")
        service.listened(fakePort(IPv6Address("TCP", "::", 1)), "tcp6:1")
        warned = [e for e in events if e.get("event") == "hub_auth_plaintext"]
        self.assertEqual([e["address"] for e in warned], ["0.0.0.0:1"])
        self.assertTrue(isLoopback("127.0.0.2"))
        self.assertFalse(isLoopback("192.0.2.1"))


class OptionTests(SynchronousTestCase):
    """
    C{--hub-auth} on the command line.
    """

    def test_bad(self) -> None:
        """
        A missing or wrong file stops the start with one line naming the
        option and what is wrong.
        """
        for text, message in [
            (None, "cannot read it"),
            ("[users.x]\n", "users.x: needs a password, a token or a certificate"),
            ("nonsense", "not TOML"),
            ("#" * (1 << 20) + "\n", "larger than 1 MiB"),
        ]:
            path = "/nonexistent/accounts.toml" if text is None else None
            if text is not None:
                path = accountsFile(self, text)
            options = Options()
            with self.assertRaises(usage.UsageError) as caught:
                options.parseOptions(["--pubsub", "8008", "--hub-auth", str(path)])
            self.assertIn(f"--hub-auth {path!r}: {message}", str(caught.exception))

    def test_good(self) -> None:
        """
        A good file is read when the options are.
        """
        options = Options()
        options.parseOptions(
            ["--pubsub", "8008", "--hub-auth", accountsFile(self, ACCOUNTS)]
        )
        self.assertEqual(sorted(options.hubAccounts.users), ["alice", "bob", "root"])


# Permissions drawn at random: patterns over a small alphabet of tokens, so
# that they often overlap.
_tokens = st.sampled_from([b"a", b"b", b"c"])
_topics = st.lists(_tokens, min_size=1, max_size=3).map(b".".join)
_patterns = st.one_of(
    _topics,
    st.lists(st.sampled_from([b"a", b"b", b"*"]), min_size=1, max_size=2).map(
        lambda tokens: b".".join([*tokens, b">"])
    ),
    st.lists(st.sampled_from([b"a", b"b", b"*"]), min_size=1, max_size=3).map(
        b".".join
    ),
    st.just(b">"),
)
_rules = st.builds(
    lambda allow, deny: Rule(tuple(allow), tuple(deny)),
    st.lists(_patterns, max_size=3),
    st.lists(_patterns, max_size=2),
)


class NoDeliveryCrossesAPermissionTests(SynchronousTestCase):
    """
    Through the real hub protocol on in-memory transports.
    """

    @settings(max_examples=80, deadline=None)
    @given(
        st.lists(st.tuples(_rules, _rules), min_size=2, max_size=4),
        st.lists(st.tuples(st.integers(0, 3), _patterns), max_size=8),
        st.lists(st.tuples(st.integers(0, 3), _topics), min_size=1, max_size=10),
    )
    def test_model(
        self,
        users: list[tuple[Rule, Rule]],
        subscriptions: list[tuple[int, bytes]],
        publications: list[tuple[int, bytes]],
    ) -> None:
        """
        Whatever the users' publish and subscribe rules, their subscriptions
        and publications: a client receives a line exactly when its
        publisher may publish the topic, one of its accepted subscriptions
        matches the topic, and its rules permit the topic; every refused
        action is answered C{-ERR permission denied}.
        """
        names = [f"u{n}" for n in range(len(users))]
        accounts = Accounts(
            {
                name: User(name, publish, subscribe, token=f"{name}-token-0123456789")
                for name, (publish, subscribe) in zip(names, users, strict=True)
            }
        )
        hub = FakeHub(
            HubLimits(presence=False),
            ConnectionLimits(maxPerPeer=0),
            AccountsFile("/nonexistent", accounts, MemoryMetrics()),
        )
        try:
            hub.factory.verifyLogin = lambda a, n, s, w: succeed(a.login(n, s))
            clients = []
            for name in names:
                client = hub.connect()
                client.send(f"/login {name} {name}-token-0123456789\n".encode())
                client.send(b"/unsub chat\n")
                client.new()
                clients.append(client)
            accepted: list[list[bytes]] = [[] for _ in names]
            for who, pattern in subscriptions:
                who %= len(names)
                clients[who].send(b"/sub " + pattern + b"\n")
                [answer] = clients[who].new()
                rule = users[who][1]
                refused = rule.subscription(pattern).value == "refused"
                if refused:
                    self.assertEqual(
                        answer, b"-ERR permission denied: subscribe " + pattern
                    )
                else:
                    self.assertTrue(answer.startswith(b"+OK"), answer)
                    accepted[who].append(pattern)
            expected: list[list[bytes]] = [[] for _ in names]
            received: list[list[bytes]] = [[] for _ in names]
            for n, (who, topic) in enumerate(publications):
                who %= len(names)
                text = b"line %d" % n
                clients[who].send(b"/pub " + topic + b" " + text + b"\n")
                allowed = users[who][0].permits(topic)
                lines = clients[who].new()
                received[who].extend(x for x in lines if x.startswith(b"["))
                self.assertEqual(
                    [x for x in lines if not x.startswith(b"[")],
                    [
                        b"+OK"
                        if allowed
                        else b"-ERR permission denied: publish " + topic
                    ],
                )
                if not allowed:
                    continue
                tokens = topic.split(b".")
                for other in range(len(names)):
                    if other == who:
                        continue
                    if users[other][1].permits(topic) and any(
                        patternMatches(p.split(b"."), tokens) for p in accepted[other]
                    ):
                        expected[other].append(topic + b" " + text)
            for other, client in enumerate(clients):
                got = []
                for line in received[other] + client.new():
                    delivery = parseDelivery(line)
                    assert delivery is not None, line
                    got.append(delivery.topic + b" " + delivery.text)
                    self.assertTrue(users[other][1].permits(delivery.topic))
                self.assertEqual(got, expected[other])
        finally:
            hub.stop()


class NetcatSession:
    """
    C{nc} talking to a hub: lines typed in, lines read back.
    """

    def __init__(self, nc: str, port: int) -> None:
        self.process = subprocess.Popen(
            [nc, "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer = b""
        self.lines: list[bytes] = []

    def type(self, line: str) -> None:
        """
        Type one line.
        """
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def read(self) -> list[bytes]:
        """
        Every line read so far.
        """
        assert self.process.stdout is not None
        data = self.process.stdout.read()
        if data:
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            self.lines.extend(lines)
        return self.lines

    def answer(self, line: str) -> bytes:
        """
        Type a command; its answer (the next C{+OK} or C{-ERR} line).
        """
        before = len([x for x in self.read() if x.startswith((b"+OK", b"-ERR"))])

        def answered() -> bytes | None:
            answers = [x for x in self.read() if x.startswith((b"+OK", b"-ERR"))]
            return answers[before] if len(answers) > before else None

        self.type(line)
        return poll(answered, f"the answer to {line!r}: {self.lines[-3:]!r}")

    def waitFor(self, text: bytes) -> bytes:
        """
        Wait for a line containing C{text}.
        """

        def found() -> bytes | None:
            return next((x for x in self.read() if text in x), None)

        return poll(found, f"a line with {text!r}: {self.lines[-3:]!r}")

    def close(self) -> None:
        """
        End C{nc}.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(PATIENCE)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def reaches(daemon: Daemon, value: float, name: str, **labels: str) -> None:
    """
    Wait until the daemon's status page shows C{value} for one series (the
    page is rendered at most twice a second), a service's or not.
    """
    import json
    import urllib.request

    host, port = daemon.address("http")
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{shown}}}"
    seen: list[float] = []

    def shows() -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://{host}:{port}/status.json"
        with opener.open(url, timeout=PATIENCE) as response:
            document = json.load(response)
        samples = list(document["metrics"])
        for service in document["services"]:
            samples.extend(service["metrics"])
        seen[:] = [float(m["value"]) for m in samples if m["series"] == series]
        return seen == [value]

    poll(shows, f"{series} at {value} (it is {seen})")


class NetcatDaemonTests(SynchronousTestCase):
    """
    A real C{twistd netdemo --hub-auth FILE}, with C{nc} as users alice and
    bob.
    """

    def test_aliceAndBob(self) -> None:
        """
        Alice and bob see C{-ERR permission denied} exactly where the file
        says, and deliveries never cross a deny; after the file is edited,
        C{SIGHUP} changes an existing connection's rights at once.
        """
        nc = requireTool("nc", "netcat-openbsd")
        path = accountsFile(self, ACCOUNTS)
        daemon = Daemon(
            "--pubsub",
            "tcp:0:interface=127.0.0.1",
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--no-presence",
            "--hub-auth",
            path,
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2)
        port = daemon.port("pubsub")
        alice, bob = NetcatSession(nc, port), NetcatSession(nc, port)
        self.addCleanup(alice.close)
        self.addCleanup(bob.close)
        alice.waitFor(b"this hub needs a login")
        self.assertEqual(
            alice.answer("/sub lab.>"), b"-ERR permission denied: /sub (log in first)"
        )
        self.assertEqual(alice.answer("/login alice wrong"), b"-ERR login failed")
        self.assertEqual(
            alice.answer(f"/login alice {ALICE}"), b"+OK logged in as alice"
        )
        self.assertEqual(bob.answer(f"/login bob {BOB}"), b"+OK logged in as bob")
        self.assertEqual(
            alice.answer("/sub lab.>"),
            b"+OK subscribed to lab.> (filtered: some of its topics are denied)",
        )
        self.assertEqual(bob.answer("/sub lab.>"), b"+OK subscribed to lab.>")
        self.assertEqual(bob.answer("/sub >"), b"-ERR permission denied: subscribe >")
        self.assertEqual(
            alice.answer("/pub lab.secret.k x"),
            b"-ERR permission denied: publish lab.secret.k",
        )
        self.assertEqual(
            bob.answer("/pub lab.x x"), b"-ERR permission denied: publish lab.x"
        )
        self.assertEqual(alice.answer("/pub lab.x from alice"), b"+OK")
        self.assertEqual(bob.answer("/pub lab.bob.t from bob"), b"+OK")
        bob.waitFor(b"[lab.x] <alice> from alice")
        alice.waitFor(b"[lab.bob.t] <bob> from bob")
        self.assertEqual(alice.answer("/nick bob"), b"-ERR permission denied: nick bob")
        # Alice's subscriptions shrink to public.>: her lab.> goes at once.
        Path(path).write_text(
            ACCOUNTS.replace(
                'subscribe = { allow = [">"], deny = ["lab.secret.>"] }',
                'subscribe = { allow = ["public.>", "chat"] }',
            )
        )
        os.kill(daemon.process.pid, signal.SIGHUP)
        alice.waitFor(b"* subscription to lab.> dropped: permission denied")
        self.assertEqual(
            alice.answer("/sub lab.>"), b"-ERR permission denied: subscribe lab.>"
        )
        self.assertEqual(bob.answer("/pub lab.bob.t again"), b"+OK")
        self.assertEqual(alice.answer("/ping"), b"+OK pong")
        self.assertNotIn(
            b"again", b"\n".join(alice.read()), "a delivery crossed the new rights"
        )
        reaches(
            daemon, 1, "netdemo_accounts_reloads_total", service="pubsub", result="ok"
        )
        reaches(
            daemon,
            1,
            "netdemo_pubsub_permission_denied_total",
            service="pubsub",
            user="bob",
            action="subscribe",
        )
        # The daemon is still running: SIGHUP did not end it.
        self.assertIsNone(daemon.process.poll())
        log = daemon.logPath.read_text()
        self.assertNotIn(ALICE, log)
        self.assertNotIn(BOB, log)
        self.assertTrue(re.search(r"failed login from 127\.0\.0\.1:\d+ as alice", log))


class LoginFloodDaemonTests(SynchronousTestCase):
    """
    A real C{twistd netdemo --hub-auth FILE} flooded with logins from many
    source addresses at once, as an attacker with many addresses would:
    each costs a real scrypt hash, so only a bounded queue of them is
    checked and the rest are answered at once.
    """

    def test_floodFromManyAddresses(self) -> None:
        """
        400 clients, each from its own loopback address (so that the
        per-address slowing of failed logins does not apply), send one
        wrong login at once: every one is answered; most are told the hub
        is busy without a check (at most L{LOGIN_QUEUE} wait for the two
        threads); all count as failed logins; then a good login works.
        """
        path = accountsFile(self, ACCOUNTS)
        daemon = Daemon(
            "--pubsub",
            "tcp:0:interface=127.0.0.1",
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--no-presence",
            "--hub-auth",
            path,
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2)
        port = daemon.port("pubsub")
        count = 400
        clients: list[socket.socket] = []
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.settimeout(PATIENCE)
            s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
            s.connect(("127.0.0.1", port))
            clients.append(s)
        buffers = [b""] * count

        def readUntil(i: int, what: bytes) -> bytes:
            while what not in buffers[i]:
                data = clients[i].recv(4096)
                if not data:
                    raise AssertionError(f"client {i} closed: {buffers[i]!r}")
                buffers[i] += data
            line, _, buffers[i] = buffers[i].partition(what)
            return line

        for i in range(count):
            readUntil(i, b"/login USER SECRET\n")
        for s in clients:
            s.sendall(b"/login nobody wrong-secret\n")
        answers = [readUntil(i, b"\n") for i in range(count)]
        busy = answers.count(b"-ERR login busy, try again")
        failed = answers.count(b"-ERR login failed")
        self.assertEqual(busy + failed, count, answers)
        # All 400 arrive within a few hash times; far fewer than that can
        # have been checked, so most were refused unchecked.
        self.assertGreater(busy, count // 2)
        self.assertGreaterEqual(failed, LOGIN_QUEUE)
        reaches(daemon, count, "netdemo_pubsub_login_failures_total", service="pubsub")
        with socket.create_connection(("127.0.0.1", port), PATIENCE) as good:
            good.sendall(f"/login alice {ALICE}\n".encode())
            seen = b""
            while b"+OK logged in as alice" not in seen:
                data = good.recv(4096)
                self.assertTrue(data, seen)
                seen += data
