# mypy: ignore-errors
"""
Seed 002 ("daily notes[32]"), its complete program, in Python 3, as a
client of netdemo's TCP echo.

The tutorial's program is a server; its C{Protocol} and C{Factory} are
run here as they are, connected to the echo instead of listening.
Changed from the tutorial, and nothing else:
  - C{reactor.listenTCP(8000, MyFactory())} is C{reactor.connectTCP(host,
    port, MyFactory())}, host and port from the command line, and
    C{MyFactory} is a C{ClientFactory} (C{connectTCP} needs its
    C{startedConnecting} and C{clientConnection*} methods);
  - print flushes.

Against an echo it plays ping-pong: it writes its welcome, gets it back,
and answers every chunk with C{Echo: } and the chunk.
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol


class MyProtocol(Protocol):
    def connectionMade(self):
        # Called when a new client connects
        client_ip = self.transport.getPeer().host
        print(f"New connection from: {client_ip}", flush=True)
        self.transport.write(b"Welcome! Type something...\r\n")

    def dataReceived(self, data):
        # Called when data is received from the client
        print(f"Received: {data.decode().strip()}", flush=True)
        self.transport.write(b"Echo: " + data)

    def connectionLost(self, reason):
        # Called when the connection is closed
        print(f"Client disconnected. Reason: {reason.getErrorMessage()}", flush=True)


class MyFactory(ClientFactory):
    def buildProtocol(self, addr):
        return MyProtocol()


# Start the server on port 8000
reactor.connectTCP(sys.argv[1], int(sys.argv[2]), MyFactory())
print("Server running on port 8000...", flush=True)
reactor.run()
