# -*- test-case-name: tests.test_pubsub_rate -*-
"""
Token buckets, the one implementation netdemo has: L{TokenBucket} (the
multicast responder's probe rounds and log lines), a publisher's lines a
second (C{--publish-rate}, L{LineBucket}) and the failed logins of one
source address (L{BucketTable}).  The UDP reflection guard keeps its
per-source buckets in plain lists on its hot path (L{netdemo.guard}).

Nothing here touches a reactor: every call is given the time, so that the
tests drive it with a fake clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["THROTTLE_STEP", "BucketTable", "LineBucket", "TokenBucket"]

#: A throttled publisher is read again once it has earned at least this
#: many seconds' worth of lines (or all it has waiting, if fewer): its lines
#: go out in steps of about this length, not one wake-up per line.
THROTTLE_STEP = 0.1

#: Allowance for the rounding of sums of floats: 9.9999999 tokens are 10.
_EPSILON = 1e-9


class TokenBucket:
    """
    A token bucket: C{rate} tokens a second, at most C{burst} of them.

    @ivar rate: Tokens earned a second.
    @ivar burst: The most tokens it holds.
    @ivar tokens: Tokens now (as of C{last}).
    @ivar last: When C{tokens} was computed.
    """

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(
        self, rate: float, burst: float, now: float, tokens: float | None = None
    ) -> None:
        """
        @param tokens: What it holds at first (at most C{burst}); full by
            default.
        """
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst) if tokens is None else min(float(tokens), burst)
        self.last = now

    def _refill(self, now: float) -> None:
        """
        Earn the tokens of the time since C{last}.  A clock that stepped
        back earns nothing.
        """
        if now > self.last:
            self.tokens = min(
                float(self.burst), self.tokens + (now - self.last) * self.rate
            )
        self.last = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """
        Take C{amount} tokens at C{now}, if there are that many.  A clock
        that stepped back neither adds nor takes tokens.
        """
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class LineBucket(TokenBucket):
    """
    A L{TokenBucket} counted in whole lines, full at first: a publisher's
    allowance (C{--publish-rate}, C{--publish-burst}).
    """

    __slots__ = ()

    def __init__(self, rate: float, burst: int, now: float) -> None:
        super().__init__(rate, burst, now)

    def grant(self, now: float, wanted: int) -> int:
        """
        Take up to C{wanted} tokens at C{now}, as many as there are.

        @return: How many were taken (0 to C{wanted}).
        """
        self._refill(now)
        granted = min(wanted, int(self.tokens + _EPSILON))
        if granted > 0:
            self.tokens = max(0.0, self.tokens - granted)
        return granted

    def wait(self, now: float, waiting: int) -> float:
        """
        Seconds from C{now} until it is worth reading a publisher that has
        C{waiting} lines held: until it holds one step's worth of tokens
        (L{THROTTLE_STEP}), all C{waiting} or a full bucket if fewer, and at
        least one.
        """
        self._refill(now)
        step = max(1, math.ceil(self.rate * THROTTLE_STEP))
        wanted = max(1, min(waiting, self.burst, step))
        missing = wanted - self.tokens
        if missing <= _EPSILON:
            return 0.0
        return missing / self.rate


class BucketTable:
    """
    Token buckets by key (a source address) whose tokens are reserved
    ahead: each attempt takes one token at once, and when there was none it
    is told how long to wait for it (its turn).  So attempts from one key
    proceed at most C{burst} at once, then C{rate} a second, however many
    are made in parallel.  A token can be given back (L{refund}: a login
    that succeeded).

    At most C{size} keys are kept, the one used least recently forgotten
    for a new one; once one was forgotten, a new key starts I{empty}, not
    full, so that rotating more keys than the table holds does not reset
    the limit.

    @ivar rate: Tokens a second each key earns.
    @ivar burst: The most tokens a key holds (and a new key's tokens).
    @ivar size: Keys kept at most.
    @ivar maxWait: The longest wait handed out; an attempt that would wait
        longer is refused (L{reserve} returns L{None}) and takes nothing.
    """

    def __init__(self, rate: float, burst: int, size: int, maxWait: float) -> None:
        self.rate = rate
        self.burst = burst
        self.size = size
        self.maxWait = maxWait
        self._buckets: OrderedDict[Hashable, LineBucket] = OrderedDict()
        self._evicted = False

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: Hashable, now: float) -> LineBucket:
        """
        The bucket of C{key}, brought up to C{now}, made if needed.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = LineBucket(self.rate, self.burst, now)
            if self._evicted:
                bucket.tokens = 0.0
            if len(self._buckets) >= self.size:
                self._buckets.popitem(last=False)
                self._evicted = True
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
            bucket._refill(now)
        return bucket

    def reserve(self, key: Hashable, now: float) -> float | None:
        """
        Take a token of C{key}'s for an attempt at C{now}.

        @return: The seconds the attempt must wait for it (0 when there was
            one), or L{None} when that would be longer than C{maxWait}
            (then nothing was taken).
        """
        bucket = self._bucket(key, now)
        wait = max(0.0, (1.0 - bucket.tokens) / self.rate)
        if wait > self.maxWait:
            return None
        # Below zero: a debt that later attempts wait for.
        bucket.tokens -= 1.0
        return 0.0 if wait <= _EPSILON else wait

    def refund(self, key: Hashable, now: float) -> None:
        """
        Give C{key} back the token of an attempt (it succeeded).
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket._refill(now)
            bucket.tokens = min(float(self.burst), bucket.tokens + 1.0)
