"""
Tests for L{netdemo.systemd}: C{sd_notify}, readiness, the watchdog, and
socket activation, against sockets the tests create and against real
C{twistd} and C{systemd-socket-activate} processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.logs import formatAddress
from netdemo.metrics import MemoryMetrics
from netdemo.stream import ListeningService
from netdemo.systemd import (
    Notifier,
    NotifyService,
    adoptDatagramPort,
    inheritedDescriptor,
)
from tests.support import (
    PATIENCE,
    Daemon,
    captureEvents,
    notifySocket,
    receiveDatagram,
    requireTool,
    socketActivation,
)
from tests.test_listening import PendingEndpoint, StoppablePort

#: Notifications a test reads before it gives up on one it waits for.
MESSAGES = 20


class NotifierTests(SynchronousTestCase):
    """
    L{Notifier} speaks the C{sd_notify} datagram protocol.
    """

    def test_silentWithoutSocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET} nothing is sent and no socket is opened.
        """
        notifier = Notifier.fromEnvironment({})
        self.assertFalse(notifier.notify(ready="1"))
        self.assertIsNone(notifier._socket)

    def test_path(self) -> None:
        """
        A path address gets one datagram of C{KEY=value} lines; a newline in
        a value cannot start a new field.
        """
        sock, address = notifySocket(self)
        notifier = Notifier.fromEnvironment({"NOTIFY_SOCKET": address})
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.notify(ready="1", status="two\nlines"))
        self.assertEqual(receiveDatagram(sock), b"READY=1\nSTATUS=two lines\n")

    def test_abstract(self) -> None:
        """
        An address starting with C{@} is in the abstract namespace.
        """
        sock, address = notifySocket(self, abstract=True)
        notifier = Notifier(address)
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.notify(watchdog="1"))
        self.assertEqual(receiveDatagram(sock), b"WATCHDOG=1\n")

    def test_failureLogged(self) -> None:
        """
        A notify socket that is gone is logged, not raised.
        """
        events = captureEvents(self)
        notifier = Notifier("/nonexistent/netdemo/notify")
        self.addCleanup(notifier.close)
        self.assertFalse(notifier.notify(ready="1"))
        self.assertEqual([e["event"] for e in events], ["notify_failed"])


class RecordingNotifier:
    """
    A L{Notifier} stand-in that records what it would send.
    """

    address = "@recording"

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def notify(self, **fields: str) -> bool:
        self.sent.append(fields)
        return True


class NotifyServiceTests(SynchronousTestCase):
    """
    L{NotifyService} sends READY, STATUS, WATCHDOG and STOPPING.
    """

    def build(
        self, environ: dict[str, str] | None = None
    ) -> tuple[MultiService, NotifyService, RecordingNotifier, PendingEndpoint, Clock]:
        """
        A top service with one pending listener and a L{NotifyService} last.
        """
        top = MultiService()
        endpoint = PendingEndpoint()
        listening = ListeningService("test", Factory(), [], MemoryMetrics(), Clock())
        listening.addEndpoint(endpoint, "pending")  # type: ignore[arg-type]
        listening.setServiceParent(top)
        notifier = RecordingNotifier()
        clock = Clock()
        service = NotifyService(
            notifier,  # type: ignore[arg-type]
            lambda: "Listening: test",
            clock,
            environ or {},
        )
        service.setServiceParent(top)
        return top, service, notifier, endpoint, clock

    def test_readyOnceListening(self) -> None:
        """
        READY=1 waits until the sibling listeners are bound, and carries
        the STATUS summary and the main PID.
        """
        top, service, notifier, endpoint, clock = self.build()
        top.startService()
        self.assertEqual(notifier.sent, [])
        endpoint.listening.callback(StoppablePort())
        self.assertEqual(
            notifier.sent,
            [{"ready": "1", "status": "Listening: test", "mainpid": str(os.getpid())}],
        )

    def test_notReadyOnFailure(self) -> None:
        """
        A listener that fails to bind means no READY=1: systemd then times
        the start out instead of believing a daemon that does not listen.
        """
        top, service, notifier, endpoint, clock = self.build()
        events = captureEvents(self)
        top.startService()
        endpoint.listening.errback(OSError("address in use"))
        self.flushLoggedErrors(OSError)
        self.assertEqual(notifier.sent, [])
        self.assertIn("not_ready", [e.get("event") for e in events])

    def test_stopping(self) -> None:
        """
        Stopping sends STOPPING=1 first.
        """
        top, service, notifier, endpoint, clock = self.build()
        top.startService()
        endpoint.listening.callback(StoppablePort())
        del notifier.sent[:]
        top.stopService()
        self.assertEqual(notifier.sent, [{"stopping": "1", "status": "Stopping"}])

    def test_watchdog(self) -> None:
        """
        With C{WATCHDOG_USEC}, WATCHDOG=1 is sent at once and then every
        half period, until the service stops.
        """
        top, service, notifier, endpoint, clock = self.build(
            {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
        )
        self.assertEqual(service.watchdogInterval(), 1.5)
        top.startService()
        clock.advance(1.5)
        clock.advance(1.5)
        self.assertEqual(notifier.sent, [{"watchdog": "1"}] * 3)
        top.stopService()
        clock.advance(10)
        self.assertEqual(notifier.sent[3:], [{"stopping": "1", "status": "Stopping"}])

    def test_watchdogOtherProcess(self) -> None:
        """
        C{WATCHDOG_PID} naming another process, a bad or missing
        C{WATCHDOG_USEC}: no watchdog.
        """
        for environ in [
            {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"},
            {"WATCHDOG_USEC": "soon"},
            {"WATCHDOG_USEC": "0"},
            {},
        ]:
            top, service, notifier, endpoint, clock = self.build(environ)
            self.assertIsNone(service.watchdogInterval())
            top.startService()
            clock.advance(100)
            self.assertEqual(notifier.sent, [])
            top.stopService()


class InheritedDescriptorTests(SynchronousTestCase):
    """
    L{inheritedDescriptor} finds sockets by C{FileDescriptorName=}.
    """

    def test_byName(self) -> None:
        """
        The n-th name is descriptor C{start + n}.
        """
        environ = {
            "LISTEN_PID": str(os.getpid()),
            "LISTEN_FDS": "3",
            "LISTEN_FDNAMES": "echo:udp:http",
        }
        self.assertEqual(inheritedDescriptor("udp", environ, start=3), 4)
        self.assertEqual(inheritedDescriptor("http", environ, start=3), 5)

    def test_missing(self) -> None:
        """
        An unknown name raises L{KeyError} naming the names passed.
        """
        environ = {
            "LISTEN_PID": str(os.getpid()),
            "LISTEN_FDS": "1",
            "LISTEN_FDNAMES": "echo",
        }
        e = self.assertRaises(KeyError, inheritedDescriptor, "udp", environ)
        self.assertIn("names passed: echo", str(e))

    def test_otherProcess(self) -> None:
        """
        Descriptors passed to another process (C{LISTEN_PID}) are not ours.
        """
        environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "udp"}
        self.assertRaises(KeyError, inheritedDescriptor, "udp", environ)


class Echo(DatagramProtocol):
    """
    Send every datagram back.
    """

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)  # type: ignore[union-attr]


class Catch(DatagramProtocol):
    """
    Fire C{received} with the first datagram.
    """

    def __init__(self) -> None:
        self.received: Deferred[bytes] = Deferred()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if not self.received.called:
            self.received.callback(data)


class AdoptDatagramPortTests(TestCase):
    """
    L{adoptDatagramPort} serves an already bound datagram socket.
    """

    async def test_adopt(self) -> None:
        """
        A blocking UDP socket is made non-blocking and served.
        """
        inherited = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(inherited.close)
        inherited.bind(("127.0.0.1", 0))
        inherited.setblocking(True)
        bound = inherited.getsockname()
        port = adoptDatagramPort(reactor, inherited.fileno(), Echo())
        self.addCleanup(port.stopListening)
        self.assertFalse(os.get_blocking(inherited.fileno()))
        self.assertEqual(formatAddress(port.getHost()), f"127.0.0.1:{bound[1]}")
        client = Catch()
        clientPort = IReactorUDP(reactor).listenUDP(0, client, "127.0.0.1", 8192)
        self.addCleanup(clientPort.stopListening)
        assert client.transport is not None
        client.transport.write(b"ping", bound)
        data = await client.received
        self.assertEqual(data, b"ping")

    def test_stream(self) -> None:
        """
        A stream socket is refused.
        """
        stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(stream.close)
        self.assertRaises(
            ValueError, adoptDatagramPort, reactor, stream.fileno(), Echo()
        )


class TwistdNotifyTests(SynchronousTestCase):
    """
    The real daemon, run the way systemd runs it with C{Type=notify}.
    """

    def test_notify(self) -> None:
        """
        C{twistd netdemo} sends WATCHDOG=1 repeatedly, READY=1 with a STATUS
        naming the addresses it logged as listening, and STOPPING=1 on
        SIGTERM; its log is JSON lines.
        """
        sock, address = notifySocket(self)
        daemon = Daemon(
            "--tcp=tcp:0:interface=127.0.0.1",
            "--http=tcp:0:interface=127.0.0.1",
            twistdArgs=["--logger=netdemo.logs.jsonObserver"],
            # An empty WATCHDOG_PID names no other process: this one is
            # watched, whatever the tests' environment says.
            env={
                "NOTIFY_SOCKET": address,
                "WATCHDOG_USEC": "400000",
                "WATCHDOG_PID": "",
            },
        )
        self.addCleanup(daemon.close)
        for _ in range(MESSAGES):
            ready = receiveDatagram(sock)
            if ready.startswith(b"READY=1"):
                break
        daemon.waitListening(2)
        self.assertEqual(
            ready.decode("utf-8"),
            "READY=1\nSTATUS=Listening: "
            f"http on {daemon.addresses('http')[0]}; "
            f"tcp-echo on {daemon.addresses('tcp-echo')[0]}\n"
            f"MAINPID={daemon.process.pid}\n",
        )
        # The watchdog goes on (every 0.2 s).
        self.assertEqual(
            [receiveDatagram(sock) for _ in range(3)], [b"WATCHDOG=1\n"] * 3
        )
        daemon.process.send_signal(signal.SIGTERM)
        for _ in range(MESSAGES):
            message = receiveDatagram(sock)
            if message != b"WATCHDOG=1\n":
                break
        self.assertEqual(message, b"STOPPING=1\nSTATUS=Stopping\n")
        self.assertEqual(daemon.process.wait(PATIENCE), -signal.SIGTERM)
        # Every line it logged is JSON.
        for line in daemon.log().splitlines():
            self.assertIsInstance(json.loads(line), dict)


class SocketActivationTests(SynchronousTestCase):
    """
    Socket activation with C{systemd-socket-activate}, which takes over a
    socket the test bound: the descriptor is found by name, and the first
    connection or datagram, which started the daemon, is served.
    """

    def setUp(self) -> None:
        self.activate = requireTool("systemd-socket-activate", "systemd")

    def daemon(self, sock: socket.socket, name: str, *args: str) -> Daemon:
        """
        C{twistd netdemo ARGS} under C{systemd-socket-activate}, which is
        handed C{sock} as C{name} and waits for its first client.
        """
        self.addCleanup(sock.close)
        kind = ["--datagram"] if sock.type == socket.SOCK_DGRAM else []
        daemon = Daemon(
            *args,
            **socketActivation(
                {name: sock}, [self.activate, *kind, f"--fdname={name}"]
            ),
        )
        self.addCleanup(daemon.close)
        daemon.waitFor("Listening on")
        return daemon

    def test_stream(self) -> None:
        """
        C{--tcp systemd:domain=INET:name=echo} adopts the listening socket
        and echoes on the connection that started the daemon.
        """
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        address = sock.getsockname()
        daemon = self.daemon(
            sock,
            "echo",
            "--tcp=systemd:domain=INET:name=echo",
            "--http=tcp:0:interface=127.0.0.1",
        )
        with socket.create_connection(address, timeout=PATIENCE) as client:
            client.sendall(b"first connection\n")
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(client.makefile("rb").read(), b"first connection\n")
        daemon.waitListening(2)
        self.assertEqual(daemon.addresses("tcp-echo"), [f"127.0.0.1:{address[1]}"])

    def test_datagram(self) -> None:
        """
        C{--udp systemd:udp} finds the datagram socket of
        C{systemd-socket-activate --datagram} by name once
        C{twisted.internet.endpoints} consumed C{LISTEN_FDS}
        (L{inheritedDescriptor}), adopts it (L{adoptDatagramPort}, which
        makes the blocking socket non-blocking), and answers the datagram
        that started the process.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
        daemon = self.daemon(sock, "udp", "--udp", "systemd:udp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(PATIENCE)
            client.sendto(b"first datagram", address)
            data, peer = client.recvfrom(4096)
        self.assertEqual((data, peer), (b"first datagram", address))
        daemon.waitListening(1)
        self.assertEqual(daemon.listening, [("udp-echo", f"127.0.0.1:{address[1]}")])
        # The adopted socket is non-blocking: SIGTERM stops the reactor.
        daemon.stop()
        self.assertEqual(daemon.returncode, -signal.SIGTERM)
