"""
The tutorial-style Twisted chat server, as a fan-out reference.

This is the classic broadcast example: a C{LineReceiver} that C{sendLine}s
every line it receives to every other client, one write per line per client,
with no limits.  C{LineReceiver}'s default delimiter is CRLF, so the load
generator sends CRLF lines to it.

Usage: C{python bench/chatserver.py PORT}
"""

from __future__ import annotations

import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class Chat(LineReceiver):
    """
    Relay every line to every other client.
    """

    factory: ChatFactory

    def connectionMade(self) -> None:
        """
        Join the chat.
        """
        self.factory.clients.add(self)

    def connectionLost(self, reason: object = None) -> None:
        """
        Leave the chat.
        """
        self.factory.clients.discard(self)

    def lineReceived(self, line: bytes) -> None:
        """
        Send the line to every other client, one write each.
        """
        for client in self.factory.clients:
            if client is not self:
                client.sendLine(line)


class ChatFactory(protocol.Factory):
    """
    Hold the set of connected clients.
    """

    protocol = Chat

    def __init__(self) -> None:
        """
        Start with no clients.
        """
        self.clients: set[Chat] = set()


def main() -> None:
    """
    Listen on 127.0.0.1 on the port given and run.
    """
    port = int(sys.argv[1])
    reactor.listenTCP(port, ChatFactory(), backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
