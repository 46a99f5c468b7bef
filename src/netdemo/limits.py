# -*- test-case-name: tests.test_tap -*-
"""
The limits of the services, as value objects built from the command line.

  - L{ConnectionLimits}: every stream service (enforced by
    L{netdemo.stream.LimitedFactory}), HTTP included;
  - L{HTTPLimits}: the HTTP service's own (L{netdemo.web});
  - L{HubLimits}: the pub/sub hub's own (L{netdemo.pubsub});
  - L{BroadcastLimits}: the broadcast relay's own (L{netdemo.broadcast});
  - L{DatagramLimits}: the reflection-safety settings of the datagram
    responders (enforced by L{netdemo.guard.ReflectionGuard});
  - L{BackplaneLimits}: the Redis backplane's (L{netdemo.backplane}).

Each documented default is written once, here; C{netdemo.tap} builds these
from its options and the services only read them.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from attrs import field, frozen

__all__ = [
    "DEFAULT_BACKLOG",
    "SLOW_POLICIES",
    "BackplaneLimits",
    "BroadcastLimits",
    "ConnectionLimits",
    "DatagramLimits",
    "HTTPLimits",
    "HubLimits",
]

#: The listen backlog given to bare-port listeners.  Twisted's default of 50
#: overflows under connection bursts: the kernel completes handshakes that
#: the server then never sees.  Linux caps it at C{net.core.somaxconn}
#: (4096 by default since 5.4).
DEFAULT_BACKLOG = 1024

#: The slow-consumer policies of the hub.
SLOW_POLICIES = ("disconnect", "drop-oldest")


def _nonNegative(instance: object, attribute: Any, value: float) -> None:
    """
    An attrs validator: the value must not be below 0.
    """
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


def _positive(instance: object, attribute: Any, value: float) -> None:
    """
    An attrs validator: the value must be above 0.
    """
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _policy(instance: object, attribute: Any, value: str) -> None:
    """
    An attrs validator: the value must be one of L{SLOW_POLICIES}.
    """
    if value not in SLOW_POLICIES:
        raise ValueError(f"{attribute.name} must be one of {SLOW_POLICIES}")


@frozen
class ConnectionLimits:
    """
    Limits for one stream service.

    @ivar maxConnections: Connections open at once, over all listeners of the
        service.  0 means no limit.
    @ivar maxPerPeer: Connections open at once from one peer IP address.  0
        means no limit.
    @ivar idleTimeout: Seconds without receiving anything before a
        connection is closed.  0 turns the timeout off.
    @ivar drain: Seconds that a graceful shutdown waits for connections to
        flush and close before aborting them.
    @ivar descriptorReserve: File descriptors of the process kept free:
        a connection accepted while fewer are free is closed at once and
        counted (C{fd-reserve}), on every stream listener, so that the
        process never runs out of them.  0 turns the reserve off.
    """

    maxConnections: int = field(default=10000, validator=_nonNegative)
    maxPerPeer: int = field(default=256, validator=_nonNegative)
    idleTimeout: float = field(default=300.0, validator=_nonNegative)
    drain: float = field(default=5.0, validator=_nonNegative)
    descriptorReserve: int = field(default=64, validator=_nonNegative)


@frozen
class HTTPLimits:
    """
    The limits of the HTTP service, on top of L{ConnectionLimits}.

    @ivar headerTimeout: Seconds within which a request's head (request line
        and headers) must be complete, counted from the connection's start
        or, on a kept-alive connection, from the first byte of the request.
        Trickling bytes does not extend it.
    @ivar keepAliveTimeout: Seconds a connection may wait for its next
        request after a response.
    @ivar hubStreams: Hub WebSockets and event streams open at once
        (C{/hub/ws}, C{/hub/events}).
    @ivar origins: The origins whose pages may open them, besides the
        page's own (C{--http-origin}).
    """

    headerTimeout: float = field(default=10.0, validator=_positive)
    keepAliveTimeout: float = field(default=60.0, validator=_positive)
    hubStreams: int = field(default=1000, validator=_nonNegative)
    origins: tuple[str, ...] = ()


@frozen
class HubLimits:
    """
    The limits and policies of the hub, on top of L{ConnectionLimits}.

    @ivar maxLine: Longest accepted line in bytes, without its terminator.
    @ivar lineTimeout: Seconds within which a partial line must complete; 0
        for no limit.
    @ivar maxPending: Bytes a paused subscriber may have queued.
    @ivar writeDeadline: Seconds a subscriber may stay paused (disconnect
        policy); 0 for no limit.
    @ivar slowPolicy: C{disconnect} or C{drop-oldest}.
    @ivar history: Lines kept per topic; 0 turns history off.
    @ivar presence: Whether join, leave and nick notices are sent.
    @ivar replayOnJoin: Lines of the default topic's history sent to a new
        client.
    @ivar presenceInterval: Seconds over which joins, leaves and renames
        after the first are told as one notice; 0 tells each at once.
    @ivar turnLines: Lines of commands (or of any read that is not plain
        lines) handled per connection per reactor turn.
    @ivar turnTime: Seconds of work on one connection's input per reactor
        turn, past which the rest waits for the next turn.
    @ivar hideAddresses: Whether clients are shown as C{client-N} instead of
        their address.
    @ivar publishRate: Lines a second one publisher may publish; past it
        the hub stops reading from it until it has earned more.  0 for no
        limit.
    @ivar publishBurst: Lines a publisher may publish at once (its bucket's
        size); 0 for one second's worth of C{publishRate} (at least 1).
    """

    maxLine: int = field(default=4096, validator=_positive)
    lineTimeout: float = field(default=30.0, validator=_nonNegative)
    maxPending: int = field(default=1 << 20, validator=_positive)
    writeDeadline: float = field(default=10.0, validator=_nonNegative)
    slowPolicy: str = field(default="disconnect", validator=_policy)
    history: int = field(default=100, validator=_nonNegative)
    presence: bool = True
    replayOnJoin: int = field(default=0, validator=_nonNegative)
    presenceInterval: float = field(default=1.0, validator=_nonNegative)
    turnLines: int = field(default=1000, validator=_positive)
    turnTime: float = field(default=0.01, validator=_positive)
    hideAddresses: bool = False
    publishRate: float = field(default=0.0, validator=_nonNegative)
    publishBurst: int = field(default=0, validator=_nonNegative)

    @property
    def publishBucket(self) -> int:
        """
        The size of a publisher's bucket: C{publishBurst}, or one second's
        worth of C{publishRate} (at least 1 line).
        """
        if self.publishBurst:
            return self.publishBurst
        return max(1, math.ceil(self.publishRate))


@frozen
class BroadcastLimits:
    """
    The slow-receiver policy of the broadcast relay, on top of
    L{ConnectionLimits}: the same options, and defaults, as the hub's.

    @ivar maxPending: Bytes a paused receiver may have queued.
    @ivar writeDeadline: Seconds a receiver may stay paused (disconnect
        policy); 0 for no limit.
    @ivar slowPolicy: C{disconnect} or C{drop-oldest} (whole chunks).
    """

    maxPending: int = field(default=1 << 20, validator=_positive)
    writeDeadline: float = field(default=10.0, validator=_nonNegative)
    slowPolicy: str = field(default="disconnect", validator=_policy)


@frozen
class DatagramLimits:
    """
    The reflection-safety settings of a datagram responder.

    @ivar maxDatagram: The largest request answered, in bytes.  The default
        is the largest UDP payload of one 9000-byte jumbo frame over IPv4.
    @ivar portFloor: Source ports below this are never answered.
    @ivar rate: Datagrams a second answered per source network (a /24 for
        IPv4, a /64 for IPv6); 0 for no limit.
    @ivar burst: Datagrams a source network may have answered at once, once
        it has earned them at C{rate} (a new one starts with at most 10).
    @ivar maxSources: Source addresses tracked at once (least recently used
        evicted).
    @ivar allow: When not empty, only sources in these networks are
        answered.
    @ivar maxReplyRate: Datagrams a second the service sends at most
        (replies, and the multicast responder's probes), whatever the
        sources; 0 for no limit.  Sized for a test tool, not a CDN.
    @ivar maxReplyBytes: Payload bytes a second the service sends at most;
        0 for no limit.
    """

    maxDatagram: int = field(default=8972, validator=_nonNegative)
    portFloor: int = field(default=1024, validator=_nonNegative)
    rate: float = field(default=1000.0, validator=_nonNegative)
    burst: int = field(default=2000, validator=_nonNegative)
    maxSources: int = field(default=10000, validator=_nonNegative)
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    maxReplyRate: float = field(default=2000.0, validator=_nonNegative)
    maxReplyBytes: float = field(default=2_000_000.0, validator=_nonNegative)


@frozen
class BackplaneLimits:
    """
    The bounds of the Redis backplane (C{docs/scaling.md}).

    @ivar maxQueue: Bytes of messages waiting to be published to Redis or
        published and not yet answered, at most; past it new lines are
        dropped.
    @ivar maxMessage: The largest message, in bytes, taken from Redis (a
        larger one is refused as a whole, its bytes dropped as they
        arrive) and published to it (larger publications are split).  The
        default is the most one read of a local client brings in: Twisted
        reads 64 KiB at a time.
    @ivar pingInterval: Seconds between two C{PING}s on each Redis
        connection.
    @ivar pingTimeout: Seconds Redis has to answer a C{PING} (or a new
        connection's first commands) before the connection is given up and
        the backplane reported down.
    @ivar history: Whether the hubs share their history in Redis Streams
        (C{netdemo.streams}); off (C{--no-backplane-history}), each hub keeps
        its own.
    """

    maxQueue: int = field(default=1 << 20, validator=_positive)
    maxMessage: int = field(default=1 << 16, validator=_positive)
    pingInterval: float = field(default=5.0, validator=_positive)
    pingTimeout: float = field(default=5.0, validator=_positive)
    history: bool = True
