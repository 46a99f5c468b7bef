# -*- test-case-name: tests.test_accounts -*-
"""
Hub accounts and permissions, without I/O (issue 14, first part): the
C{--hub-auth} file, password hashes, and the rules that say who may publish
to a topic and subscribe to a pattern.

The model is NATS's: each user has C{publish} and C{subscribe} rules, each
a list of hub patterns to C{allow} and a list to C{deny}, deny winning.

  - Publishing to a topic needs an allow pattern that matches it and no
    deny pattern that matches it (L{Rule.permits}).
  - Subscribing to a pattern needs an allow pattern that holds every topic
    the subscription could match (L{contains}), and no deny pattern that
    holds them all (L{Rule.subscription}).  A subscription that only
    overlaps a deny pattern is accepted, and each delivery to it is
    checked (L{Access.FILTERED}): a delivery never crosses a deny.

The file is TOML (read with C{tomllib})::

    [users.alice]
    password = "scrypt:16384:8:1:SALT:KEY"   # netdemo passwd
    publish = { allow = ["lab.>"], deny = ["lab.secret.>"] }
    subscribe = { allow = [">"] }

    [users.sensor7]
    token = "long-random-string"
    publish = { allow = ["lab.rack7.>"] }

    [anonymous]                              # optional
    subscribe = { allow = ["public.>"] }

A user has a C{password} (a hash made by L{hashPassword}, C{netdemo
passwd}) or a C{token} (compared as it is, for machines), optionally
C{nicks}, the nicknames it may take besides its user name.  Without an
C{[anonymous]} table, a client that has not logged in may publish and
subscribe to nothing.  Unknown keys are errors: a typo must not quietly
grant or withhold a right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from enum import Enum
from typing import Any

import tomllib
from attrs import field, frozen

from netdemo.hubwire import isNick, isPattern, patternMatches

__all__ = [
    "ANONYMOUS",
    "Access",
    "Accounts",
    "Rule",
    "User",
    "contains",
    "hashPassword",
    "intersects",
    "loadAccounts",
    "verifyPassword",
]

#: The name of the clients that have not logged in.
ANONYMOUS = "anonymous"

#: scrypt's cost (N), block size (r) and parallelism (p) for new hashes:
#: OWASP's minimum for scrypt, about 16 MiB and 30-60 ms per hash here.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1

#: The most memory a hash from the file may ask scrypt for: a file cannot
#: make one login cost more than this.
SCRYPT_MAX_MEMORY = 64 << 20

#: Bytes of salt, and of derived key.
SALT_BYTES = 16
KEY_BYTES = 32


def _tokens(pattern: bytes) -> list[bytes]:
    return pattern.split(b".")


def contains(outer: bytes, inner: bytes) -> bool:
    """
    Whether every topic that pattern C{inner} matches, pattern C{outer}
    matches too.

    C{*} is one token and a final C{>} one or more: C{lab.>} holds
    C{lab.*.temp} and C{lab.>}; C{lab.*} does not hold C{lab.>}.
    """
    o, i = _tokens(outer), _tokens(inner)
    for n, token in enumerate(o):
        if token == b">":
            return n < len(i)
        if n >= len(i) or i[n] == b">":
            return False
        if token != b"*" and token != i[n]:
            return False
    return len(o) == len(i)


def intersects(a: bytes, b: bytes) -> bool:
    """
    Whether some topic matches both patterns.
    """
    x, y = _tokens(a), _tokens(b)
    for n in range(max(len(x), len(y))):
        if n < len(x) and x[n] == b">":
            return n < len(y)
        if n < len(y) and y[n] == b">":
            return n < len(x)
        if n >= len(x) or n >= len(y):
            return False
        if x[n] != y[n] and x[n] != b"*" and y[n] != b"*":
            return False
    return True


class Access(Enum):
    """
    What a rule says of a subscription.
    """

    #: No delivery to it could be allowed, or it reaches past every allow.
    REFUSED = "refused"
    #: Every topic it matches may be delivered.
    FULL = "full"
    #: Accepted; it overlaps a deny, so each delivery is checked.
    FILTERED = "filtered"


def _patterns(value: Any, where: str) -> tuple[bytes, ...]:
    """
    A list of hub patterns from the file.

    @raise ValueError: Naming C{where}.
    """
    if not isinstance(value, list):
        raise ValueError(f'{where}: a list of patterns, such as ["lab.>"]')
    patterns = []
    for n, item in enumerate(value):
        encoded = item.encode("utf-8") if isinstance(item, str) else None
        if encoded is None or not isPattern(encoded):
            raise ValueError(f"{where}[{n}]: {item!r} is not a hub pattern")
        patterns.append(encoded)
    return tuple(patterns)


@frozen
class Rule:
    """
    Allow and deny patterns for one action (publish or subscribe).
    """

    allow: tuple[bytes, ...] = ()
    deny: tuple[bytes, ...] = ()

    @classmethod
    def fromTable(cls, table: Any, where: str) -> Rule:
        """
        A rule from C{{ allow = [...], deny = [...] }}.

        @raise ValueError: Naming C{where} and what is wrong.
        """
        if not isinstance(table, dict):
            raise ValueError(f'{where}: a table such as {{ allow = [">"] }}')
        unknown = set(table) - {"allow", "deny"}
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        return cls(
            _patterns(table.get("allow", []), f"{where}.allow"),
            _patterns(table.get("deny", []), f"{where}.deny"),
        )

    def permits(self, topic: bytes) -> bool:
        """
        Whether a line on C{topic} may pass: an allow pattern matches it and
        no deny pattern does.
        """
        tokens = _tokens(topic)
        if not any(patternMatches(_tokens(p), tokens) for p in self.allow):
            return False
        return not any(patternMatches(_tokens(p), tokens) for p in self.deny)

    def subscription(self, pattern: bytes) -> Access:
        """
        Whether a subscription to C{pattern} is accepted, and how.
        """
        if not any(contains(a, pattern) for a in self.allow):
            return Access.REFUSED
        if any(contains(d, pattern) for d in self.deny):
            return Access.REFUSED
        if any(intersects(d, pattern) for d in self.deny):
            return Access.FILTERED
        return Access.FULL


@frozen
class User:
    """
    One account: how it proves who it is, and what it may do.

    @ivar password: A hash from L{hashPassword}, or L{None}.
    @ivar token: A secret compared as it is, or L{None}.
    @ivar nicks: Nicknames it may take besides its name.
    @ivar certificates: Subjects of TLS client certificates (RFC 4514, as
        C{openssl x509 -noout -subject -nameopt RFC2253} prints them:
        C{CN=alice,O=Lab}) that log a connection in as this user when the
        hub verifies them (C{--tls-client-ca}).
    """

    name: str
    publish: Rule = Rule()
    subscribe: Rule = Rule()
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nicks: tuple[str, ...] = ()
    certificates: tuple[str, ...] = ()

    def authenticates(self, secret: str) -> bool:
        """
        Whether C{secret} is this user's password or token (in time that
        does not depend on how much of it is right).
        """
        if self.token is not None and hmac.compare_digest(
            self.token.encode("utf-8"), secret.encode("utf-8")
        ):
            return True
        return self.password is not None and verifyPassword(self.password, secret)

    def mayUseNick(self, nick: str) -> bool:
        """
        Whether this user may take C{nick}: its own name or one it was
        given (case folded).
        """
        wanted = nick.casefold()
        return wanted == self.name.casefold() or any(
            wanted == n.casefold() for n in self.nicks
        )


@frozen
class Accounts:
    """
    The users of C{--hub-auth}, and what anonymous clients may do.

    @ivar anonymous: The rights of a client that has not logged in: by
        default, nothing.
    @ivar hasAnonymous: Whether the file has an C{[anonymous]} table.
        Without one, a client that has not logged in may only log in,
        C{/ping} and C{/quit}.
    @ivar bySubject: Certificate subject -> user name (L{User.certificates}).
    """

    users: Mapping[str, User]
    anonymous: User = User(ANONYMOUS)
    hasAnonymous: bool = False

    bySubject: Mapping[str, str] = field(factory=dict, repr=False)

    def forCertificate(self, subject: str) -> User | None:
        """
        The user a verified client certificate's subject maps to, if any.
        """
        name = self.bySubject.get(subject)
        return None if name is None else self.users.get(name)

    def login(self, name: str, secret: str) -> User | None:
        """
        The user C{name} if C{secret} is theirs, else L{None}.  An unknown
        name costs a hash too, so that timing does not tell which names
        exist.
        """
        user = self.users.get(name)
        if user is None:
            verifyPassword(_dummyHash(), secret)
            return None
        return user if user.authenticates(secret) else None


_USER_KEYS = {"password", "token", "publish", "subscribe", "nicks", "certificate"}


def _user(name: str, table: Any, where: str) -> User:
    """
    One user from its table.

    @raise ValueError: Naming C{where} and what is wrong.
    """
    if not isinstance(table, dict):
        raise ValueError(f"{where}: a table")
    unknown = set(table) - _USER_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    password, token = table.get("password"), table.get("token")
    certificates = table.get("certificate", [])
    if isinstance(certificates, str):
        certificates = [certificates]
    if not isinstance(certificates, list) or not all(
        isinstance(c, str) and "=" in c and len(c) <= 1024 for c in certificates
    ):
        raise ValueError(
            f"{where}.certificate: a certificate subject such as"
            ' "CN=alice,O=Lab", or a list of them'
        )
    if name != ANONYMOUS and password is None and token is None and not certificates:
        raise ValueError(f"{where}: needs a password, a token or a certificate")
    if name == ANONYMOUS and (
        password is not None or token is not None or certificates
    ):
        raise ValueError(
            f"{where}: anonymous clients have no password, token or certificate"
        )
    if password is not None:
        if not isinstance(password, str):
            raise ValueError(f"{where}.password: a string made by netdemo passwd")
        _parseHash(password, f"{where}.password")
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ValueError(f"{where}.token: a string of at least 16 characters")
    nicks = table.get("nicks", [])
    if not isinstance(nicks, list) or not all(
        isinstance(n, str) and isNick(n.encode("utf-8")) for n in nicks
    ):
        raise ValueError(f"{where}.nicks: a list of nicknames")
    return User(
        name,
        Rule.fromTable(table.get("publish", {}), f"{where}.publish"),
        Rule.fromTable(table.get("subscribe", {}), f"{where}.subscribe"),
        password,
        token,
        tuple(nicks),
        tuple(certificates),
    )


def loadAccounts(text: bytes | str) -> Accounts:
    """
    Parse a C{--hub-auth} file.

    @raise ValueError: One line naming the key that is wrong (the TOML
        parser's own message for bad TOML).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"not TOML: {e}") from None
    unknown = set(document) - {"users", ANONYMOUS}
    if unknown:
        raise ValueError(f"unknown table {sorted(unknown)[0]!r}")
    users = document.get("users", {})
    if not isinstance(users, dict):
        raise ValueError("users: tables such as [users.alice]")
    parsed = {}
    subjects: dict[str, str] = {}
    for name, table in users.items():
        if not isNick(name.encode("utf-8")) or name == ANONYMOUS:
            raise ValueError(f"users.{name}: not a user name (a nickname)")
        parsed[name] = _user(name, table, f"users.{name}")
        for subject in parsed[name].certificates:
            other = subjects.setdefault(subject, name)
            if other != name:
                raise ValueError(
                    f"users.{name}.certificate: {subject!r} is users.{other}'s too"
                )
    anonymous = User(ANONYMOUS)
    if ANONYMOUS in document:
        anonymous = _user(ANONYMOUS, document[ANONYMOUS], ANONYMOUS)
    return Accounts(parsed, anonymous, ANONYMOUS in document, subjects)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hashPassword(
    password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """
    A hash of C{password} for the file: C{scrypt:N:r:p:SALT:KEY}, salt and
    key in base64.
    """
    salt = os.urandom(SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=SCRYPT_MAX_MEMORY,
        dklen=KEY_BYTES,
    )
    return f"scrypt:{n}:{r}:{p}:{_b64(salt)}:{_b64(key)}"


def _parseHash(
    text: str, where: str = "password"
) -> tuple[int, int, int, bytes, bytes]:
    """
    The parts of a hash made by L{hashPassword}.

    @raise ValueError: Naming C{where}: not such a hash, or costs beyond
        L{SCRYPT_MAX_MEMORY}.
    """
    parts = text.split(":")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError(f"{where}: not a hash made by netdemo passwd") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or not key:
        raise ValueError(f"{where}: scrypt costs out of range")
    if 128 * n * r * p > SCRYPT_MAX_MEMORY // 2:
        raise ValueError(f"{where}: scrypt costs over {SCRYPT_MAX_MEMORY >> 20} MiB")
    return n, r, p, salt, key


def verifyPassword(hashed: str, password: str) -> bool:
    """
    Whether C{password} is the one C{hashed} was made from.
    """
    try:
        n, r, p, salt, key = _parseHash(hashed)
    except ValueError:
        return False
    derived = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=SCRYPT_MAX_MEMORY,
        dklen=len(key),
    )
    return hmac.compare_digest(derived, key)


#: A hash to check unknown names against, so that they cost what known ones
#: do (of a random password; made on first use).
_dummy: list[str] = []


def _dummyHash() -> str:
    if not _dummy:
        _dummy.append(hashPassword(_b64(os.urandom(12))))
    return _dummy[0]
