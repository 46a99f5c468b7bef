"""
The Twisted tutorial echo server: the reference that netdemo's echo is
compared with.

C{dataReceived -> transport.write}, nothing else: no flow control, no
half-close, no limits.  It listens on 127.0.0.1 on the given port (0: any)
and prints C{{"port": N}} on stdout once listening.

Usage: C{python tutorial_echo.py [PORT]}
"""

from __future__ import annotations

import json
import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    """
    Send back what arrives.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def main() -> None:
    """
    Listen and run the reactor.
    """
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    factory = protocol.Factory.forProtocol(Echo)
    listening = reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    print(json.dumps({"port": listening.getHost().port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
