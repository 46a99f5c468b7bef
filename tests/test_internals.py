"""
Tests for L{netdemo.internals}, the one seam onto Twisted's private API.

Each test pins one private behaviour netdemo relies on, on a real object of
the installed Twisted, so that an upgrade that changes it fails here, by
name, instead of quietly breaking byte accounting, the direct-send path,
connected UDP or systemd socket activation.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import abstract, reactor, tcp, udp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo import internals
from netdemo.internals import (
    SD_LISTEN_FDS_START,
    AddressSharingMulticastPort,
    RefusalTolerantPort,
    WatchedHTTPChannel,
    adoptDatagramPortAs,
    backloggedTransports,
    capAccepts,
    directTransport,
    endpointPort,
    inheritedListenFDs,
    limitWriteBuffer,
    listenMulticastSharing,
    sendIfIdle,
    unsentBytes,
    writeNow,
)
from tests.support import waitUntil


class _Keep(Protocol):
    """
    Keeps what it receives; can stop reading.
    """

    def __init__(self) -> None:
        self.received = b""
        self.made: Deferred[_Keep] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class _TCPPair:
    """
    A real TCP connection on 127.0.0.1: C{server} and C{client} protocols.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.testCase = testCase
        self.server = _Keep()
        self.client = _Keep()

    async def connect(self) -> None:
        from twisted.internet.endpoints import (
            TCP4ClientEndpoint,
            TCP4ServerEndpoint,
            connectProtocol,
        )

        server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await server.listen(Factory.forProtocol(lambda: self.server))
        self.testCase.addCleanup(port.stopListening)
        address: Any = port.getHost()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        await connectProtocol(endpoint, self.client)
        await self.server.made

    async def close(self) -> None:
        self.client.transport.loseConnection()  # type: ignore[union-attr]
        self.server.transport.loseConnection()  # type: ignore[union-attr]
        await self.server.lost
        await self.client.lost


class WriteBufferTests(TestCase):
    """
    The write buffer of Twisted's socket transports: C{dataBuffer},
    C{offset}, C{_tempDataLen}, and the transport's C{socket}.
    """

    def test_fileDescriptorBufferAttributes(self) -> None:
        """
        A new L{abstract.FileDescriptor} has an empty C{dataBuffer} at
        C{offset} 0 and no C{_tempDataLen}; a write adds to C{_tempDataLen}.
        """

        class Quiet(abstract.FileDescriptor):
            def startWriting(self) -> None:
                """
                No real descriptor to watch.
                """

        fd = Quiet(reactor)
        self.assertEqual((fd.dataBuffer, fd.offset, fd._tempDataLen), (b"", 0, 0))
        fd.connected = True
        fd.write(b"abc")
        self.assertEqual(fd._tempDataLen, 3)
        self.assertEqual(unsentBytes(fd), 3)

    async def test_unsentBytesOfAStalledReader(self) -> None:
        """
        Data for a peer that stops reading stays in the server transport's
        buffer, and L{unsentBytes} counts it byte for byte: what was
        written, less what the kernel took.
        """
        pair = _TCPPair(self)
        await pair.connect()
        pair.client.transport.pauseProducing()  # type: ignore[union-attr]
        transport = pair.server.transport
        assert isinstance(transport, tcp.Server)
        chunk = b"x" * 65536
        for _ in range(200):
            transport.write(chunk)
        unsent = unsentBytes(transport)
        self.assertEqual(
            unsent,
            len(transport.dataBuffer) - transport.offset + transport._tempDataLen,
        )
        self.assertGreater(unsent, 0)
        self.assertLessEqual(unsent, 200 * len(chunk))
        pair.client.transport.resumeProducing()
        await waitUntil(lambda: unsentBytes(transport) == 0)
        await waitUntil(lambda: len(pair.client.received) == 200 * len(chunk))
        await pair.close()

    def test_otherTransportsSayNothing(self) -> None:
        """
        A transport that is not a socket transport has no unsent bytes to
        report, and no direct-send path.
        """
        transport = StringTransport()
        transport.write(b"abc")
        self.assertEqual(unsentBytes(transport), 0)
        self.assertIsNone(directTransport(transport))

    async def test_writeNow(self) -> None:
        """
        L{writeNow} on a plain TCP server transport delivers in order:
        directly when nothing is queued, through the buffer otherwise.
        """
        pair = _TCPPair(self)
        await pair.connect()
        transport = directTransport(pair.server.transport)
        assert transport is not None
        self.assertIsInstance(transport.socket, socket.socket)
        writeNow(transport, b"first ")
        # Nothing was queued: the kernel took it at once.
        self.assertEqual(unsentBytes(transport), 0)
        transport.write(b"second ")
        writeNow(transport, b"third")
        self.assertGreater(unsentBytes(transport), 0)
        await waitUntil(lambda: pair.client.received == b"first second third")
        await pair.close()

    async def test_writeNowQueuedBuffer(self) -> None:
        """
        L{writeNow} with C{queuedBuffer} leaves the transport's
        C{bufferSize} alone while the kernel takes everything, and sets it
        before queueing what the kernel refused, so that the pause is
        decided with it.
        """
        pair = _TCPPair(self)
        await pair.connect()
        transport = directTransport(pair.server.transport)
        assert transport is not None
        transport.registerProducer(transport, True)
        writeNow(transport, b"small", 1000)
        self.assertEqual(transport.bufferSize, 65536)
        pair.client.transport.pauseProducing()  # type: ignore[union-attr]
        for _ in range(1000):
            writeNow(transport, b"x" * 65536, 1000)
            if unsentBytes(transport):
                break
        self.assertEqual(transport.bufferSize, 1000)
        self.assertNotIn(transport, reactor.getReaders())
        limitWriteBuffer(transport, None)
        self.assertEqual(transport.bufferSize, 65536)
        transport.unregisterProducer()
        pair.client.transport.resumeProducing()  # type: ignore[union-attr]
        await waitUntil(lambda: unsentBytes(transport) == 0)
        await pair.close()

    async def test_sendIfIdle(self) -> None:
        """
        L{sendIfIdle} sends only when nothing is queued, and never queues.
        """
        pair = _TCPPair(self)
        await pair.connect()
        transport = directTransport(pair.server.transport)
        assert transport is not None
        self.assertTrue(sendIfIdle(transport, b"one "))
        transport.write(b"two")
        self.assertFalse(sendIfIdle(transport, b"never"))
        await waitUntil(lambda: pair.client.received == b"one two")
        await pair.close()


class BacklogTests(TestCase):
    """
    The transports holding unsent bytes are the reactor's writers.
    """

    async def test_stalledReaderIsAWriter(self) -> None:
        """
        A server transport with unsent bytes (its peer does not read) is
        among the reactor's writers, with its protocol and exactly its
        unsent bytes; once they are sent it is not.
        """
        pair = _TCPPair(self)
        await pair.connect()
        pair.client.transport.pauseProducing()  # type: ignore[union-attr]
        transport = pair.server.transport
        assert isinstance(transport, tcp.Server)
        for _ in range(100):
            transport.write(b"x" * 65536)
        found = dict(backloggedTransports(reactor.getWriters()))
        self.assertEqual(found.get(pair.server), unsentBytes(transport))
        self.assertGreater(found[pair.server], 0)
        pair.client.transport.resumeProducing()
        await waitUntil(lambda: unsentBytes(transport) == 0)
        self.assertNotIn(pair.server, dict(backloggedTransports(reactor.getWriters())))
        await waitUntil(lambda: len(pair.client.received) == 100 * 65536)
        await pair.close()

    def test_otherWriters(self) -> None:
        """
        Writers that are not socket transports are left out.
        """
        self.assertEqual(list(backloggedTransports([object()])), [])


class WriteBufferSizeTests(TestCase):
    """
    C{FileDescriptor.bufferSize} is the level at which a transport pauses
    its producer, and the size of one read.
    """

    async def test_pausesAbove(self) -> None:
        """
        A transport that is its own producer stops reading once more than
        its buffer size is unsent, and not below.
        """
        pair = _TCPPair(self)
        await pair.connect()
        transport = pair.server.transport
        assert isinstance(transport, tcp.Server)
        transport.registerProducer(transport, True)
        limitWriteBuffer(transport, 1000)
        transport.write(b"x" * 1000)
        self.assertIn(transport, reactor.getReaders())
        transport.write(b"x")
        self.assertNotIn(transport, reactor.getReaders())
        await waitUntil(lambda: len(pair.client.received) == 1001)
        self.assertIn(transport, reactor.getReaders())
        transport.unregisterProducer()
        await pair.close()

    async def test_readSize(self) -> None:
        """
        No read is larger than the buffer size.
        """
        sizes: list[int] = []

        class Sizes(_Keep):
            def dataReceived(self, data: bytes) -> None:
                sizes.append(len(data))
                super().dataReceived(data)

        pair = _TCPPair(self)
        pair.server = Sizes()
        await pair.connect()
        limitWriteBuffer(pair.server.transport, 1000)
        pair.client.transport.write(b"y" * 50000)  # type: ignore[union-attr]
        await waitUntil(lambda: len(pair.server.received) == 50000)
        self.assertLessEqual(max(sizes), 1000)
        await pair.close()

    def test_otherTransports(self) -> None:
        """
        Other transports are left alone.
        """
        transport = StringTransport()
        limitWriteBuffer(transport, 10)
        self.assertFalse(hasattr(transport, "bufferSize"))


def nextTurn(clock: Any) -> None:
    """
    Run the calls of C{clock} that are due now and were scheduled before
    this call, as one turn of the reactor does (C{Clock.advance(0)} would
    also run those they schedule).
    """
    due = [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = True
        call.func(*call.args, **call.kw)


class _Watcher:
    """
    Records what a L{WatchedHTTPChannel} tells it; refuses bodies when
    told to.
    """

    def __init__(self, refusal: bytes | None = None) -> None:
        self.refusal = refusal
        self.calls: list[Any] = []
        #: The resumptions it holds, when it makes the channel wait.
        self.held: list[Any] | None = None

    def headReceived(self) -> None:
        self.calls.append("head")

    def bodyDeclared(self, method: bytes, length: int | None) -> bytes | None:
        self.calls.append(("body", method, length))
        return self.refusal

    def requestFinished(self, request: Any) -> None:
        self.calls.append(("done", request.uri))

    def mayGoOn(self, resume: Any) -> bool:
        if self.held is None:
            return True
        self.held.append(resume)
        return False


class HTTPChannelTests(SynchronousTestCase):
    """
    When Twisted's C{HTTPChannel} calls C{allHeadersReceived} and
    C{requestDone}, what C{_command} and C{length} hold then, and that its
    parser stops once the transport is C{disconnecting}.
    """

    def channel(self, watcher: _Watcher) -> tuple[Any, StringTransport]:
        """
        A L{WatchedHTTPChannel} of a site answering every path, on a
        L{StringTransport}, with Twisted's body file creation recorded.
        """
        from twisted.internet.task import Clock
        from twisted.web import http
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Hello(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                return b"hello"

        self.bodyFiles: list[Any] = []
        real = http._getContentFile

        def recorded(length: Any) -> Any:
            self.bodyFiles.append(length)
            return real(length)

        self.patch(http, "_getContentFile", recorded)
        self.clock = Clock()
        site = Site(Hello(), timeout=None, reactor=self.clock)
        site.protocol = WatchedHTTPChannel  # type: ignore[assignment]
        channel: Any = site.buildProtocol(None)
        channel.watcher = watcher
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_headBeforeBody(self) -> None:
        """
        The head hook runs before Twisted prepares the body; the method and
        declared length are those of the request; C{requestDone} follows
        the response.
        """
        watcher = _Watcher()
        channel, transport = self.channel(watcher)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(watcher.calls, ["head", ("body", b"PUT", 3)])
        self.assertEqual(self.bodyFiles, [3])
        channel.dataReceived(b"abc")
        self.assertEqual(watcher.calls[-1], ("done", b"/a"))
        self.assertIn(b"hello", transport.value())

    def test_chunkedLength(self) -> None:
        """
        A chunked body declares no length: L{None}.
        """
        watcher = _Watcher()
        channel, _ = self.channel(watcher)
        channel.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(watcher.calls, ["head", ("body", b"POST", None)])

    def test_noBody(self) -> None:
        """
        Without a declared body, only the head hook runs.
        """
        watcher = _Watcher()
        channel, _ = self.channel(watcher)
        channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n")
        self.assertEqual(watcher.calls, ["head", ("done", b"/x")])

    def test_refusal(self) -> None:
        """
        A refused request gets the refusal as its whole answer and the
        connection closes; the body that arrived with the head is neither
        prepared nor read, and the channel parses nothing further.
        """
        watcher = _Watcher(refusal=b"NO\r\n")
        channel, transport = self.channel(watcher)
        channel.dataReceived(
            b"GET / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"
            + b"GET /again HTTP/1.1\r\n\r\n" * 100
        )
        self.assertEqual(transport.value(), b"NO\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.bodyFiles, [])
        self.assertEqual(watcher.calls, ["head", ("body", b"GET", 999999999)])
        channel.connectionLost(None)

    def test_requestsPerTurn(self) -> None:
        """
        Of many pipelined requests that arrive together, C{requestsPerTurn}
        are answered, then the channel stops parsing and reading (the
        transport is paused) until the next turn of the clock.
        """
        channel, transport = self.channel(_Watcher())
        channel.requestsPerTurn = 4
        channel.newRead()
        channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n" * 10)
        self.assertEqual(transport.value().count(b"hello"), 4)
        self.assertEqual(transport.producerState, "paused")
        nextTurn(self.clock)
        self.assertEqual(transport.value().count(b"hello"), 8)
        nextTurn(self.clock)
        self.assertEqual(transport.value().count(b"hello"), 10)
        self.assertEqual(transport.producerState, "producing")

    def test_watcherHolds(self) -> None:
        """
        When the watcher says a finished request must wait (a budget shared
        with other connections), the channel stops parsing and reading
        until the watcher calls the resumption it was given; then it
        answers what is waiting.
        """
        watcher = _Watcher()
        watcher.held = []
        channel, transport = self.channel(watcher)
        channel.newRead()
        channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n" * 3)
        self.assertEqual(transport.value().count(b"hello"), 1)
        self.assertEqual(transport.producerState, "paused")
        nextTurn(self.clock)
        self.assertEqual(transport.value().count(b"hello"), 1)
        self.assertEqual(len(watcher.held), 1)
        watcher.held.pop()()
        self.assertEqual(transport.value().count(b"hello"), 2)
        self.assertEqual(len(watcher.held), 1)
        resume = watcher.held.pop()
        watcher.held = None
        resume()
        self.assertEqual(transport.value().count(b"hello"), 3)
        self.assertEqual(transport.producerState, "producing")

    def test_lostWhileHeld(self) -> None:
        """
        A resumption called after the connection was lost does nothing.
        """
        watcher = _Watcher()
        watcher.held = []
        channel, transport = self.channel(watcher)
        channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n" * 2)
        channel.connectionLost(None)
        watcher.held.pop()()
        self.assertEqual(transport.value().count(b"hello"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notReadingResponses(self) -> None:
        """
        A client that does not read its responses (the transport paused the
        channel) is not read from again at the next turn.
        """
        channel, transport = self.channel(_Watcher())
        channel.requestsPerTurn = 1
        channel.newRead()
        channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n" * 3)
        channel.pauseProducing()
        nextTurn(self.clock)
        self.assertTrue(channel._waitingForTransport)
        self.assertEqual(transport.producerState, "paused")

    def test_lostWhilePaused(self) -> None:
        """
        A connection lost while waiting for its next turn leaves no timer.
        """
        channel, _ = self.channel(_Watcher())
        channel.requestsPerTurn = 1
        channel.newRead()
        channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n" * 3)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_doneBeforePipelined(self) -> None:
        """
        C{requestDone} runs before the next pipelined request is parsed.
        """
        watcher = _Watcher()
        channel, _ = self.channel(watcher)
        channel.dataReceived(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        self.assertEqual(
            watcher.calls, ["head", ("done", b"/1"), "head", ("done", b"/2")]
        )


class _Refusals(DatagramProtocol):
    """
    Counts refusals and keeps datagrams.
    """

    def __init__(self) -> None:
        self.refused = 0
        self.received: list[bytes] = []

    def connectionRefused(self) -> None:
        self.refused += 1

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


def _closedUDPPort() -> tuple[socket.socket, int]:
    """
    A UDP port on 127.0.0.1 that this test owns and that nobody reads: bound,
    then closed by the caller to make it refuse.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


class ConnectedUDPTests(TestCase):
    """
    Twisted's epoll reactor closes a connected UDP port on an ICMP error
    (twisted/twisted#6467); L{RefusalTolerantPort} keeps it open.
    """

    async def _refusedOnce(
        self, portType: type[udp.Port]
    ) -> tuple[udp.Port, _Refusals, int]:
        """
        Send one datagram from a C{portType} connected to a port of ours
        that nobody reads any more, and wait for the refusal to arrive.

        @return: The port, its protocol, and the refusing port number.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", 0))
        number = holder.getsockname()[1]
        holder.close()
        proto = _Refusals()
        port = portType(0, proto, "127.0.0.1", 65535, reactor)
        port.startListening()
        self.addCleanup(lambda: port.connected and port.stopListening())
        port.connect("127.0.0.1", number)
        port.write(b"anyone?")
        await waitUntil(lambda: proto.refused or not port.connected, timeout=5.0)
        return port, proto, number

    async def test_twistedStillClosesOnRefusal(self) -> None:
        """
        A plain connected L{udp.Port} is closed by the first ICMP refusal on
        this reactor: the workaround is still needed.  If this fails, a
        Twisted release fixed #6467 and L{RefusalTolerantPort} may go.
        """
        from twisted.internet.epollreactor import EPollReactor

        if not isinstance(reactor, EPollReactor):
            self.skipTest("the refusal hang-up is specific to the epoll reactor")
        port, proto, _ = await self._refusedOnce(udp.Port)
        self.assertFalse(port.connected)

    async def test_tolerantPortKeepsReading(self) -> None:
        """
        L{RefusalTolerantPort} reports the refusal and keeps working: a
        later echo is received.
        """
        self.assertTrue(IHalfCloseableDescriptor.implementedBy(RefusalTolerantPort))
        port, proto, number = await self._refusedOnce(RefusalTolerantPort)
        self.assertEqual(proto.refused, 1)
        self.assertTrue(port.connected)
        # Someone answers on that port now (the port was ours a moment ago).
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(echo.close)
        echo.bind(("127.0.0.1", number))
        port.write(b"hello")
        echo.settimeout(5)
        data, sender = echo.recvfrom(100)
        echo.sendto(data, sender)
        await waitUntil(lambda: proto.received == [b"hello"])


class AdoptionTests(TestCase):
    """
    C{udp.Port._fromListeningDescriptor} builds a port of our own type on
    an inherited socket.
    """

    async def test_adoptIntoSubclass(self) -> None:
        """
        L{adoptDatagramPortAs} returns a port of the given type that reads
        the inherited socket once it listens.
        """

        class Mine(udp.Port):
            """
            A subclass, as L{netdemo.udpecho.PacketInfoPort} is.
            """

        inherited = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(inherited.close)
        inherited.bind(("127.0.0.1", 0))
        inherited.setblocking(False)
        proto = _Refusals()
        port = adoptDatagramPortAs(
            Mine, reactor, inherited.fileno(), socket.AF_INET, proto, 65535
        )
        self.assertIsInstance(port, Mine)
        port.startListening()
        self.addCleanup(port.stopListening)
        self.assertEqual(port.getHost().port, inherited.getsockname()[1])
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.sendto(b"adopted", inherited.getsockname())
        await waitUntil(lambda: proto.received == [b"adopted"])


class _Collect(DatagramProtocol):
    """
    Keep every datagram received.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


class SharedMulticastPortTests(TestCase):
    """
    Twisted's C{listenMultiple} sets C{SO_REUSEPORT}; the responder's own
    port shares with C{SO_REUSEADDR} alone, so a program that binds the
    port later gets the unicast datagrams sent to it.
    """

    def listen(self, proto: Any, number: int = 0, shared: bool = True) -> Any:
        """
        A multicast port on C{number}: ours, or Twisted's with
        C{listenMultiple=True}.
        """
        if shared:
            port = listenMulticastSharing(reactor, number, proto, "", 65535)
        else:
            port = reactor.listenMulticast(  # type: ignore[attr-defined]
                number, proto, "", 65535, listenMultiple=True
            )
        self.addCleanup(port.stopListening)
        return port

    def test_twistedSetsReusePort(self) -> None:
        """
        Twisted's C{listenMultiple} still sets both options (the reason for
        L{AddressSharingMulticastPort}); ours sets C{SO_REUSEADDR} only.
        """
        twisted = self.listen(DatagramProtocol(), shared=False).getHandle()
        ours = self.listen(DatagramProtocol())
        self.assertIsInstance(ours, AddressSharingMulticastPort)
        for skt, reusePort in ((twisted, 1), (ours.getHandle(), 0)):
            self.assertEqual(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), 1)
            self.assertEqual(
                skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), reusePort
            )

    async def test_laterBinderGetsUnicast(self) -> None:
        """
        With our port bound first and a classic C{listenMultiple} peer
        second, unicast datagrams to the port, even those sent from our own
        port, reach the peer, every one.
        """
        mine, peer = _Collect(), _Collect()
        ours = self.listen(mine)
        number = ours.getHost().port
        self.listen(peer, number, shared=False)
        for i in range(20):
            ours.write(b"%d" % (i,), ("127.0.0.1", number))
        await waitUntil(lambda: len(peer.received) == 20)
        self.assertEqual(mine.received, [])


class SystemdTests(SynchronousTestCase):
    """
    The descriptors systemd passed, as Twisted's endpoint parser kept them.
    """

    def test_parserInstance(self) -> None:
        """
        L{inheritedListenFDs} is the L{ListenFDs} of Twisted's C{systemd:}
        endpoint parser.
        """
        from twisted.internet.endpoints import _SystemdParser

        fds = inheritedListenFDs()
        self.assertIsInstance(fds, ListenFDs)
        self.assertIs(fds, _SystemdParser._sddaemon)

    def test_start(self) -> None:
        """
        systemd's first descriptor is 3, as Twisted's own constant says.
        """
        self.assertEqual(SD_LISTEN_FDS_START, 3)
        self.assertEqual(ListenFDs._START, SD_LISTEN_FDS_START)


class AcceptBatchTests(TestCase):
    """
    How many connections a listening TCP port accepts per turn.
    """

    def listen(self, count: int) -> tuple[tcp.Port, list[socket.socket]]:
        """
        A listening port with C{count} connections waiting to be accepted
        (its reading stopped, so that the test turns the crank).
        """
        factory: Any = Factory.forProtocol(_Keep)
        port: Any = reactor.listenTCP(0, factory, backlog=128, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        port.stopReading()
        clients = []
        for _ in range(count):
            client = socket.create_connection(
                ("127.0.0.1", port.getHost().port), timeout=5
            )
            self.addCleanup(client.close)
            clients.append(client)
        return port, clients

    def accepted(self, port: tcp.Port) -> int:
        """
        The connections the port accepted so far.
        """
        return int(port.sessionno)

    def test_twistedGrowsItsBatch(self) -> None:
        """
        Twisted's port accepts C{numberAccepts} connections in one
        C{doRead} and grows the batch by 20 when it was full: the behaviour
        L{capAccepts} bounds.
        """
        port, _ = self.listen(60)
        port.numberAccepts = 10
        port.doRead()
        self.assertEqual(self.accepted(port), 10)
        self.assertEqual(port.numberAccepts, 30)
        port.doRead()
        self.assertEqual(self.accepted(port), 40)
        self.addCleanup(self.closeAccepted, port)

    def test_capped(self) -> None:
        """
        A capped port accepts at most that many per C{doRead}, however its
        batch grew; a port of another kind is left alone.
        """
        port, _ = self.listen(60)
        self.assertTrue(capAccepts(port, 25))
        port.numberAccepts = 1000
        port.doRead()
        self.assertEqual(self.accepted(port), 25)
        port.doRead()
        self.assertEqual(self.accepted(port), 50)
        self.assertFalse(capAccepts(object(), 25))
        self.addCleanup(self.closeAccepted, port)

    def closeAccepted(self, port: tcp.Port) -> None:
        """
        Close the connections the port accepted.
        """
        for reader in list(reactor.getReaders()):
            if isinstance(reader, tcp.Server) and reader.server is port:
                reader.abortConnection()


class EndpointPortTests(SynchronousTestCase):
    """
    The port a parsed server endpoint will listen on.
    """

    def test_tcp(self) -> None:
        """
        TCP and TCP6 endpoints say their port; others have none.
        """
        self.assertEqual(endpointPort(serverFromString(reactor, "tcp:8007")), 8007)
        self.assertEqual(
            endpointPort(serverFromString(reactor, r"tcp6:7:interface=\:\:1")), 7
        )
        self.assertIsNone(endpointPort(serverFromString(reactor, "unix:/tmp/x")))

    def test_ssl(self) -> None:
        """
        An C{ssl:} endpoint says its port too.
        """
        from twisted.internet.endpoints import SSL4ServerEndpoint

        endpoint = SSL4ServerEndpoint(reactor, 8443, object())
        self.assertEqual(endpointPort(endpoint), 8443)

    def test_noOtherPrivateUse(self) -> None:
        """
        The module lists every touchpoint in its docstring.
        """
        doc = internals.__doc__ or ""
        for name in (
            "dataBuffer",
            "_fromListeningDescriptor",
            "_sddaemon",
            "_port",
            "getWriters",
            "bufferSize",
            "allHeadersReceived",
            "requestDone",
            "_command",
            "disconnecting",
            "numberAccepts",
            "createInternetSocket",
        ):
            self.assertIn(name, doc)


class TwistdLogObserverTests(SynchronousTestCase):
    """
    L{internals.twistdLogObserver} builds the observer twistd's C{AppLogger}
    would, from twistd's parsed options.
    """

    def test_foreground(self) -> None:
        """
        With C{-n} and no C{--logfile}, text to standard output.
        """
        import io
        import sys

        from twisted.logger import FileLogObserver
        from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "netdemo", "--tcp", "0"])
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = internals.twistdLogObserver(config)
        self.assertIsInstance(observer, FileLogObserver)
        observer({"log_format": "hello", "log_time": 0.0, "log_namespace": "t"})
        self.assertIn("hello", out.getvalue())


class LeanServerTests(TestCase):
    """
    L{internals.LeanServer}: C{tcp.Server} without C{repstr},
    C{_tempDataBuffer} and C{sessionno} kept per connection, and one host
    string shared by the connections from one host.
    """

    async def accept(
        self, own: type[tcp.Server] | None = None, host: str = "127.0.0.1"
    ) -> list[Any]:
        """
        Two connections accepted by a port that L{leanTransports} was
        applied to (after giving it C{own} connections to build, if given),
        each with a client that keeps what it receives: the server
        transports and the client protocols.
        """
        from twisted.internet.endpoints import (
            TCP4ClientEndpoint,
            TCP4ServerEndpoint,
            connectProtocol,
        )

        servers: list[_Keep] = []

        def build() -> _Keep:
            servers.append(_Keep())
            return servers[-1]

        from twisted.internet.endpoints import TCP6ServerEndpoint

        serverType = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
        port = await serverType(reactor, 0, interface=host).listen(
            Factory.forProtocol(build)
        )
        self.addCleanup(port.stopListening)
        if own is not None:
            port.transport = own
        self.assertEqual(internals.leanTransports(port), own is None)
        clients = []
        for _ in range(2):
            endpoint = TCP4ClientEndpoint(reactor, host, port.getHost().port)
            client = _Keep()
            await connectProtocol(endpoint, client)
            clients.append(client)
        for server in servers:
            await server.made

        async def close() -> None:
            for server, client in zip(servers, clients, strict=True):
                server.transport.loseConnection()  # type: ignore[union-attr]
                await server.lost
                await client.lost

        self.closeAll = close
        return [s.transport for s in servers] + clients

    def test_twistedKeepsThem(self) -> None:
        """
        What L{internals.LeanServer} drops, C{tcp.Server} sets per
        connection: a C{repstr}, a C{_tempDataBuffer} list, a C{sessionno},
        and a C{logstr} of the protocol's prefix, that number and the host.
        """
        import inspect

        source = inspect.getsource(tcp.Server.__init__)
        self.assertIn("self.repstr", source)
        self.assertIn("self.sessionno = sessionno", source)
        self.assertIn(
            'self.logstr = f"{logPrefix},{sessionno},{self.hostname}"', source
        )
        self.assertIn(
            "self._tempDataBuffer", inspect.getsource(abstract.FileDescriptor)
        )

    async def test_lean(self) -> None:
        """
        A port that L{internals.leanTransports} changed builds
        L{internals.LeanServer} connections: they keep no C{repstr},
        C{_tempDataBuffer} or C{sessionno} of their own, say the same
        C{repr}, C{sessionno} and peer as C{tcp.Server} would, share one
        host string, and write (buffered, through the list made on first
        use) as Twisted's do.
        """
        first, second, client, _ = await self.accept()
        self.assertIs(type(first), internals.LeanServer)
        own = vars(first)
        for name in ("repstr", "_tempDataBuffer", "sessionno", "client"):
            self.assertNotIn(name, own)
        self.assertEqual(first.client, ("127.0.0.1", client.transport.getHost().port))
        self.assertEqual(second.sessionno, first.sessionno + 1)
        self.assertEqual(
            repr(first),
            f"<_Keep #{first.sessionno} on {first.server._realPortNumber}>",
        )
        self.assertEqual(first.logstr, f"_Keep,{first.sessionno},127.0.0.1")
        self.assertIs(first.client[0], second.client[0])
        self.assertIs(first.hostname, second.hostname)
        self.assertEqual(first.getPeer().host, "127.0.0.1")
        self.assertEqual(first.getPeer().port, client.transport.getHost().port)
        self.assertIs(directTransport(first), first)
        first.write(b"hello ")
        first.writeSequence([b"lean ", b"world"])
        self.assertIn("_tempDataBuffer", vars(first))
        await waitUntil(lambda: client.received == b"hello lean world")
        with self.assertRaises(AttributeError):
            first.noSuchAttribute  # noqa: B018
        await self.closeAll()

    async def test_noFallback(self) -> None:
        """
        L{internals.LeanServer} has no C{__getattr__}: every attribute lookup
        on a connection (the reactor makes several per event) is the
        interpreter's own, as on C{tcp.Server}.  What it does not keep is
        computed by class attributes that a value stored on the connection
        overrides: the write list is made once and then found on the
        connection, and a C{client} stored later (as a PROXY header's
        hand-over does) is the one read.
        """
        self.assertFalse(hasattr(internals.LeanServer, "__getattr__"))
        self.assertIs(
            type(internals.LeanServer).__getattribute__,
            type(tcp.Server).__getattribute__,
        )
        first, second, client, _ = await self.accept()
        pending = first._tempDataBuffer
        self.assertEqual(pending, [])
        self.assertIs(vars(first)["_tempDataBuffer"], pending)
        self.assertIs(first._tempDataBuffer, pending)
        first.client = ("203.0.113.9", 4711)
        self.assertEqual(first.getPeer().host, "203.0.113.9")
        self.assertEqual(first.getPeer().port, 4711)
        self.assertEqual(second.client[0], "127.0.0.1")
        with self.assertRaises(AttributeError):
            first.noSuchAttribute  # noqa: B018
        await self.closeAll()

    def test_twistedRead(self) -> None:
        """
        What L{internals.LeanServer.doRead} does in one call is what
        Twisted's C{tcp.Connection.doRead} and C{_dataReceived} do in two.
        """
        import inspect

        self.assertIn("doRead", vars(internals.LeanServer))
        doRead = inspect.getsource(tcp.Connection.doRead)
        for line in (
            "data = self.socket.recv(self.bufferSize)",
            "if se.args[0] == EWOULDBLOCK:",
            "return main.CONNECTION_LOST",
            "return self._dataReceived(data)",
        ):
            self.assertIn(line, doRead)
        received = inspect.getsource(tcp.Connection._dataReceived)
        for line in (
            "if not data:",
            "return main.CONNECTION_DONE",
            "self.protocol.dataReceived(data)",
        ):
            self.assertIn(line, received)
        self.assertIs(tcp.Server._dataReceived, tcp.Connection._dataReceived)

    async def test_doRead(self) -> None:
        """
        L{internals.LeanServer.doRead}: nothing to read is L{None}; bytes go
        to the protocol; the peer's FIN is C{CONNECTION_DONE}; a reset is
        C{CONNECTION_LOST}.
        """
        import select
        import struct

        from twisted.internet import main

        first, second, client, otherClient = await self.accept()
        first.stopReading()
        second.stopReading()

        def readable(transport: Any) -> bool:
            return bool(select.select([transport.socket], [], [], 0)[0])

        self.assertIsNone(first.doRead())
        client.transport.write(b"abc")
        await waitUntil(lambda: readable(first))
        self.assertIsNone(first.doRead())
        self.assertEqual(first.protocol.received, b"abc")
        client.transport.loseConnection()
        await waitUntil(lambda: readable(first))
        self.assertIs(first.doRead(), main.CONNECTION_DONE)
        otherClient.transport.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        otherClient.transport.abortConnection()
        await waitUntil(lambda: readable(second))
        self.assertIs(second.doRead(), main.CONNECTION_LOST)
        await self.closeAll()

    async def test_ipv6(self) -> None:
        """
        An IPv6 peer's four-item C{client} is kept as Twisted made it (but
        with the shared host string); C{getPeer} is Twisted's.
        """
        first, second, client, _ = await self.accept(host="::1")
        self.assertIs(type(first), internals.LeanServer)
        self.assertIn("client", vars(first))
        self.assertEqual(len(first.client), 4)
        self.assertIs(first.client[0], second.client[0])
        peer = first.getPeer()
        self.assertEqual(
            (peer.host, peer.port), ("::1", client.transport.getHost().port)
        )
        self.assertEqual(first.logstr, f"_Keep,{first.sessionno},::1")
        await self.closeAll()

    async def test_othersLeftAlone(self) -> None:
        """
        L{internals.leanTransports} leaves a port that does not build plain
        C{tcp.Server} connections alone, and says so.
        """

        class Own(tcp.Server):
            pass

        self.assertFalse(internals.leanTransports(object()))
        first, second, client, _ = await self.accept(Own)
        self.assertIs(type(first), Own)
        self.assertIn("repstr", vars(first))
        await self.closeAll()


class WebSocketMessageBoundTests(SynchronousTestCase):
    """
    L{internals.boundWebSocketMessages} against Twisted's own WebSocket
    wire protocol (C{twisted.web._websocket_impl._WebSocketWireProtocol}).
    """

    def wire(self, limit: int) -> tuple[Any, list[Any], list[str]]:
        from twisted.web._websocket_impl import _WebSocketWireProtocol
        from wsproto import ConnectionType
        from wsproto.connection import Connection

        received: list[Any] = []
        tooBig: list[str] = []

        class Receiver:
            def negotiationStarted(self, transport: Any) -> None:
                pass

            def negotiationFinished(self) -> None:
                pass

            def textMessageReceived(self, message: str) -> None:
                received.append(message)

            def bytesMessageReceived(self, data: bytes | bytearray) -> None:
                received.append(bytes(data))

            def pongReceived(self, payload: bytes) -> None:
                pass

            def connectionLost(self, reason: Failure) -> None:
                pass

        server = Connection(ConnectionType.SERVER)
        wire = _WebSocketWireProtocol(server, lambda c, t: None, Receiver())
        self.assertTrue(hasattr(wire, "_textBuffer"))
        self.assertTrue(hasattr(wire, "_bytesBuffer"))
        internals.boundWebSocketMessages(wire, limit, lambda: tooBig.append("x"))
        wire.makeConnection(StringTransport())
        return wire, received, tooBig

    def frames(self, *parts: tuple[int, bytes, bool]) -> bytes:
        """
        Masked client frames: (opcode, payload, final) each.
        """
        out = b""
        for opcode, payload, final in parts:
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            size = len(payload)
            head = bytes(((0x80 if final else 0) | opcode,))
            if size < 126:
                head += bytes((0x80 | size,))
            else:
                head += b"\xfe" + size.to_bytes(2, "big")
            out += head + mask + masked
        return out

    def test_withinLimit(self) -> None:
        """
        Messages up to the limit, whole or in fragments, text or binary,
        arrive as they were sent.
        """
        wire, received, tooBig = self.wire(10)
        wire.dataReceived(self.frames((1, b"0123456789", True)))
        wire.dataReceived(self.frames((2, b"01234", False), (0, b"56789", True)))
        self.assertEqual(received, ["0123456789", b"0123456789"])
        self.assertEqual(tooBig, [])

    def test_overLimit(self) -> None:
        """
        A message over the limit, in one frame or in fragments (each within
        it), calls C{tooBig} once and is not kept; the next message is read.
        """
        wire, received, tooBig = self.wire(10)
        wire.dataReceived(self.frames((1, b"x" * 11, True)))
        self.assertEqual(tooBig, ["x"])
        wire.dataReceived(
            self.frames((1, b"x" * 8, False), (0, b"x" * 8, False), (0, b"x", True))
        )
        self.assertEqual(tooBig, ["x", "x"])
        self.assertEqual(received, ["", ""])
        wire.dataReceived(self.frames((1, b"ok", True)))
        self.assertEqual(received, ["", "", "ok"])
