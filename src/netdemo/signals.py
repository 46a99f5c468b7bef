# -*- test-case-name: tests.test_tls -*-
"""
Signal handlers that share a signal: L{chainSignal}, and L{HangupService},
a service that handles C{SIGHUP} while it runs.

C{SIGHUP} has several users in one daemon (the TLS listeners re-read their
certificates; the hub may re-read its accounts file).  Each installs its
handler with L{chainSignal}, which calls the handler that was installed
before it, whoever installed it, so no user replaces another, in whatever
order they start.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

__all__ = ["HangupService", "chainSignal"]


def chainSignal(
    signum: int, callback: Callable[[], object], reactor: Any
) -> Callable[[], None]:
    """
    Call C{callback} in the reactor thread on every C{signum}, after calling
    the handler that was installed before (if it is a Python callable: the
    default action, which for C{SIGHUP} ends the process, is replaced).

    @param reactor: Provides C{callFromThread}, the one reactor call that
        is safe in a signal handler.
    @return: A function that uninstalls C{callback}: when the handler is
        still the installed one, the previous handler is installed again;
        otherwise a later user has chained it, so it stays in the chain but
        no longer calls C{callback}.
    """
    previous = signal.getsignal(signum)
    active = True

    def handler(number: int, frame: Any) -> None:
        if callable(previous):
            previous(number, frame)
        if active:
            reactor.callFromThread(callback)

    signal.signal(signum, handler)

    def uninstall() -> None:
        nonlocal active
        active = False
        if signal.getsignal(signum) is handler:
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)

    return uninstall


class HangupService(Service):
    """
    Call C{callback} in the reactor thread on every C{SIGHUP} while the
    service runs (the hub re-reads its accounts file), sharing the signal
    through L{chainSignal}.  Twisted's reactor and C{twistd -n} leave
    C{SIGHUP} alone.
    """

    def __init__(self, reactor: Any, callback: Callable[[], object]) -> None:
        self.reactor = reactor
        self.callback = callback
        self._uninstall: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        self._uninstall = chainSignal(signal.SIGHUP, self.callback, self.reactor)

    def stopService(self) -> Any:
        if self._uninstall is not None:
            self._uninstall()
            self._uninstall = None
        return super().stopService()
