# -*- test-case-name: tests.test_listening -*-
"""
What every listening service does the same way, stream or datagram: say
where it listens, and fail start-up cleanly when it cannot.

  - L{ListenerReport}: one C{listening} log event per bound socket and the
    C{netdemo_listener_info} series that the status page and systemd's
    C{STATUS=} line read, with the same C{service} and C{address} in both;
  - L{IListener}: how a service tells the readiness notification that its
    sockets are bound (stream listeners bind asynchronously);
  - L{exitOnBindFailure}: a socket that cannot be bound (port in use, no
    permission, no such address) ends start-up with one line naming it and
    exit status 1, not C{twistd}'s traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface

from netdemo.metrics import IMetrics

__all__ = ["IListener", "ListenerReport", "exitOnBindFailure"]

LISTENER_METRIC = "netdemo_listener_info"

_T = TypeVar("_T")


class IListener(Interface):
    """
    A service that listens on sockets.
    """

    def whenListening() -> Deferred[bool]:
        """
        A L{Deferred} that fires with L{True} once every socket of the
        service is bound, or with L{False} if one failed to bind.
        """


class ListenerReport:
    """
    The C{listening} events and C{netdemo_listener_info} series of one
    service: 1 for each bound address, 0 once closed.

    @ivar serviceName: The service's name, in both.
    @ivar addresses: The addresses bound now, as logged.
    """

    _log = Logger()

    def __init__(self, serviceName: str, metrics: IMetrics | None) -> None:
        self.serviceName = serviceName
        self.metrics = metrics
        self.addresses: list[str] = []

    def bound(
        self, address: str, description: str, detail: str = "", tls: bool = False
    ) -> None:
        """
        A socket is bound to C{address} (as people write it:
        C{127.0.0.1:8007}; a TLS listener's as C{tls:127.0.0.1:8443}), for
        the option value C{description}; C{detail}, when given, ends the log
        line (and is its C{detail} key); C{tls}, when true, is the event's
        C{tls} key.
        """
        self.addresses.append(address)
        if self.metrics is not None:
            self.metrics.set(
                LISTENER_METRIC, 1, service=self.serviceName, address=address
            )
        extra: dict[str, object] = {"detail": detail} if detail else {}
        if tls:
            extra["tls"] = True
        self._log.info(
            "{service}: listening on {address} ({description})"
            + (", {detail}" if detail else ""),
            event="listening",
            service=self.serviceName,
            address=address,
            description=description,
            **extra,
        )

    def closed(self) -> None:
        """
        Every socket of the service is closed.
        """
        addresses, self.addresses = self.addresses, []
        if self.metrics is not None:
            for address in addresses:
                self.metrics.set(
                    LISTENER_METRIC, 0, service=self.serviceName, address=address
                )


def exitOnBindFailure(start: Callable[[], _T]) -> _T:
    """
    Call C{start}; turn a failure to bind into C{SystemExit} with one line.

    C{SystemExit} passes through C{twistd}, which prints the traceback of
    any other exception raised while services start.
    """
    from twisted.internet.error import CannotListenError

    try:
        return start()
    except (CannotListenError, OSError) as e:
        raise SystemExit(f"netdemo: cannot start: {e}") from None
