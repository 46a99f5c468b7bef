# -*- test-case-name: tests.test_reactor -*-
"""
C{twistd --reactor=netdemo}: the epoll reactor without the per-event cost
of rebuilding each connection's log context.

The reactor itself is L{netdemo.internals.LogContextCachingEPollReactor}
(it subclasses Twisted's epoll reactor and overrides its dispatch loop,
which is private to Twisted, so it lives with netdemo's other private
touchpoints).  The plugin in C{twisted/plugins/netdemo.py} names this module,
so C{twistd --help-reactors} lists it and C{--reactor=netdemo} installs it
the way Twisted installs its own reactors.
"""

from __future__ import annotations

__all__ = ["install"]


def install() -> None:
    """
    Install the reactor as the global one.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: If another
        reactor is installed already.
    """
    from twisted.internet.main import installReactor

    from netdemo.internals import LogContextCachingEPollReactor

    installReactor(LogContextCachingEPollReactor())
