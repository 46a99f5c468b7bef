# -*- test-case-name: tests.test_pubsub_auth -*-
"""
The hub's side of C{--hub-auth}: the accounts file as the hub uses it
(L{AccountsFile}: loaded, reloaded on C{SIGHUP}, counted), each user's
rights with their per-topic decisions cached (L{Rights}), the checking of
secrets off the reactor thread (L{LoginVerifier}) and the slowing of failed
logins per source address (L{LOGIN_RATE}).

What the rules mean is L{netdemo.accounts}'s; how the hub applies them is
L{netdemo.pubsub}'s (C{docs/security.md}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, fail
from twisted.logger import Logger

from netdemo.accounts import Access, Accounts, Rule, User, loadAccounts
from netdemo.hubwire import nickKey
from netdemo.metrics import IMetrics, sampleOf

__all__ = [
    "LOGIN_BURST",
    "LOGIN_MAX_WAIT",
    "LOGIN_QUEUE",
    "LOGIN_RATE",
    "LOGIN_SOURCES",
    "LOGIN_THREADS",
    "AccountsFile",
    "HubAccounts",
    "LoginBusy",
    "LoginVerifier",
    "Rights",
    "isLoopback",
    "readAccounts",
]

#: The largest accounts file read.
MAX_FILE = 1 << 20

#: Topics whose decision each user's rights cache, per action; past it the
#: cache starts again.
MAX_CACHED = 4096

#: Failed logins one source address may make at once, then how many a
#: second; a login that would wait longer than L{LOGIN_MAX_WAIT} seconds
#: for its turn fails at once, unchecked.  L{LOGIN_SOURCES} addresses are
#: tracked (the least recently used forgotten; one that comes back starts
#: with no failures left).
LOGIN_BURST = 5
LOGIN_RATE = 1.0
LOGIN_MAX_WAIT = 30.0
LOGIN_SOURCES = 10000

#: Secrets checked at once, each in a thread of the reactor's pool (an
#: scrypt hash costs about 16 MiB and tens of milliseconds); the others
#: wait their turn.
LOGIN_THREADS = 2

#: Logins that may wait for one of those threads at once; one more fails
#: at once, unchecked (L{LoginBusy}), so that a flood of logins from many
#: addresses delays a good login by at most this many checks.
LOGIN_QUEUE = 64


def _permitted(cache: dict[bytes, bool], rule: Rule, topic: bytes) -> bool:
    """
    Whether C{rule} permits C{topic}, from C{cache} (at most L{MAX_CACHED}
    topics, emptied when full) or computed and kept there.
    """
    allowed = cache.get(topic)
    if allowed is None:
        allowed = rule.permits(topic)
        if len(cache) >= MAX_CACHED:
            cache.clear()
        cache[topic] = allowed
    return allowed


class Rights:
    """
    What one user (or the anonymous clients) may do, with the decision for
    each topic cached: the hub's hot path asks for a topic's decision with
    one dictionary lookup.

    @ivar user: The account.
    @ivar name: Its name, as the hub shows it (C{anonymous} for clients
        that have not logged in).
    @ivar label: Its name as a metric label.
    @ivar restricted: Whether it may only log in, C{/ping} and C{/quit}
        (anonymous clients when the file has no C{[anonymous]} table).
    """

    __slots__ = ("_publish", "_receive", "label", "name", "restricted", "user")

    def __init__(self, user: User, restricted: bool = False) -> None:
        self.user = user
        self.name = user.name.encode("utf-8")
        self.label = user.name
        self.restricted = restricted
        self._publish: dict[bytes, bool] = {}
        self._receive: dict[bytes, bool] = {}

    def mayPublish(self, topic: bytes) -> bool:
        """
        Whether it may publish to C{topic}.
        """
        return _permitted(self._publish, self.user.publish, topic)

    def mayReceive(self, topic: bytes) -> bool:
        """
        Whether a line on C{topic} may be delivered to it.
        """
        return _permitted(self._receive, self.user.subscribe, topic)

    def subscription(self, pattern: bytes) -> Access:
        """
        Whether it may subscribe to C{pattern}, and how (L{Access}).
        """
        return self.user.subscribe.subscription(pattern)


class HubAccounts:
    """
    One version of the accounts file, as the hub uses it: the rights of
    each user and of the anonymous clients, and which user each nickname
    belongs to.

    @ivar accounts: The file's contents.
    @ivar anonymous: The rights of the clients that have not logged in.
    @ivar users: User name to rights.
    """

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.anonymous = Rights(accounts.anonymous, not accounts.hasAnonymous)
        self.users = {name: Rights(user) for name, user in accounts.users.items()}
        owners: dict[bytes, str] = {}
        for name in accounts.users:
            owners[nickKey(name.encode("utf-8"))] = name
        for name, user in accounts.users.items():
            for nick in user.nicks:
                owners.setdefault(nickKey(nick.encode("utf-8")), name)
        self._owners = owners

    def mayUseNick(self, rights: Rights, nick: bytes) -> bool:
        """
        Whether a client with C{rights} may take C{nick}: one its account
        lists (or its user name), and not one that belongs to another user.
        """
        owner = self._owners.get(nickKey(nick))
        if owner is not None and owner != rights.user.name:
            return False
        return rights.user.mayUseNick(nick.decode("ascii"))


def readAccounts(path: str) -> Accounts:
    """
    Read and parse an accounts file.

    @raise ValueError: One line saying what is wrong (it never holds a
        secret: L{netdemo.accounts} names keys, not values).
    """
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ValueError(f"cannot read it ({e.strerror or e})") from None
    if len(text) > MAX_FILE:
        # Never a part of it: a cut file could drop a deny.
        raise ValueError(f"larger than {MAX_FILE >> 20} MiB")
    try:
        return loadAccounts(text)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None


class AccountsFile:
    """
    The C{--hub-auth} file: the version in use, and how to read it again.

    A reload that fails (the file is missing, or wrong) keeps the version in
    use and logs an error; one that works replaces it and tells every
    listener (the hub, which applies it to its connections at once).  Both
    are counted in C{netdemo_accounts_reloads_total{service="pubsub",result}}.

    @ivar path: The file.
    @ivar current: The version in use.
    @ivar listeners: Called with each new version.
    """

    _log = Logger()

    def __init__(self, path: str, accounts: Accounts, metrics: IMetrics) -> None:
        self.path = path
        self.current = HubAccounts(accounts)
        self.listeners: list[Callable[[HubAccounts], None]] = []
        self.reloads = {"ok": 0, "error": 0}
        metrics.addCollector(self._collect)

    def _collect(self) -> list[Any]:
        return [
            sampleOf(
                "netdemo_accounts_reloads_total",
                count,
                service="pubsub",
                result=result,
            )
            for result, count in self.reloads.items()
        ]

    def reload(self) -> bool:
        """
        Read the file again and apply it, or keep the version in use.

        @return: Whether the new version is in use.
        """
        try:
            accounts = readAccounts(self.path)
        except ValueError as e:
            self.reloads["error"] += 1
            self._log.error(
                "hub accounts {path}: not reloaded, the previous ones stay in use: "
                "{error}",
                event="accounts_reload_failed",
                path=self.path,
                error=str(e),
            )
            return False
        self.reloads["ok"] += 1
        self.current = HubAccounts(accounts)
        self._log.info(
            "hub accounts {path} reloaded: {users} users, anonymous clients "
            "{anonymous}",
            event="accounts_reloaded",
            path=self.path,
            users=len(accounts.users),
            anonymous=(
                "as [anonymous] says" if accounts.hasAnonymous else "may only log in"
            ),
        )
        for listener in self.listeners:
            listener(self.current)
        return True


class LoginBusy(Exception):
    """
    Too many logins wait to be checked (L{LOGIN_QUEUE}): this one was not.
    """


class LoginVerifier:
    """
    Checks a secret against the accounts in a thread of the reactor's pool,
    at most L{LOGIN_THREADS} at once: an scrypt hash costs tens of
    milliseconds, which the reactor thread must not spend.  At most
    L{LOGIN_QUEUE} logins wait for their turn; a login whose client went
    away while it waited is not checked.
    """

    def __init__(
        self,
        reactor: Any,
        concurrency: int = LOGIN_THREADS,
        queue: int = LOGIN_QUEUE,
    ) -> None:
        self.reactor = reactor
        self.queue = queue
        self._semaphore = DeferredSemaphore(concurrency)

    @property
    def waiting(self) -> int:
        """
        How many logins wait for a thread.
        """
        return len(self._semaphore.waiting)

    def __call__(
        self,
        accounts: Accounts,
        name: str,
        secret: str,
        wanted: Callable[[], bool] = lambda: True,
    ) -> Deferred[Any]:
        """
        The user C{name} if C{secret} is theirs, else L{None} (also when
        C{wanted} says, once its turn comes, that the answer is no longer
        wanted); fails with L{LoginBusy} when L{LOGIN_QUEUE} logins wait.
        """
        from twisted.internet.threads import deferToThreadPool

        semaphore = self._semaphore
        if not semaphore.tokens and len(semaphore.waiting) >= self.queue:
            return fail(LoginBusy())
        reactor = self.reactor

        def check() -> Deferred[User | None] | None:
            if not wanted():
                return None
            return deferToThreadPool(
                reactor, reactor.getThreadPool(), accounts.login, name, secret
            )

        return semaphore.run(check)


def isLoopback(host: str) -> bool:
    """
    Whether a listening address is a loopback one (C{127.0.0.1}, C{::1}).
    """
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
