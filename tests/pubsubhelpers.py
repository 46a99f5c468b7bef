"""
In-memory hub fixtures for the pub/sub tests: a L{PubSubFactory} on a
L{MemoryReactorClock}, and clients on L{StringTransport}s.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from netdemo.pubsub import PubSubFactory, PubSubProtocol


class ClosingTransport(StringTransport):
    """
    A L{StringTransport} that tells its protocol when it is closed, as a
    real transport would once its buffer is flushed.
    """

    protocol: PubSubProtocol
    connected = True

    def loseConnection(self) -> None:
        """
        Close, and tell the protocol at once.
        """
        super().loseConnection()
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(Failure(ConnectionError("closed")))

    def abortConnection(self) -> None:
        """
        Abort: as L{loseConnection}, and remember it.
        """
        self.aborted = True
        self.loseConnection()


class FakeClient:
    """
    One client of an in-memory hub.
    """

    def __init__(self, protocol: PubSubProtocol, transport: ClosingTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._seen = 0

    def send(self, data: bytes) -> None:
        """
        Deliver bytes from the client to the hub.
        """
        self.protocol.dataReceived(data)

    def received(self) -> list[bytes]:
        """
        Every line the hub sent so far (without LF).
        """
        return self.transport.value().split(b"\n")[:-1]

    def new(self) -> list[bytes]:
        """
        The lines sent since the last call.
        """
        lines = self.received()
        fresh = lines[self._seen :]
        self._seen = len(lines)
        return fresh

    @property
    def identity(self) -> bytes:
        """
        The identity the hub shows for this client.
        """
        return self.protocol.identity

    @property
    def closed(self) -> bool:
        """
        Whether the hub closed the connection.
        """
        return not self.transport.connected


class FakeHub:
    """
    A hub with a fake clock and in-memory connections.
    """

    def __init__(
        self,
        hubLimits: HubLimits | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.metrics = MemoryMetrics()
        self.factory = PubSubFactory(
            "pubsub",
            limits or ConnectionLimits(),
            hubLimits or HubLimits(),
            self.metrics,
            self.clock,
        )
        self.factory.startFactory()
        self._port = 40000

    def connect(self) -> FakeClient:
        """
        Connect one more client.
        """
        self._port += 1
        addr = IPv4Address("TCP", "127.0.0.1", self._port)
        protocol = self.factory.buildProtocol(addr)
        assert isinstance(protocol, PubSubProtocol)
        transport = ClosingTransport(peerAddress=addr)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return FakeClient(protocol, transport)

    def stop(self) -> None:
        """
        Stop the factory's timers.
        """
        self.factory.stopFactory()
