# -*- test-case-name: tests.test_udpecho -*-
"""
The reflection guard of every datagram responder (UDP echo, the multicast
responder): whether a datagram may be answered.

Classic UDP echo is a reflector (CVE-1999-0103, CERT VU#417980): a forged
source address turns a responder into a traffic amplifier or into one end of
a loop with another echo or chargen service.  L{ReflectionGuard} refuses,
counts by reason and logs at a bounded rate:

  - datagrams larger than the cap (C{too-large}): refused, never truncated;
  - source ports below the floor (C{source-port}; 1024 by default), where
    the other well-known responders live;
  - multicast, broadcast and unspecified source addresses
    (C{source-multicast}, C{source-broadcast}, C{source-unspecified});
  - sources outside the allow-lists (C{not-allowed});
  - more than C{rate} datagrams a second from one source I{network} (a /24
    for IPv4, a /64 for IPv6) after a burst of at most C{burst}
    (C{prefix-rate}): one token bucket per network, shared by every address
    of it, so that forging many addresses in one network does not multiply
    the allowance;
  - more than the service's reply budget, in datagrams and in bytes a
    second (C{global-rate}, C{global-bytes}), whatever the sources: what an
    attacker who rotates through more forged sources than any table holds
    can get at most.

Source addresses live in a table of at most C{maxSources} entries that
evicts the least recently used; each points to its network's bucket, which
lives as long as one of its addresses is in the table.  A network that is
new, or comes back after all its addresses were evicted, starts with a small
allowance (10 ms of its rate, at least L{INITIAL_ALLOWANCE}), never a full
burst: eviction cannot refill a bucket, and the global budget bounds what
rotation can still get.

No reply is longer than C{max(len(request), REPLY_FLOOR)} bytes
(L{replyAllowed}): UDP echo sends the request back, so never more; the
multicast responder answers the classic 6-byte C{Notify} with the 11-byte
C{Acknowledge}.  A bounded floor of L{REPLY_FLOOR} bytes lets a request
shorter than that have its answer, and is no amplifier: every datagram
carries at least 28 bytes of IPv4 and UDP headers (48 for IPv6), so a
12-byte reply to a 1-byte request is 40 bytes on the wire for 29 (1.4
times, at worst; the bare C{Notify} gets 39 for 34), one datagram for one,
within the per-network bucket and the reply budget (C{docs/udp.md}).

The responders add their own reasons (C{destination-not-unicast},
C{not-a-probe}, ...) through L{ReflectionGuard.refuse}, so every refusal is
counted and logged the same way.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger, LogLevel

from netdemo.limits import DatagramLimits
from netdemo.logs import RateLimitedLog
from netdemo.metrics import IMetrics

__all__ = [
    "INITIAL_ALLOWANCE",
    "INITIAL_SECONDS",
    "REPLY_FLOOR",
    "ReflectionGuard",
    "networkOf",
    "replyAllowed",
]

#: The longest reply a request shorter than this may get, in bytes: the
#: classic C{Client: Ping} / C{Server: Pong} exchange (12 bytes each way),
#: and the 11-byte C{Acknowledge} to a bare 6-byte C{Notify}.
REPLY_FLOOR = 12


def replyAllowed(request: int, reply: int) -> bool:
    """
    Whether a reply of C{reply} bytes to a request of C{request} bytes keeps
    the amplification rule: never longer than C{max(request, REPLY_FLOOR)}.
    """
    return reply <= request or reply <= REPLY_FLOOR


#: What a source network that is new (or was evicted) may have answered at
#: once, before it has earned more at C{rate}: what it would earn in
#: L{INITIAL_SECONDS}, but at least L{INITIAL_ALLOWANCE} datagrams (enough
#: for a client's first few requests sent back to back), and at most
#: C{burst}.  With the default rate of 1000 a second, 10 datagrams.
INITIAL_ALLOWANCE = 10
INITIAL_SECONDS = 0.01

#: A token bucket of the reply budget that is off: it never runs out.
_UNLIMITED = 1e300

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networkOf(address: Address) -> tuple[int, int]:
    """
    The key of the network an address is rate-limited with: its /24 (IPv4)
    or /64 (IPv6).
    """
    if address.version == 4:
        return (4, int(address) >> 8)
    return (6, int(address) >> 64)


def _classify(host: str, allow: Sequence[Any]) -> tuple[Address | None, str | None]:
    """
    The source address, and the reason never to answer it if there is one.
    An IPv4-mapped IPv6 address is its IPv4 address.
    """
    try:
        address: Address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None, "source-invalid"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return address, "source-unspecified"
    if address.is_multicast:
        return address, "source-multicast"
    if isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255")
    ):
        return address, "source-broadcast"
    if allow and not any(address in network for network in allow):
        return address, "not-allowed"
    return address, None


class ReflectionGuard:
    """
    Decide whether a datagram may be answered, and count and log every
    refusal.

    The static checks on a source address run once, when the address enters
    the table; later datagrams from it cost a port comparison, one table
    lookup and the updates of two buckets (its network's and the service's
    reply budget, which a batch reader takes once per batch).

    @ivar budgeted: Whether the service has a reply budget.
    @ivar sources: Source address to its network's bucket, least recently
        used first.
    @ivar networks: Network key (L{networkOf}) to its bucket, C{[tokens,
        last update, addresses in the table, key]}.
    """

    _log = Logger()

    def __init__(
        self,
        serviceName: str,
        limits: DatagramLimits,
        metrics: IMetrics,
        clock: Any,
    ) -> None:
        self.serviceName = serviceName
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.sources: OrderedDict[str, list[Any]] = OrderedDict()
        # The table's lookup and its "most recently used" move, bound once.
        self._sourceOf = self.sources.get
        self._touch = self.sources.move_to_end
        self.networks: dict[tuple[int, int], list[Any]] = {}
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._maxDatagram = limits.maxDatagram
        self._portFloor = limits.portFloor
        self._rate = limits.rate
        self._burst = float(max(limits.burst, 1))
        self._initial = min(
            self._burst, max(float(INITIAL_ALLOWANCE), self._rate * INITIAL_SECONDS)
        )
        self._maxSources = max(limits.maxSources, 1)
        # The reply budget: datagrams and bytes, each with a burst of one
        # second's worth (for bytes, at least one largest datagram); an
        # unlimited one never runs out.
        self.budgeted = bool(limits.maxReplyRate or limits.maxReplyBytes)
        self._countRate = limits.maxReplyRate
        self._countCap = limits.maxReplyRate or _UNLIMITED
        self._bytesRate = limits.maxReplyBytes
        self._bytesCap = (
            max(limits.maxReplyBytes, limits.maxDatagram)
            if limits.maxReplyBytes
            else _UNLIMITED
        )
        self._count = self._countCap
        self._bytes = self._bytesCap
        self._budgetTime = self._latest = clock.seconds()
        self._refusalLog = RateLimitedLog(self._log, clock.seconds)

    def admit(self, host: str, port: int, size: int, now: float) -> bool:
        """
        Whether to answer (or send) a datagram of C{size} bytes from (or to)
        C{(host, port)} at C{now}: the service's reply budget first (while
        it is spent, a flood costs a comparison, and its sources never enter
        the table), then L{admitSource}.  A refusal is counted and logged
        here.
        """
        count, volume = self.batch(now)
        if not self.budgeted:
            return self.admitSource(host, port, size, now)
        if count < 1.0:
            return self.refuse("global-rate", host, port)
        if volume < size:
            return self.refuse("global-bytes", host, port)
        if not self.admitSource(host, port, size, now):
            return False
        self.spent(count - 1.0, volume - size)
        return True

    def batch(self, now: float) -> tuple[float, float]:
        """
        Start a batch of datagrams handled at C{now} (one, for L{admit}): a
        reader that handles many at one time calls this once, then
        L{admitSource} for each datagram, and hands back what is left of
        the budget with L{spent}.

        A clock that stepped back is noticed here, once per batch rather
        than once per datagram: every bucket updated "later" than C{now} is
        brought back to C{now}, so that the step takes no tokens away.

        @return: The reply budget at C{now}: the datagrams and bytes that
            may still be sent.
        """
        if now < self._latest:
            for bucket in self.networks.values():
                if bucket[1] > now:
                    bucket[1] = now
            self._budgetTime = min(self._budgetTime, now)
        self._latest = now
        elapsed = now - self._budgetTime
        if elapsed > 0:
            self._budgetTime = now
            count = self._count + elapsed * self._countRate
            self._count = count if count < self._countCap else self._countCap
            volume = self._bytes + elapsed * self._bytesRate
            self._bytes = volume if volume < self._bytesCap else self._bytesCap
        return self._count, self._bytes

    def spent(self, count: float, volume: float) -> None:
        """
        What is left of the reply budget L{batch} returned.
        """
        self._count = count
        self._bytes = volume

    def admitSource(self, host: str, port: int, size: int, now: float) -> bool:
        """
        L{admit} without the reply budget: the size, the source port, the
        source address and its network's bucket, at the C{now} of the last
        L{batch}.

        The common case (a known source, tokens left) is kept to few
        operations: it runs for every datagram.  A bucket already brought
        up to C{now} (a second datagram of the network in one batch) is not
        refilled again.
        """
        if size > self._maxDatagram or port < self._portFloor:
            return self.refuse(
                "too-large" if size > self._maxDatagram else "source-port", host, port
            )
        bucket = self._sourceOf(host)
        if bucket is None:
            bucket = self._enter(host, port, now)
            if bucket is None:
                return False
        else:
            self._touch(host)
        rate = self._rate
        if rate:
            tokens = bucket[0]
            if bucket[1] != now:
                tokens += (now - bucket[1]) * rate
                if tokens > self._burst:
                    tokens = self._burst
                bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                return self.refuse("prefix-rate", host, port)
            bucket[0] = tokens - 1.0
        return True

    def _enter(self, host: str, port: int, now: float) -> list[Any] | None:
        """
        Check an address that is not in the table; if it may be answered,
        add it, with its network's bucket (a new network starts with its
        initial allowance), evicting the least recently used address.

        @return: Its network's bucket, or L{None} when it was refused.
        """
        reason = self._denied.get(host)
        address = None
        if reason is None:
            address, reason = _classify(host, self.limits.allow)
            if reason is not None:
                self._denied[host] = reason
                if len(self._denied) > self._maxSources:
                    self._denied.popitem(last=False)
        if reason is not None or address is None:
            self.refuse(reason or "source-invalid", host, port)
            return None
        key = networkOf(address)
        networks = self.networks
        bucket = networks.get(key)
        if bucket is None:
            bucket = networks[key] = [self._initial, now, 0, key]
        bucket[2] += 1
        sources = self.sources
        sources[host] = bucket
        if len(sources) > self._maxSources:
            _, evicted = sources.popitem(last=False)
            evicted[2] -= 1
            if not evicted[2]:
                del networks[evicted[3]]
        return bucket

    def refuse(self, reason: str, host: str, port: int, **fields: Any) -> bool:
        """
        Count and (at a bounded rate) log a refused datagram.

        @param fields: More fields for the log event (C{detail}: why).
        @return: L{False}, so that callers can C{return self.refuse(...)}.
        """
        self.metrics.inc(
            "netdemo_refused_total", service=self.serviceName, reason=reason
        )
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._refusalLog.emit(
            reason,
            LogLevel.warn,
            "{service}: refused a datagram from {peer} ({reason})",
            event="refused",
            service=self.serviceName,
            peer=peer,
            reason=reason,
            **fields,
        )
        return False
