# -*- test-case-name: tests.test_limits -*-
"""
Small logging helpers shared by the services.

Events are emitted with L{twisted.logger}, with a stable C{event} key naming
what happened (C{connection_closed}, C{refused}, ...) so that observers and
log shippers can select them without parsing text.  See C{docs/logging.md}.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger, LogLevel

__all__ = ["RateLimitedLog", "formatAddress"]


def formatAddress(address: IAddress | None) -> str:
    """
    Render an address the way people type it: C{host:port},
    C{[v6host]:port}, or a UNIX socket path.
    """
    if address is None:
        return "-"
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    if hasattr(address, "name"):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name}" if name else "unix:(unnamed)"
    return str(address)


@define
class RateLimitedLog:
    """
    Emit at most one event per C{key} every C{interval} seconds.

    A flood of refusals must not become a flood of log lines: the events
    that are held back are counted and the next emitted event for the same
    key carries that count as C{suppressed}.  Every refusal is still counted
    in the metrics.

    @ivar log: Where events go.
    @ivar seconds: A clock function, such as C{reactor.seconds}.
    @ivar interval: The minimum time between two events of one key.
    """

    log: Logger
    seconds: Any
    interval: float = 10.0
    maxKeys: int = 1024
    _last: dict[Any, float] = field(factory=dict)
    _held: dict[Any, int] = field(factory=dict)

    def emit(self, key: Any, level: LogLevel, format: str, **kw: Any) -> bool:
        """
        Emit the event unless one with the same C{key} was emitted less than
        C{interval} seconds ago.

        @return: Whether the event was emitted.
        """
        now = self.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= self.maxKeys:
            # Bound the table: forget the oldest key.
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._held.pop(oldest, None)
        self._last.pop(key, None)
        self._last[key] = now
        suppressed = self._held.pop(key, 0)
        self.log.emit(level, format, suppressed=suppressed, **kw)
        return True
