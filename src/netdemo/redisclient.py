# -*- test-case-name: tests.test_backplane_redis -*-
"""
The two Redis connections of L{netdemo.backplane.RedisBackplane}, on
C{txredisapi}.

C{txredisapi} imports the global reactor when it is imported, so this module
is imported only once the backplane starts (after C{twistd} has installed
the reactor it was asked for), never by L{netdemo.tap}.

Both connections are made with C{factory.startConnecting(endpoint)}, the
library's supported way (its factories are not C{ClientFactory}s, so the
old C{reactor.connectTCP} recipe fails): a C{ClientService} per connection
reconnects with backoff.  Payloads stay bytes (C{charset=None}) and are
never taken for numbers (C{convertNumbers=False}).

C{hiredis} is a dependency: with it importable, C{txredisapi.RedisProtocol}
is its C{HiredisProtocol}, which parses a whole read at once; the pure-Python
parser pauses the transport and waits a reactor turn after every bulk string.

C{psubscribe} takes a list: given C{bytes}, it iterates them (integers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from netdemo.backplane import RedisBackplane

__all__ = ["publisherFactory", "subscriberFactory"]


class _Publisher(txredisapi.RedisProtocol):  # type: ignore[misc]
    """
    The connection that publishes.
    """

    factory: Any

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        self.whenConnected().addCallback(self._usable)
        return d

    def _usable(self, protocol: Any) -> None:
        # Not from inside makeConnection (txredisapi's own pool waits a turn
        # for the same reason): ClientService does not know this connection
        # yet.
        self.factory.backplane.reactor.callLater(0, self._tell)

    def _tell(self) -> None:
        if self.connected:
            self.factory.backplane.publisherReady(self)

    def connectionLost(self, why: Failure) -> None:
        self.factory.backplane.connectionLost(self, why)
        super().connectionLost(why)


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """
    The connection that subscribes to C{PREFIX.*} by pattern.
    """

    factory: Any

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        self.whenConnected().addCallback(self._usable)
        return d

    def _usable(self, protocol: Any) -> None:
        self.factory.backplane.reactor.callLater(0, self._subscribe)

    def _subscribe(self) -> None:
        if not self.connected:
            return
        backplane = self.factory.backplane
        d = self.psubscribe([backplane.channelStart + b"*"])

        def subscribed(reply: object) -> None:
            if isinstance(reply, Exception):
                failed(Failure(reply))
            else:
                backplane.subscribed(self)

        def failed(failure: Failure) -> None:
            # LOADING, a closed connection...: start over.
            if self.transport is not None:
                self.transport.loseConnection()

        d.addCallbacks(subscribed, failed)

    def messageReceived(self, pattern: bytes, channel: bytes, message: bytes) -> None:
        self.factory.backplane.messageReceived(channel, message)

    def connectionLost(self, why: Failure) -> None:
        self.factory.backplane.connectionLost(self, why)
        super().connectionLost(why)


def _prepare(factory: Any, backplane: RedisBackplane) -> None:
    url = backplane.url
    factory.backplane = backplane
    factory.charset = None
    factory.convertNumbers = False
    factory.password = url.password
    factory.username = url.username
    # Nobody waits for the pool to fill; a refused password ends up here.
    factory.deferred.addErrback(lambda failure: None)


class _PublisherFactory(txredisapi.RedisFactory):  # type: ignore[misc]
    protocol = _Publisher

    def connectionError(self, why: str) -> None:
        self.backplane.authFailed(why)
        super().connectionError(why)


class _SubscriberFactory(txredisapi.SubscriberFactory):  # type: ignore[misc]
    protocol = _Subscriber

    def connectionError(self, why: str) -> None:
        self.backplane.authFailed(why)
        super().connectionError(why)


def publisherFactory(backplane: RedisBackplane) -> Any:
    """
    The factory of the publishing connection (it selects the URL's
    database).
    """
    factory = _PublisherFactory(
        backplane.url.display(),
        backplane.url.db,
        1,
        isLazy=True,
        charset=None,
        password=backplane.url.password,
        convertNumbers=False,
        username=backplane.url.username,
    )
    _prepare(factory, backplane)
    return factory


def subscriberFactory(backplane: RedisBackplane) -> Any:
    """
    The factory of the subscribing connection.
    """
    factory = _SubscriberFactory(isLazy=True)
    _prepare(factory, backplane)
    return factory
