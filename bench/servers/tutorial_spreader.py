# ruff: noqa: UP031
"""
The seed tutorial's TCP broadcast server ("Spreader", C{docs/seeds.md}), as
a broadcast reference.

Its logic as written: every chunk a client sends goes to every other
client, one C{transport.write} each, with no limits; each client is
greeted with the count of connected clients; a chunk that is C{close}
closes its sender.  Ported to Python 3: C{data == b"close"} (the tutorial
compares with a C{str}, which bytes never equal) and C{loseConnection}
(the tutorial's C{lostConnection} does not exist); the prints of every
connection are gone, it listens on 127.0.0.1 on the given port (0: any)
and prints C{{"port": N}} once listening.

Usage: C{python bench/servers/tutorial_spreader.py [PORT]}
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol

clients: list[Spreader] = []  # 保存所有客戶端連接


class Spreader(Protocol):
    """
    Relay every chunk to every other client.
    """

    def __init__(self, factory: SpreaderFactory) -> None:
        self.factory = factory

    def connectionMade(self) -> None:
        """
        Count and greet the client, and remember it.
        """
        self.factory.numProtocols = self.factory.numProtocols + 1
        self.transport.write(  # type: ignore[union-attr]
            (
                "歡迎來到Spread site,你是第%d 個客戶端用戶!\n"
                % (self.factory.numProtocols,)
            ).encode("utf8")
        )
        clients.append(self)

    def connectionLost(self, reason: object = None) -> None:
        """
        Forget the client.
        """
        self.factory.numProtocols = self.factory.numProtocols - 1
        clients.remove(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Send the chunk to every other client.
        """
        if data == b"close":
            self.transport.loseConnection()  # type: ignore[union-attr]
        for client in clients:
            if client != self:
                client.transport.write(data)  # type: ignore[union-attr]


class SpreaderFactory(Factory):
    """
    Count the clients.
    """

    def __init__(self) -> None:
        self.numProtocols = 0

    def buildProtocol(self, addr: Any) -> Spreader:
        return Spreader(self)


def main() -> None:
    """
    Listen, announce the port, run.
    """
    port = reactor.listenTCP(
        int(sys.argv[1]) if len(sys.argv) > 1 else 0,
        SpreaderFactory(),  # type: ignore[arg-type]
        backlog=1024,
        interface="127.0.0.1",
    )
    print(json.dumps({"port": cast(IPv4Address, port.getHost()).port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
