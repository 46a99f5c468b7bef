# -*- test-case-name: tests.test_jsonlog -*-
"""
Small logging helpers shared by the services.

Events are emitted with L{twisted.logger}, with a stable C{event} key naming
what happened (C{connection_closed}, C{refused}, ...) so that observers and
log shippers can select them without parsing text.  See C{docs/logging.md}.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import IO, Any

from attrs import define, field
from twisted.application.service import MultiService
from twisted.internet.interfaces import IAddress
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    Logger,
    LogLevel,
    PredicateResult,
    formatEvent,
)
from zope.interface import implementer

__all__ = [
    "DaemonService",
    "JSONLinesObserver",
    "RateLimitedLog",
    "formatAddress",
    "isChatter",
    "jsonObserver",
    "quiet",
    "renderMessage",
]


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
    key carries that count as C{suppressed} (always present, 0 when none
    was held back) and ends its text with C{"; N similar events not
    logged"} (only when some were).  Every refusal is still counted
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
        if suppressed:
            # Digits and words only: nothing here is read as a field.
            format += (
                f"; {suppressed} similar "
                f"{'event' if suppressed == 1 else 'events'} not logged"
            )
        self.log.emit(level, format, suppressed=suppressed, **kw)
        return True


#: Keys of events bridged from the legacy C{twisted.python.log} API that
#: repeat what the structured fields already say.
_LEGACY_KEYS = frozenset(
    {"message", "isError", "system", "time", "format", "why", "failure", "printed"}
)


def renderMessage(event: dict[str, Any]) -> str:
    """
    The text of an event, as L{formatEvent} renders it, about ten times
    faster for the common case.

    L{formatEvent} renders C{log_format} with a formatter written in Python
    that also allows calls (C{{key()}}); it costs about 35 microseconds for
    the C{connection_closed} event, which is logged once per connection: a
    large share of what a connection costs when clients come and go by the
    thousand.  A template without calls renders the same with C{str}'s own
    C{format_map}; anything else, or any error, goes to L{formatEvent}.
    """
    template = event.get("log_format")
    if (
        isinstance(template, str)
        and "()" not in template
        and "log_flattened" not in event
    ):
        try:
            return template.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


def eventAsRecord(event: dict[str, Any]) -> dict[str, Any]:
    """
    Flatten a L{twisted.logger} event into a JSON-friendly record: C{time},
    C{level}, C{namespace}, C{message} (the rendered text), C{failure} (a
    traceback, when there is one), then every key of the event that does
    not start with C{log_} (C{event}, C{service}, C{peer}, ...).  See
    C{docs/logging.md}.
    """
    legacy = "log_legacy" in event or "isError" in event
    record: dict[str, Any] = {}
    when = event.get("log_time")
    if isinstance(when, (int, float)):
        moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        record["time"] = moment.isoformat(timespec="microseconds").replace(
            "+00:00", "Z"
        )
    level = event.get("log_level")
    record["level"] = level.name if level is not None else "info"
    record["namespace"] = event.get("log_namespace", "")
    if "event" in event:
        record["event"] = event["event"]
    record["message"] = renderMessage(event)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["failure"] = failure.getTraceback()
        except Exception:
            record["failure"] = repr(failure)
    for key, value in event.items():
        if key.startswith("log_") or (legacy and key in _LEGACY_KEYS):
            continue
        # The fields above win over event keys of the same name.
        record.setdefault(key, value)
    return record


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Write each event as one JSON object on one line, for journald and log
    shippers.

    @ivar outFile: Where to write; flushed after every line.
    """

    def __init__(self, outFile: IO[str]) -> None:
        self.outFile = outFile

    def __call__(self, event: dict[str, Any]) -> None:
        record = eventAsRecord(event)
        try:
            line = json.dumps(record, default=repr, sort_keys=False)
        except ValueError:
            # A circular structure: keep the line, lose the odd field.
            line = json.dumps({k: repr(v) for k, v in record.items()})
        self.outFile.write(line + "\n")
        self.outFile.flush()


#: What Twisted logs for every port it opens or closes
#: (C{EchoFactory starting on 8007}, C{(TCP Port 8007 Closed)}): netdemo's
#: own C{listening} event and the connection events say it better.
_PORT_CHATTER = re.compile(
    r"\S+ starting on \S+|\((TCP|UDP|Unix|SSL) Port \S+ Closed\)"
)

#: The two lines C{twistd} logs as it starts (its version, the reactor's
#: class): netdemo's C{ready} event carries both.
_TWISTD_CHATTER = ("twistd {version} ", "reactor class: ")


def isChatter(event: dict[str, Any]) -> bool:
    """
    Whether C{event} is one of the lines Twisted logs for every port and at
    every start of C{twistd}, that repeat netdemo's own events: a start is
    one line per listener and the C{ready} line.  Errors never are.
    """
    namespace = event.get("log_namespace", "")
    if namespace == "log_legacy":
        if event.get("isError"):
            return False
        text = event.get("log_text")
        return isinstance(text, str) and _PORT_CHATTER.fullmatch(text) is not None
    if namespace.endswith("AppLogger"):
        template = event.get("log_format")
        return isinstance(template, str) and template.startswith(_TWISTD_CHATTER)
    return False


@implementer(ILogFilterPredicate)
class _NotChatter:
    """
    A L{FilteringLogObserver} predicate: drop L{isChatter} events.
    """

    def __call__(self, event: dict[str, Any]) -> Any:
        return PredicateResult.no if isChatter(event) else PredicateResult.maybe


def quiet(observer: ILogObserver) -> ILogObserver:
    """
    C{observer}, without Twisted's chatter (L{isChatter}).
    """
    return FilteringLogObserver(observer, [_NotChatter()])


def jsonObserver() -> ILogObserver:
    """
    The log observer factory for C{twistd --logger=netdemo.logs.jsonObserver}:
    JSON lines on standard output, without Twisted's chatter (L{isChatter}).
    """
    return quiet(JSONLinesObserver(sys.stdout))


class DaemonService(MultiService):
    """
    The top service of the daemon.  Run by C{twistd} with its own text
    logging (no C{--logger}), it gives the application the log observer
    twistd would have built, without Twisted's chatter (L{quiet}): a
    start is one line per listener and the C{ready} line, in text as in
    JSON.

    @ivar twistdConfig: twistd's parsed options, or L{None} (not run by
        twistd: tests, other runners).
    """

    def __init__(self, twistdConfig: Any = None) -> None:
        super().__init__()
        self.twistdConfig = twistdConfig

    def setServiceParent(self, parent: Any) -> None:
        config = self.twistdConfig
        # twistd's AppLogger uses an application's ILogObserver component
        # unless --logger names a factory, which then builds every observer
        # (netdemo.logs.jsonObserver filters by itself).
        if (
            config is not None
            and not config.get("logger")
            and hasattr(parent, "setComponent")
            and parent.getComponent(ILogObserver, None) is None
        ):
            from netdemo.internals import twistdLogObserver

            parent.setComponent(ILogObserver, quiet(twistdLogObserver(config)))
        super().setServiceParent(parent)
