"""
Tests for C{twistd --reactor=netdemo}: L{netdemo.reactor} and
L{netdemo.internals.LogContextCachingEPollReactor}.

The reactor under test is a separate instance, run in a thread of its own so
that it runs at the bottom of that thread's log context stack, as it does in
C{twistd}; the tests' own reactor is not involved.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
from typing import Any

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone, ConnectionFdescWentAway
from twisted.internet.interfaces import IHalfCloseableDescriptor, IReadDescriptor
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import Factory, Protocol
from twisted.python import context
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from netdemo.internals import LogContextCachingEPollReactor
from tests.support import PATIENCE, Daemon, captureEvents, twistdPath


class _Boom(Protocol):
    """
    Raises on every read: a bug in a protocol callback.
    """

    def dataReceived(self, data: bytes) -> None:
        raise ZeroDivisionError("a bug in dataReceived")


class _EchoThenBoom(Protocol):
    """
    Echoes, and raises on a read holding C{b"!"}.
    """

    def dataReceived(self, data: bytes) -> None:
        if b"!" in data:
            raise ZeroDivisionError("a bug in dataReceived")
        self.transport.write(data)  # type: ignore[union-attr]


class _Echo(Protocol):
    """
    Echoes.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def _runInThread(work: Any) -> Any:
    """
    Run C{work()} in a new thread (a fresh log context stack) and return
    what it returned, or raise what it raised.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as e:  # pragma: no cover - re-raised below
            outcome["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(PATIENCE)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


class DispatchTests(SynchronousTestCase):
    """
    Events are dispatched with the selectable's cached log context.
    """

    def setUp(self) -> None:
        self.reactor = LogContextCachingEPollReactor()
        self.addCleanup(self.reactor.removeAll)
        self.events = captureEvents(self)

    def connect(self, protocol: type[Protocol]) -> tuple[socket.socket, Any]:
        """
        A listening port on the reactor under test and a blocking client
        connected to it, accepted.
        """
        port = self.reactor.listenTCP(
            0, Factory.forProtocol(protocol), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        self.iterate(lambda: self.server() is not None)
        return client, port

    def server(self) -> Any:
        """
        The accepted connection on the reactor under test, once there is one.
        """
        for selectable in list(self.reactor._selectables.values()):
            if isinstance(selectable, tcp.Server):
                return selectable
        return None

    def iterate(self, done: Any, rounds: int = 200) -> None:
        """
        Turn the reactor under test, in a thread of its own, until C{done()}
        (at most C{rounds} turns polling up to 50 ms).  C{iterate} calls
        C{doIteration}, the name the reactor's own loop calls, so these tests
        take the path C{reactor.run} takes.
        """

        def work() -> None:
            depth = len(context.theContextTracker.currentContext().contexts)
            assert depth == 1, depth
            for _ in range(rounds):
                if done():
                    return
                self.reactor.iterate(0.05)
            raise AssertionError("the reactor under test did not get there")

        _runInThread(work)

    def test_errorLoggedWithPrefix(self) -> None:
        """
        An exception raised by a protocol callback is logged with that
        connection's log prefix, and closes the connection, as with Twisted's
        epoll reactor.
        """
        client, port = self.connect(_Boom)
        prefix = self.server().logPrefix()
        self.assertIn("_Boom", prefix)
        client.sendall(b"x")
        self.iterate(lambda: any(e.get("failure") for e in self.events))
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertEqual(failure["system"], prefix)
        self.assertIsInstance(failure["failure"].value, ZeroDivisionError)
        self.flushLoggedErrors(ZeroDivisionError)
        client.settimeout(PATIENCE)
        self.assertEqual(client.recv(10), b"")

    def test_handedOverConnection(self) -> None:
        """
        A connection handed to another protocol and peer after a PROXY
        header (L{netdemo.internals.handOver}) logs its errors with its new
        prefix: the new protocol's name and the client's address, not the
        cached one of the header's reader.
        """
        from netdemo.proxyheader import ProxyHeaderFactory

        factory = ProxyHeaderFactory(
            Factory.forProtocol(_Boom), None, self.reactor, timeout=PATIENCE
        )
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        client.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 8008\r\n")
        self.iterate(lambda: self.server() is not None and not factory.waiting)
        client.sendall(b"x")
        self.iterate(lambda: any(e.get("failure") for e in self.events))
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertIn("_Boom", failure["system"])
        self.assertIn("203.0.113.9", failure["system"])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_contextBuiltOnce(self) -> None:
        """
        The log context of a connection is built once and reused for every
        later event; it is forgotten when the connection closes.
        """
        client, port = self.connect(_Echo)
        calls = []
        build = self.reactor._logContextFor

        def counting(fd: int, selectable: Any) -> Any:
            calls.append(fd)
            return build(fd, selectable)

        self.reactor._logContextFor = counting  # type: ignore[method-assign]
        client.setblocking(False)
        received: list[bytes] = []

        def echoed() -> bool:
            try:
                received.append(client.recv(10))
            except BlockingIOError:
                return False
            return True

        for i in range(5):
            client.sendall(b"%d" % (i,))
            self.iterate(echoed)
        self.assertEqual(received, [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(len(calls), 1)
        [fd] = calls
        self.assertIn(fd, self.reactor._logContexts)
        client.close()
        self.iterate(lambda: fd not in self.reactor._logContexts)

    def test_prefixReadOncePerSelectable(self) -> None:
        """
        Driven through C{iterate} (which calls C{doIteration}, as the
        reactor's main loop does), a connection's C{logPrefix} is called once
        for all its events, not once per event as Twisted's C{doPoll} calls
        it.
        """
        client, port = self.connect(_Echo)
        server = self.server()
        prefixes: list[str] = []
        logPrefix = server.logPrefix

        def counting() -> str:
            prefix: str = logPrefix()
            prefixes.append(prefix)
            return prefix

        server.logPrefix = counting
        client.setblocking(False)
        received: list[bytes] = []

        def echoed() -> bool:
            try:
                received.append(client.recv(10))
            except BlockingIOError:
                return False
            return True

        for i in range(5):
            client.sendall(b"%d" % (i,))
            self.iterate(echoed)
        self.assertEqual(received, [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(prefixes, [logPrefix()])

    def test_runLogsWithPrefix(self) -> None:
        """
        Under C{reactor.run}, an exception raised by a protocol callback is
        logged with that connection's log prefix, and the connection's
        prefix is read once for all its events (three echoes, then the
        failing read).
        """
        client, port = self.connect(_EchoThenBoom)
        server = self.server()
        prefix = server.logPrefix()
        calls: list[str] = []

        def counting() -> str:
            calls.append(prefix)
            return prefix

        server.logPrefix = counting
        client.setblocking(False)
        script = [b"a", b"b", b"c", b"!"]
        echoes: list[bytes] = []
        rounds = [int(PATIENCE / 0.01)]

        def step() -> None:
            # The client's side, from the reactor's own timed calls: send
            # the next message once the last one came back; stop once the
            # failure is logged, or after PATIENCE at most.
            if rounds[0] <= 0 or any(e.get("failure") for e in self.events):
                self.reactor.stop()
                return
            rounds[0] -= 1
            with contextlib.suppress(BlockingIOError):
                echoes.append(client.recv(10))
            if script and len(echoes) == 4 - len(script):
                client.sendall(script.pop(0))
            self.reactor.callLater(0.01, step)

        self.reactor.callWhenRunning(step)
        _runInThread(lambda: self.reactor.run(installSignalHandlers=False))
        self.assertEqual(echoes, [b"a", b"b", b"c"])
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertEqual(failure["system"], prefix)
        self.assertIsInstance(failure["failure"].value, ZeroDivisionError)
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(calls, [prefix])

    def test_contextsBounded(self) -> None:
        """
        The reactor keeps the contexts of at most twice
        C{contextCacheSize} selectables; a connection whose context was
        dropped gets it built again, with its own prefix, at its next event.
        """
        self.reactor.contextCacheSize = 2
        clients = []
        servers = []
        port = self.reactor.listenTCP(
            0, Factory.forProtocol(_EchoThenBoom), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)

        def accepted() -> list[Any]:
            return [
                s
                for s in self.reactor._selectables.values()
                if isinstance(s, tcp.Server) and s not in servers
            ]

        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", port.getHost().port))
            self.addCleanup(client.close)
            self.iterate(lambda: bool(accepted()))
            [server] = accepted()
            clients.append(client)
            servers.append(server)
            client.setblocking(False)
        reads: dict[Any, int] = {}

        def counting(server: Any) -> Any:
            logPrefix = server.logPrefix

            def count() -> str:
                reads[server] = reads.get(server, 0) + 1
                prefix: str = logPrefix()
                return prefix

            return count

        for server in servers:
            server.logPrefix = counting(server)
        for _round in range(2):
            for client in clients:
                received: list[bytes] = []

                def echoed(
                    client: socket.socket = client, received: list[bytes] = received
                ) -> bool:
                    with contextlib.suppress(BlockingIOError):
                        received.append(client.recv(10))
                    return bool(received)

                client.sendall(b"x")
                self.iterate(echoed)
                self.assertEqual(received, [b"x"])
                cached = len(self.reactor._logContexts) + len(
                    self.reactor._olderLogContexts
                )
                self.assertLessEqual(cached, 4)
        # Five connections taking turns through four places: contexts were
        # dropped and built again.
        self.assertGreater(sum(reads.values()), 5)
        first = servers[0]
        clients[0].sendall(b"!")
        self.iterate(lambda: any(e.get("failure") for e in self.events))
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertEqual(failure["system"], first.logstr)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_doIterationIsTheOverride(self) -> None:
        """
        Twisted's epoll reactor binds C{doIteration} to its own C{doPoll} in
        its class body (so an override of C{doPoll} alone would never run);
        the netdemo reactor binds it to its override.
        """
        self.assertIs(EPollReactor.doIteration, EPollReactor.doPoll)
        self.assertIs(
            LogContextCachingEPollReactor.doIteration,
            LogContextCachingEPollReactor.doPoll,
        )

    def test_nestedContextFallsBack(self) -> None:
        """
        Under a context pushed around the reactor, events are dispatched the
        way Twisted does (the cached contexts would lack what was pushed).
        """
        client, port = self.connect(_Boom)
        server = self.server()
        fd = server.fileno()

        def work() -> None:
            for _ in range(200):
                if any(e.get("failure") for e in self.events):
                    return
                self.reactor.iterate(0.05)

        client.sendall(b"x")
        _runInThread(lambda: context.call({"extra": "pushed"}, work))
        self.assertNotIn(fd, self.reactor._logContexts)
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertEqual(failure["system"], server.logPrefix())
        self.flushLoggedErrors(ZeroDivisionError)


@implementer(IReadDescriptor)
class _Reader:
    """
    A selectable reading one end of a socket pair, as the test tells it to:
    C{doRead} reads, then raises C{raises} if given, else returns
    C{returns} (C{CONNECTION_DONE} once the other end closed); C{fileno}
    says -1 once C{gone}.
    """

    def __init__(
        self,
        sock: socket.socket,
        returns: Any = None,
        raises: BaseException | None = None,
    ) -> None:
        self.sock = sock
        self.returns = returns
        self.raises = raises
        self.gone = False
        self.reads = 0
        self.lost: list[Failure] = []
        self.readLost: list[Failure] = []

    def fileno(self) -> int:
        return -1 if self.gone else self.sock.fileno()

    def logPrefix(self) -> str:
        return "the-reader"

    def doRead(self) -> Any:
        self.reads += 1
        if not self.sock.recv(100):
            return CONNECTION_DONE
        if self.raises is not None:
            raise self.raises
        return self.returns

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


@implementer(IHalfCloseableDescriptor)
class _HalfCloseableReader(_Reader):
    """
    A L{_Reader} that a read-side close leaves open.
    """

    def readConnectionLost(self, reason: Failure) -> None:
        self.readLost.append(reason)

    def writeConnectionLost(self, reason: Failure) -> None:
        """
        Not called: the reader never writes.
        """


class TwistedReadEventTests(SynchronousTestCase):
    """
    How Twisted's epoll reactor handles a readable descriptor; the netdemo
    reactor, which handles a readable-only event without
    C{_doReadOrWrite}, must do the same (L{NetdemoReadEventTests}).
    """

    reactorType: type[EPollReactor] = EPollReactor

    def setUp(self) -> None:
        self.reactor = self.reactorType()
        self.addCleanup(self.reactor.removeAll)
        self.events = captureEvents(self)

    def reader(self, kind: type[_Reader], **outcome: Any) -> tuple[Any, Any]:
        """
        A reader on one end of a socket pair, watched by the reactor, and
        the other end.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        reader = kind(ours, **outcome)
        self.reactor.addReader(reader)
        # Before the sockets close: the reactor unregisters their numbers.
        self.addCleanup(self.reactor.removeAll)
        return reader, theirs

    def turn(self, done: Any) -> None:
        """
        Turn the reactor under test at the bottom of a fresh context stack
        (a thread of its own) until C{done()}, 200 turns of 50 ms at most.
        """

        def work() -> None:
            for _ in range(200):
                if done():
                    return
                self.reactor.iterate(0.05)
            raise AssertionError("the reactor under test did not get there")

        _runInThread(work)

    def test_readStaysWatched(self) -> None:
        """
        A read that returns nothing keeps the descriptor watched, and logs
        nothing.
        """
        reader, theirs = self.reader(_Reader)
        theirs.sendall(b"x")
        self.turn(lambda: reader.reads == 1)
        self.assertIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.lost, [])
        self.assertEqual([e for e in self.events if e.get("failure")], [])

    def test_errorLoggedWithPrefix(self) -> None:
        """
        An exception from C{doRead} is logged with the selectable's log
        prefix, and the selectable is disconnected with it.
        """
        reader, theirs = self.reader(_Reader, raises=ZeroDivisionError("in doRead"))
        theirs.sendall(b"x")
        self.turn(lambda: bool(reader.lost))
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertEqual(failure["system"], "the-reader")
        self.assertIsInstance(failure["failure"].value, ZeroDivisionError)
        [reason] = reader.lost
        self.assertIsInstance(reason.value, ZeroDivisionError)
        self.assertNotIn(reader, self.reactor.getReaders())
        self.flushLoggedErrors(ZeroDivisionError)

    def test_doneIsReadSideClose(self) -> None:
        """
        C{CONNECTION_DONE} returned by C{doRead} is a read-side close for a
        half-closeable selectable (C{readConnectionLost}).
        """
        reader, theirs = self.reader(_HalfCloseableReader, returns=CONNECTION_DONE)
        theirs.sendall(b"x")
        self.turn(lambda: bool(reader.readLost))
        self.assertIsInstance(reader.readLost[0].value, ConnectionDone)
        self.assertEqual(reader.lost, [])

    def test_raisedDoneIsNotReadSideClose(self) -> None:
        """
        C{ConnectionDone} raised (not returned) by C{doRead} is an error:
        logged, and the whole connection is lost even for a half-closeable
        selectable.
        """
        reader, theirs = self.reader(_HalfCloseableReader, raises=ConnectionDone())
        theirs.sendall(b"x")
        self.turn(lambda: bool(reader.lost))
        self.assertEqual(reader.readLost, [])
        self.assertIsInstance(reader.lost[0].value, ConnectionDone)
        [failure] = [e for e in self.events if e.get("failure")]
        self.assertEqual(failure["system"], "the-reader")
        self.flushLoggedErrors(ConnectionDone)

    def test_descriptorGone(self) -> None:
        """
        A selectable whose C{fileno} says -1 when its event comes is not
        read: it is disconnected (C{ConnectionFdescWentAway}).
        """
        reader, theirs = self.reader(_Reader)
        reader.gone = True
        theirs.sendall(b"x")
        self.turn(lambda: bool(reader.lost))
        self.assertEqual(reader.reads, 0)
        self.assertIsInstance(reader.lost[0].value, ConnectionFdescWentAway)


class NetdemoReadEventTests(TwistedReadEventTests):
    """
    L{TwistedReadEventTests} on the netdemo reactor.
    """

    reactorType = LogContextCachingEPollReactor

    def test_readableInline(self) -> None:
        """
        A readable-only event is handled without C{_doReadOrWrite}; a
        hang-up goes through it.
        """
        reader, theirs = self.reader(_HalfCloseableReader)
        calls: list[int] = []
        dispatch = self.reactor._doReadOrWrite

        def counting(selectable: Any, fd: int, event: int) -> None:
            calls.append(event)
            dispatch(selectable, fd, event)

        self.reactor._doReadOrWrite = counting  # type: ignore[method-assign]
        theirs.sendall(b"x")
        self.turn(lambda: reader.reads == 1)
        self.assertEqual(calls, [])
        theirs.close()
        self.turn(lambda: bool(reader.readLost))
        self.assertEqual(len(calls), 1)
        self.assertTrue(calls[0] & select.EPOLLHUP)


class InstallTests(SynchronousTestCase):
    """
    The reactor is a Twisted reactor plugin.
    """

    def test_listed(self) -> None:
        """
        C{twistd --help-reactors} lists C{netdemo}.
        """
        listing = subprocess.run(
            [twistdPath(), "--help-reactors"],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=True,
        )
        [line] = [
            line
            for line in listing.stdout.splitlines()
            if line.split()[:1] == ["netdemo"]
        ]
        self.assertIn("epoll", line)

    def test_daemon(self) -> None:
        """
        C{twistd --reactor=netdemo netdemo} runs the services on it.
        """
        with Daemon(
            "--tcp", "tcp:0:interface=127.0.0.1", twistdArgs=["--reactor=netdemo"]
        ) as daemon:
            daemon.waitListening(1)
            self.assertIn("LogContextCachingEPollReactor", daemon.log())
            with socket.create_connection(daemon.address("tcp-echo")) as s:
                s.settimeout(PATIENCE)
                s.sendall(b"hello")
                self.assertEqual(s.recv(5), b"hello")
