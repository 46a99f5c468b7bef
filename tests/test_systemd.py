"""
Tests for L{netdemo.systemd}: C{sd_notify}, readiness, the watchdog, and
socket activation, against sockets the tests create and against real
C{twistd} and C{systemd-socket-activate} processes.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.metrics import MemoryMetrics
from netdemo.stream import ListeningService
from netdemo.systemd import (
    Notifier,
    NotifyService,
    adoptDatagramPort,
    inheritedDescriptor,
)

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: How long a subprocess test waits for one step, at most.
STEP = 30.0


def _receiver(testCase: SynchronousTestCase, abstract: bool = False) -> Any:
    """
    A notify socket like systemd's: C{AF_UNIX}/C{SOCK_DGRAM}, closed after
    the test.  Returns C{(socket, NOTIFY_SOCKET value)}.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    testCase.addCleanup(sock.close)
    if abstract:
        name = f"netdemo-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        return sock, "@" + name
    directory = tempfile.mkdtemp()
    testCase.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "notify")
    sock.bind(path)
    return sock, path


def _receive(sock: socket.socket, timeout: float = STEP) -> bytes:
    """
    One datagram, or fail after C{timeout} seconds.
    """
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise AssertionError(f"no notification within {timeout} s")
    return sock.recv(4096)


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
        sock, address = _receiver(self)
        notifier = Notifier.fromEnvironment({"NOTIFY_SOCKET": address})
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.notify(ready="1", status="two\nlines"))
        self.assertEqual(_receive(sock), b"READY=1\nSTATUS=two lines\n")

    def test_abstract(self) -> None:
        """
        An address starting with C{@} is in the abstract namespace.
        """
        sock, address = _receiver(self, abstract=True)
        notifier = Notifier(address)
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.notify(watchdog="1"))
        self.assertEqual(_receive(sock), b"WATCHDOG=1\n")

    def test_failureLogged(self) -> None:
        """
        A notify socket that is gone is logged, not raised.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
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


class StoppablePort:
    """
    The least of a listening port: stopping it works.
    """

    def stopListening(self) -> None:
        """
        Nothing to close.
        """

    def getHost(self) -> IPv4Address:
        """
        Where it pretends to listen.
        """
        return IPv4Address("TCP", "127.0.0.1", 8007)


class PendingEndpoint:
    """
    A server endpoint whose C{listen} waits for the test.
    """

    def __init__(self) -> None:
        self.listening: Deferred[Any] = Deferred()

    def listen(self, factory: Any) -> Deferred[Any]:
        return self.listening


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
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
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

    @inlineCallbacks
    def test_adopt(self) -> Iterator[Deferred[Any]]:
        """
        A blocking UDP socket is made non-blocking and served.
        """
        inherited = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(inherited.close)
        inherited.bind(("127.0.0.1", 0))
        inherited.setblocking(True)
        port = adoptDatagramPort(reactor, inherited.fileno(), Echo())
        self.addCleanup(port.stopListening)
        self.assertFalse(os.get_blocking(inherited.fileno()))
        self.assertEqual(port.getHost().port, inherited.getsockname()[1])
        client = Catch()
        clientPort = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(clientPort.stopListening)
        clientPort.write(b"ping", inherited.getsockname())
        data = yield client.received
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


def _freePort(kind: int = socket.SOCK_STREAM) -> int:
    """
    A port number on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Daemon:
    """
    A C{twistd} (or other) subprocess whose standard output is read line
    by line with a deadline.
    """

    def __init__(self, testCase: SynchronousTestCase, argv: list[str], **kw: Any):
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **kw,
        )
        self.lines: list[bytes] = []
        self._buffer = b""
        testCase.addCleanup(self.stop)

    def readLine(self, timeout: float = STEP) -> bytes:
        """
        The next line of output, or fail.
        """
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no output line within {timeout} s: {self.lines}")
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"process ended; output: {self.lines}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line)
        return line

    def waitFor(self, predicate: Any, timeout: float = STEP) -> Any:
        """
        Read JSON log lines until C{predicate(record)} holds; return that
        record.  Every line must be one JSON object.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such log line within {timeout} s")
            line = self.readLine(left)
            record = json.loads(line)
            if predicate(record):
                return record

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after a while.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STEP)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _listening(record: dict[str, Any]) -> bool:
    return record.get("event") == "listening"


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
        sock, address = _receiver(self)
        environ = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="400000")
        environ.pop("WATCHDOG_PID", None)
        daemon = Daemon(
            self,
            [
                TWISTD,
                "--nodaemon",
                "--pidfile=",
                "--logger=netdemo.logs.jsonObserver",
                "netdemo",
                "--tcp=tcp:0:interface=127.0.0.1",
                "--http=tcp:0:interface=127.0.0.1",
            ],
            env=environ,
        )
        addresses = {}
        for _ in range(2):
            record = daemon.waitFor(_listening)
            addresses[record["service"]] = record["address"]
        messages = []
        deadline = time.monotonic() + STEP
        while not any(m.startswith(b"READY=1") for m in messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no READY=1 within {STEP} s: {messages}")
            messages.append(_receive(sock, left))
        ready = [m for m in messages if m.startswith(b"READY=1")][0]
        self.assertEqual(
            ready.decode("utf-8"),
            "READY=1\nSTATUS=Listening: "
            f"http on {addresses['http']}; tcp-echo on {addresses['tcp-echo']}\n"
            f"MAINPID={daemon.process.pid}\n",
        )
        # The watchdog goes on (every 0.2 s); three more are plenty.
        watchdogs = 0
        for _ in range(20):
            if _receive(sock) == b"WATCHDOG=1\n":
                watchdogs += 1
                if watchdogs == 3:
                    break
        self.assertEqual(watchdogs, 3)
        daemon.process.send_signal(signal.SIGTERM)
        for _ in range(20):
            message = _receive(sock)
            if message != b"WATCHDOG=1\n":
                break
        self.assertEqual(message, b"STOPPING=1\nSTATUS=Stopping\n")
        self.assertEqual(daemon.process.wait(STEP), -signal.SIGTERM)
        # The rest of the log (until the end of the output) is JSON too.
        for _ in range(10000):
            try:
                json.loads(daemon.readLine(STEP))
            except AssertionError:
                break


class SocketActivationTests(SynchronousTestCase):
    """
    Socket activation with C{systemd-socket-activate}: the descriptor is
    found by name and the first connection or datagram is served.
    """

    def setUp(self) -> None:
        self.activate = shutil.which("systemd-socket-activate")
        if self.activate is None:
            self.skipTest("systemd-socket-activate not installed (package systemd)")

    def test_stream(self) -> None:
        """
        C{--tcp systemd:domain=INET:name=echo} adopts the listening socket
        and echoes on the connection that started the daemon.
        """
        port = _freePort()
        daemon = Daemon(
            self,
            [
                self.activate,
                f"--listen=127.0.0.1:{port}",
                "--fdname=echo",
                TWISTD,
                "--nodaemon",
                "--pidfile=",
                "netdemo",
                "--tcp=systemd:domain=INET:name=echo",
                "--http=tcp:0:interface=127.0.0.1",
            ],
        )
        self.assertIn(b"Listening on", daemon.readLine())
        with socket.create_connection(("127.0.0.1", port), timeout=STEP) as client:
            client.sendall(b"first connection\n")
            received = b""
            while len(received) < len(b"first connection\n"):
                chunk = client.recv(4096)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(received, b"first connection\n")
        while b"tcp-echo: listening on" not in daemon.lines[-1]:
            daemon.readLine()
        self.assertIn(f"127.0.0.1:{port}".encode(), daemon.lines[-1])

    def test_datagram(self) -> None:
        """
        L{inheritedDescriptor} and L{adoptDatagramPort} serve the datagram
        socket of C{systemd-socket-activate --datagram}, including the
        datagram that started the process, after
        C{twisted.internet.endpoints} consumed C{LISTEN_FDS}.
        """
        port = _freePort(socket.SOCK_DGRAM)
        script = (
            "import twisted.internet.endpoints\n"
            "from twisted.internet import reactor\n"
            "from twisted.internet.protocol import DatagramProtocol\n"
            "from netdemo.systemd import adoptDatagramPort, inheritedDescriptor\n"
            "class Echo(DatagramProtocol):\n"
            "    def datagramReceived(self, data, addr):\n"
            "        self.transport.write(data, addr)\n"
            "adoptDatagramPort(reactor, inheritedDescriptor('udp'), Echo())\n"
            "print('adopted', flush=True)\n"
            "reactor.run()\n"
        )
        daemon = Daemon(
            self,
            [
                self.activate,
                "--datagram",
                f"--listen=127.0.0.1:{port}",
                "--fdname=udp",
                sys.executable,
                "-c",
                script,
            ],
        )
        self.assertIn(b"Listening on", daemon.readLine())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(STEP)
            client.sendto(b"first datagram", ("127.0.0.1", port))
            data, peer = client.recvfrom(4096)
        self.assertEqual((data, peer), (b"first datagram", ("127.0.0.1", port)))
