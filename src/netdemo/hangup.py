# -*- test-case-name: tests.test_pubsub_auth -*-
"""
C{SIGHUP}: read again what can be read again (the hub's accounts file),
sharing the signal with whatever else handles it.

Twisted's reactor leaves C{SIGHUP} alone, and so does C{twistd -n}.  A
L{HangupService} installs its handler when it starts and chains the one it
found (another service's, or another part of netdemo's), so several can
listen to one signal; it puts the previous one back when it stops, if its
own is still the one installed.  The handler itself only hands the work to
the reactor thread (C{callFromThread}): a signal handler runs between any
two bytecodes, in the middle of anything.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

__all__ = ["HangupService"]


class HangupService(Service):
    """
    Call C{callback} on the reactor thread on every C{SIGHUP} while
    running.

    @ivar signals: What installs handlers (the C{signal} module; a fake in
        tests).
    """

    def __init__(
        self, reactor: Any, callback: Callable[[], object], signals: Any = signal
    ) -> None:
        self.reactor = reactor
        self.callback = callback
        self.signals = signals
        self._previous: Any = None
        self._handler: Any = None

    def startService(self) -> None:
        super().startService()
        signals = self.signals
        previous = signals.getsignal(signals.SIGHUP)
        chained = previous if callable(previous) else None
        reactor, callback = self.reactor, self.callback

        def handler(signum: int, frame: Any) -> None:
            reactor.callFromThread(callback)
            if chained is not None:
                chained(signum, frame)

        self._previous = previous
        self._handler = handler
        signals.signal(signals.SIGHUP, handler)

    def stopService(self) -> Any:
        signals = self.signals
        if (
            self._handler is not None
            and signals.getsignal(signals.SIGHUP) is self._handler
        ):
            signals.signal(
                signals.SIGHUP,
                self._previous if self._previous is not None else signals.SIG_DFL,
            )
        self._handler = None
        return super().stopService()
