# -*- test-case-name: tests.test_webhub -*-
"""
The narrow way another service reaches the hub: L{IHubGate}.

The HTTP service serves the hub to browsers (L{netdemo.webhub}: WebSocket
and Server-Sent Events) without knowing L{netdemo.pubsub}: C{tap.py} hands
it a L{HubGate}, which it sees only as an L{IHubGate}.  Services report to
interfaces, never to each other.

A client attached through the gate is a hub client like any other (a
L{netdemo.pubsub.PubSubProtocol}): identity, presence, history, commands,
limits, the slow-consumer policy, metrics and logs are the hub's.  Only its
transport differs: the other service gives one that turns the hub's lines
into its own framing (WebSocket frames, events) and maps flow control onto
its connection (L{netdemo.webhub.HubTransport}).
"""

from __future__ import annotations

import heapq
from typing import Any

from twisted.internet.interfaces import IAddress
from zope.interface import Attribute, Interface, implementer

__all__ = ["HubGate", "IHubGate"]


class IHubGate(Interface):
    """
    The hub, as another service may use it.
    """

    maxLine = Attribute("The longest line a client may send, in bytes.")

    maxPending = Attribute(
        "Bytes a paused subscriber may have queued before the slow-consumer "
        "policy applies."
    )

    accounts = Attribute("Whether the hub has accounts (--hub-auth): log in first.")

    history = Attribute(
        "The hub's history (netdemo.history.History's interface): epoch, "
        "since(topic, seq), lastSeq(topic), topics()."
    )

    def topics() -> list[tuple[bytes, int, int, int]]:
        """
        The topics with history (at most the history's bound on topics),
        each as C{(topic, subscribers, lines kept, last sequence number)}.
        """

    def present(limit: int) -> tuple[int, list[bytes]]:
        """
        How many clients are connected, and the first C{limit} nicknames
        taken, sorted.
        """

    def attach(transport: Any, peer: IAddress | None) -> Any:
        """
        Make a hub client of a connection accepted by another service.

        @param transport: What the hub writes the client's lines to: an
            C{ITransport} and C{IConsumer} (the client registers itself as
            its streaming producer) that may also pause and resume the
            client's input.
        @param peer: The client's address (its identity until it takes a
            nickname).
        @return: The client: give its input lines (with their ends) to its
            C{dataReceived}; call its C{connectionLost} when the connection
            is gone.
        """


@implementer(IHubGate)
class HubGate:
    """
    The gate to one hub (a L{netdemo.pubsub.PubSubFactory}).
    """

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    @property
    def maxLine(self) -> int:
        return int(self._hub.hubLimits.maxLine)

    @property
    def maxPending(self) -> int:
        return int(self._hub.hubLimits.maxPending)

    @property
    def accounts(self) -> bool:
        return self._hub.auth is not None

    @property
    def history(self) -> Any:
        # Read at each use: the history object may be replaced (a shared
        # history behind the same interface).
        return self._hub.history

    def topics(self) -> list[tuple[bytes, int, int, int]]:
        hub = self._hub
        history = hub.history
        subscribers = hub.router.subscribers
        rows = []
        for topic in list(history.topics()):
            last = history.lastSeq(topic)
            rows.append(
                (
                    topic,
                    len(subscribers(topic)),
                    last - history.firstSeq(topic) + 1,
                    last,
                )
            )
        return rows

    def present(self, limit: int) -> tuple[int, list[bytes]]:
        hub = self._hub
        nicks = heapq.nsmallest(limit, (p.identity for p in hub.nicks.values()))
        return len(hub.clients), nicks

    def attach(self, transport: Any, peer: IAddress | None) -> Any:
        return self._hub.attach(transport, peer)
