"""
The tutorial-style Twisted chat server, as a fan-out reference.

This is the classic broadcast example: a C{LineReceiver} that C{sendLine}s
every line it receives to every other client, one write per line per client,
with no limits.  C{LineReceiver}'s default delimiter is CRLF, so the load
generator sends CRLF lines to it.  It listens on 127.0.0.1 on the given port
(0: any) and prints C{{"port": N}} on stdout once listening.

Usage: C{python bench/servers/tutorial_chat.py [PORT]}
"""

from __future__ import annotations

import json
import sys
from typing import cast

from twisted.internet import protocol, reactor
from twisted.internet.address import IPv4Address
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


class ChatFactory(protocol.ServerFactory):
    """
    Hold the set of connected clients.
    """

    protocol = Chat  # type: ignore[assignment]

    def __init__(self) -> None:
        """
        Start with no clients.
        """
        self.clients: set[Chat] = set()


def main() -> None:
    """
    Listen on 127.0.0.1 on the port given and run.
    """
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    listening = reactor.listenTCP(
        port, ChatFactory(), backlog=1024, interface="127.0.0.1"
    )
    print(json.dumps({"port": cast(IPv4Address, listening.getHost()).port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
