"""
The Twisted tutorial echo servers: the references that netdemo's TCP and
UDP echo are compared with.

TCP: C{dataReceived -> transport.write}, nothing else: no flow control, no
half-close, no limits.  UDP (C{--udp}): C{datagramReceived ->
transport.write(data, addr)}.  Default reactor (epoll), default
C{maxPacketSize}.  It listens on 127.0.0.1 on the given port (0: any) and
prints C{{"port": N}} on stdout once listening.

Usage: C{python bench/servers/tutorial_echo.py [--udp] [PORT]}
"""

from __future__ import annotations

import json
import sys
from typing import cast

from twisted.internet import protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorUDP


class Echo(protocol.Protocol):
    """
    Send back what arrives.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class DatagramEcho(protocol.DatagramProtocol):
    """
    Send each datagram back to where it came from.
    """

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.write(data, addr)  # type: ignore[union-attr]


def main() -> None:
    """
    Listen and run the reactor.
    """
    args = sys.argv[1:]
    udp = "--udp" in args
    args = [a for a in args if a != "--udp"]
    port = int(args[0]) if args else 0
    listening: IListeningPort
    if udp:
        udpReactor = cast(IReactorUDP, reactor)
        listening = udpReactor.listenUDP(port, DatagramEcho(), "127.0.0.1", 8192)
    else:
        factory = protocol.ServerFactory()
        factory.protocol = Echo
        listening = reactor.listenTCP(
            port, factory, backlog=1024, interface="127.0.0.1"
        )
    print(json.dumps({"port": cast(IPv4Address, listening.getHost()).port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
