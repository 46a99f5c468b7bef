# mypy: ignore-errors
"""
Seed 003 ("How to use twisted to realize TCP Communication in python"),
the TCP client with its reconnecting factory, in Python 3.

Changed from the tutorial, and nothing else:
  - host and port come from the command line (the tutorial's are
    127.0.0.1 and 9527), and so do the sleep before each answer (the
    tutorial's 5 seconds) and before each reconnection (30 seconds);
  - the methods the article shows apart (C{buildProtocol} is added to
    C{TcpClientFactory} later in its text) are in one class;
  - C{except BaseException ase} is C{except BaseException}, and the
    missing commas after C{"Failed To Connect To Tcp Server"} and
    C{"data:"} are there;
  - print flushes.
"""

import datetime
import sys
import time

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol

SLEEP = float(sys.argv[3])
RETRY = float(sys.argv[4])


class TcpClient(Protocol):
    SERVER_MAP = {}

    def connectionMade(self):
        addr = self.transport.addr  # get server-side connection information
        print("connected", self.transport.socket, flush=True)
        client_ip = addr[0]
        TcpClient.SERVER_MAP[client_ip] = self
        nowTime = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        str = "Hello server, I am the client " + nowTime
        self.transport.write(str.encode("utf-8"))  # send the message

    def connectionLost(self, reason):
        addr = self.transport.addr  # get the connection information of the server
        client_ip = addr[0]
        if client_ip in TcpClient.SERVER_MAP:
            del TcpClient.SERVER_MAP[client_ip]

    def dataReceived(self, tcp_data):
        addr = self.transport.addr  # get the connection information on the server side
        nowTime = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        try:
            msg = tcp_data.decode("utf-8")
            print("Received msg", msg, "from Tcp Server", addr, flush=True)
            time.sleep(SLEEP)
            str = "response from the client " + nowTime
            self.transport.write(str.encode("utf-8"))
        except BaseException:
            print("Comd Execute Error from", addr, "data:", tcp_data, flush=True)
            str = "client exception " + nowTime
            self.transport.write(str.encode("utf-8"))


class TcpClientFactory(ClientFactory):
    def startedConnecting(self, connector):
        print(
            "Starting Connecting To Tcp Server",
            (connector.host, connector.port),
            flush=True,
        )

    def buildProtocol(self, addr):
        print("Connected To Tcp Server", addr, flush=True)
        self.protocol = TcpClient()
        return self.protocol

    def clientConnectionLost(self, connector, reason):
        print(
            "Lost Connection from Tcp Server",
            (connector.host, connector.port),
            "Reason:",
            reason,
            flush=True,
        )
        time.sleep(RETRY)
        connector.connect()

    def clientConnectionFailed(self, connector, reason):
        print(
            "Failed To Connect To Tcp Server",
            (connector.host, connector.port),
            "Reason:",
            reason,
            flush=True,
        )
        time.sleep(RETRY)
        connector.connect()


host = sys.argv[1]
port = int(sys.argv[2])
reactor.connectTCP(host, port, TcpClientFactory())
reactor.run()
