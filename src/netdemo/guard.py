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
  - more than C{rate} datagrams a second from one source address after a
    burst of C{burst} (C{rate}): a token bucket per source, in a table of at
    most C{maxSources} entries that evicts the least recently used.

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

__all__ = ["ReflectionGuard"]


def _classify(host: str, allow: Sequence[Any]) -> str | None:
    """
    The reason never to answer this source address, if there is one.
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return "source-invalid"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "source-unspecified"
    if address.is_multicast:
        return "source-multicast"
    if isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255")
    ):
        return "source-broadcast"
    if allow and not any(address in network for network in allow):
        return "not-allowed"
    return None


class ReflectionGuard:
    """
    Decide whether a datagram may be answered, and count and log every
    refusal.

    The static checks on a source address run once, when the address enters
    the token bucket table; later datagrams from it cost a port comparison
    and a bucket update.

    @ivar buckets: Source address to C{[tokens, last update]}, least
        recently used first.
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
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._maxDatagram = limits.maxDatagram
        self._portFloor = limits.portFloor
        self._rate = limits.rate
        self._burst = float(max(limits.burst, 1))
        self._maxSources = max(limits.maxSources, 1)
        self._refusalLog = RateLimitedLog(self._log, clock.seconds)

    def admit(self, host: str, port: int, size: int, now: float) -> bool:
        """
        Whether to answer a datagram of C{size} bytes from C{(host, port)}
        received at C{now}.  A refusal is counted and logged here.
        """
        if size > self._maxDatagram:
            return self.refuse("too-large", host, port)
        if port < self._portFloor:
            return self.refuse("source-port", host, port)
        buckets = self.buckets
        bucket = buckets.get(host)
        if bucket is None:
            reason = self._denied.get(host)
            if reason is None:
                reason = _classify(host, self.limits.allow)
                if reason is not None:
                    self._denied[host] = reason
                    if len(self._denied) > self._maxSources:
                        self._denied.popitem(last=False)
            if reason is not None:
                return self.refuse(reason, host, port)
            bucket = buckets[host] = [self._burst, now]
            if len(buckets) > self._maxSources:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(host)
        rate = self._rate
        if not rate:
            return True
        tokens = bucket[0] + (now - bucket[1]) * rate
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return self.refuse("rate", host, port)
        bucket[0] = tokens - 1.0
        return True

    def refuse(self, reason: str, host: str, port: int) -> bool:
        """
        Count and (at a bounded rate) log a refused datagram.

        @return: L{False}, so that callers can C{return self.refuse(...)}.
        """
        self.metrics.inc(
            "netdemo_refused_total", service=self.serviceName, reason=reason
        )
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._refusalLog.emit(
            reason,
            LogLevel.warn,
            "{service}: refused a datagram from {peer} ({reason}); "
            "{suppressed} similar events not logged",
            event="refused",
            service=self.serviceName,
            peer=peer,
            reason=reason,
        )
        return False
