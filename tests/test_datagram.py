"""
Tests for L{netdemo.datagram}, the plumbing shared by the datagram
services: the base service (listen, report, fail, stop), the connected
socket of the probers (C{--udp-peer} and C{netdemo ping udp}) and what it
does with ICMP errors, judging silence after reading, and the module
boundaries of the datagram services.
"""

from __future__ import annotations

import ast
import errno
import io
import re
import signal
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import netdemo
from netdemo.cli import parseCommandLine
from netdemo.clients.common import Console
from netdemo.clients.ping import runPing
from netdemo.datagram import (
    MAX_PACKET_SIZE,
    AfterReading,
    DatagramService,
    ListenAddress,
    listenConnected,
)
from netdemo.internals import RefusalTolerantPort
from netdemo.limits import DatagramLimits
from netdemo.metrics import MemoryMetrics
from netdemo.udpecho import buildUDPEchoService
from netdemo.udppeer import PeerTarget, UDPPeerProber
from tests.datagramhelpers import FakeDatagramReactor
from tests.support import captureEvents, waitUntil


class _Keep(DatagramProtocol):
    """
    Keeps what arrives, and what it is told about.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.refused = 0
        self.failed: list[int] = []
        self.stopped = False

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)

    def connectionRefused(self) -> None:
        self.refused += 1

    def connectionFailed(self, error: int) -> None:
        self.failed.append(error)

    def stopProtocol(self) -> None:
        self.stopped = True


class _TwoSockets(DatagramService):
    """
    A service of two sockets on a fake reactor; the second may fail.
    """

    def __init__(self, metrics: MemoryMetrics, fail: bool = False) -> None:
        super().__init__("two", FakeDatagramReactor(), metrics)
        self.fail = fail
        self.goodbyes: list[int] = []

    def listenAll(self) -> None:
        for number in (1001, 1002):
            if self.fail and number == 1002:
                raise CannotListenError("", number, OSError(98, "in use"))
            proto = _Keep()
            port = self.reactor.listenUDP(number, proto, "192.0.2.1")
            self.listened(port, proto, f"group:{number}", f"option {number}")

    def stopping(self) -> None:
        self.goodbyes.append(len(self.ports))


class BaseTests(SynchronousTestCase):
    """
    L{DatagramService}: one way to listen, report, fail and stop.
    """

    def test_reportedAsListened(self) -> None:
        """
        Each socket is one C{listening} event and one
        C{netdemo_listener_info} series with the address the subclass gave;
        the service is listening once started.
        """
        events = captureEvents(self)
        metrics = MemoryMetrics()
        service = _TwoSockets(metrics)
        service.startService()
        listening = [e for e in events if e.get("event") == "listening"]
        self.assertEqual(
            [(e["service"], e["address"], e["description"]) for e in listening],
            [
                ("two", "group:1001", "option 1001"),
                ("two", "group:1002", "option 1002"),
            ],
        )
        for address in ("group:1001", "group:1002"):
            self.assertEqual(
                metrics.value("netdemo_listener_info", service="two", address=address),
                1,
            )
        self.assertTrue(self.successResultOf(service.whenListening()))

    def test_stop(self) -> None:
        """
        Stopping calls L{DatagramService.stopping} while the sockets are
        still open, then closes them and sets the series to 0; a service
        that never listened says no goodbye.
        """
        metrics = MemoryMetrics()
        service = _TwoSockets(metrics)
        service.startService()
        transports = service.reactor.transports
        self.successResultOf(service.stopService())
        self.assertEqual(service.goodbyes, [2])
        self.assertTrue(all(t.stopped for t in transports))
        self.assertEqual(
            metrics.value("netdemo_listener_info", service="two", address="group:1001"),
            0,
        )
        idle = _TwoSockets(MemoryMetrics())
        self.successResultOf(idle.stopService())
        self.assertEqual(idle.goodbyes, [])

    def test_bindFailure(self) -> None:
        """
        A socket that cannot be bound ends start-up with one line naming
        it, not a traceback.
        """
        service = _TwoSockets(MemoryMetrics(), fail=True)
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        message = str(caught.exception.code)
        self.assertTrue(message.startswith("netdemo: cannot start: "), message)
        self.assertIn("1002", message)
        self.assertNotIn("\n", message)


class AfterReadingTests(TestCase):
    """
    L{AfterReading} on the real reactor.
    """

    async def test_readFirst(self) -> None:
        """
        A datagram that is waiting when a timed call runs is read before a
        call that the timed call scheduled with L{AfterReading}: the timed
        call itself does not see it yet.
        """
        proto = _Keep()
        port = reactor.listenUDP(0, proto, "127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        port.stopReading()  # so that the datagram waits
        seen: Deferred[tuple[list[bytes], list[bytes]]] = Deferred()

        def timed() -> None:
            port.startReading()
            atOnce = list(proto.received)
            later = AfterReading(reactor)
            later.call("check", lambda: seen.callback((atOnce, list(proto.received))))

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"waiting", ("127.0.0.1", port.getHost().port))
        reactor.callLater(0, timed)
        atOnce, after = await seen
        self.assertEqual((atOnce, after), ([], [b"waiting"]))


class AfterReadingClockTests(SynchronousTestCase):
    """
    L{AfterReading} on a clock.
    """

    def test_oneOfEachName(self) -> None:
        """
        While a call of one name is pending, another of that name is not
        made; other names are; cancelling cancels all.
        """
        clock = FakeDatagramReactor()
        calls: list[str] = []
        later = AfterReading(clock)
        later.call("a", calls.append, "a1")
        later.call("a", calls.append, "a2")
        later.call("b", calls.append, "b1")
        clock.advance(0)
        later.call("a", calls.append, "a3")
        later.cancel()
        clock.advance(1)
        self.assertEqual(calls, ["a1", "b1"])
        self.assertEqual(clock.getDelayedCalls(), [])


class _ErrorSocket:
    """
    A socket whose pending error (C{SO_ERROR}) is chosen by the test.
    """

    def __init__(self, real: socket.socket, pending: int) -> None:
        self.real = real
        self.pending = pending

    def getsockopt(self, level: int, option: int, *args: Any) -> Any:
        if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR):
            pending, self.pending = self.pending, 0
            return pending
        return self.real.getsockopt(level, option, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _closedPort() -> int:
    """
    A UDP port on 127.0.0.1 that this test bound and closed, so that it
    refuses (as in C{tests.test_internals}).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ConnectedTests(TestCase):
    """
    L{listenConnected}: the one connected socket of C{--udp-peer} and
    C{netdemo ping udp}, and what it does with ICMP errors.
    """

    def connected(self, proto: DatagramProtocol) -> Any:
        """
        C{proto} on a connected port of the real reactor.
        """
        port = listenConnected(reactor, proto, False)
        self.addCleanup(lambda: port.connected and port.stopListening())  # type: ignore[attr-defined]
        return port

    def test_ports(self) -> None:
        """
        On a reactor with file descriptors the port is a
        L{RefusalTolerantPort}; otherwise the reactor's own.  Both read
        whole datagrams, on the wildcard address of the family.
        """
        port = self.connected(_Keep())
        self.assertIsInstance(port, RefusalTolerantPort)
        self.assertEqual(port.maxPacketSize, MAX_PACKET_SIZE)
        fake = FakeDatagramReactor()
        listenConnected(fake, _Keep(), True)
        self.assertEqual([u[2:] for u in fake.udp], [("::", MAX_PACKET_SIZE)])

    async def test_proberRefused(self) -> None:
        """
        The peer prober counts each refusal once and goes on probing: the
        socket stays open and reads the next refusals.
        """
        target = PeerTarget("127.0.0.1", _closedPort())
        prober = UDPPeerProber(target, "127.0.0.1", 0.05, reactor)
        port = self.connected(prober)
        await waitUntil(lambda: prober.counts["refused"] >= 3, "three refusals")
        self.assertTrue(port.connected)
        self.assertLessEqual(prober.counts["refused"], prober.counts["sent"])
        self.assertIn(port, reactor.getReaders())

    def test_otherICMPErrors(self) -> None:
        """
        Other ICMP errors (host or network unreachable, ...) go to the
        protocol's C{connectionFailed} and reading goes on; a protocol
        without one (the prober) just goes on.
        """
        for proto in (
            _Keep(),
            UDPPeerProber(PeerTarget("h", 9), "127.0.0.1", 1, reactor),
        ):
            port = listenConnected(reactor, proto, False)
            self.addCleanup(port.stopListening)
            port.stopReading()  # type: ignore[attr-defined]
            port.socket = _ErrorSocket(port.socket, errno.EHOSTUNREACH)  # type: ignore[attr-defined]
            port.readConnectionLost(Failure(Exception("hang-up?")))  # type: ignore[attr-defined]
            self.assertIn(port, reactor.getReaders())
            self.assertTrue(port.connected)  # type: ignore[attr-defined]
        self.assertEqual(proto.counts["refused"], 0)  # type: ignore[union-attr]

    def test_realHangUp(self) -> None:
        """
        A hang-up with no pending error is not an ICMP report: the port
        closes, and the prober stops with its last report.
        """
        events = captureEvents(self)
        prober = UDPPeerProber(PeerTarget("h", 9), "127.0.0.1", 1, reactor)
        port = listenConnected(reactor, prober, False)
        port.socket = _ErrorSocket(port.socket, 0)  # type: ignore[attr-defined]
        port.readConnectionLost(Failure(Exception("hang-up")))  # type: ignore[attr-defined]
        self.assertFalse(port.connected)  # type: ignore[attr-defined]
        self.assertNotIn(port, reactor.getReaders())
        self.assertEqual(
            [e["event"] for e in events if e.get("event") == "peer_report"],
            ["peer_report"],
        )


class PingUDPTests(TestCase):
    """
    C{netdemo ping udp}, in this process, on L{listenConnected}'s socket.
    """

    async def ping(self, *argv: str) -> tuple[int, str]:
        """
        Run C{netdemo ping ARGV}.

        @return: The exit status and what it printed.
        """
        self.addCleanup(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
        options = parseCommandLine(["ping", *argv]).subOptions
        out = io.StringIO()
        code = await runPing(reactor, options, Console(out, io.StringIO()))
        return code, out.getvalue()

    async def test_refused(self) -> None:
        """
        Pinging a port with nothing on it reports each ICMP refusal, keeps
        going, and exits 1 (probes lost).
        """
        code, out = await self.ping(
            "udp", f"127.0.0.1:{_closedPort()}", "-c", "3", "-i", "0.05", "-W", "0.3"
        )
        self.assertEqual(code, 1, out)
        self.assertEqual(len(re.findall(r"^refused by 127\.0\.0\.1:", out, re.M)), 3)
        self.assertIn("3 probes sent, 0 received, 100% loss, 3 refused", out)

    async def test_largeProbes(self) -> None:
        """
        Probes larger than Twisted's default read size (8192 bytes) come
        back whole.
        """
        echo = buildUDPEchoService(
            [ListenAddress("127.0.0.1", 0)],
            DatagramLimits(maxDatagram=65507),
            MemoryMetrics(),
            reactor,
        )
        echo.startService()
        self.addCleanup(echo.stopService)
        port: Any = echo.ports[0]
        code, out = await self.ping(
            "udp",
            f"127.0.0.1:{port.getHost().port}",
            "-c",
            "2",
            "-i",
            "0.05",
            "-s",
            "20000",
        )
        self.assertEqual(code, 0, out)
        self.assertEqual(len(re.findall(r"^20000 bytes from ", out, re.M)), 2, out)

    def test_otherICMPError(self) -> None:
        """
        Another ICMP error is one line naming it.
        """
        from netdemo.clients.ping import _Pinger, _UDPPingProtocol

        out = io.StringIO()
        options = parseCommandLine(["ping", "udp", "127.0.0.1:9"]).subOptions
        proto = _UDPPingProtocol(("127.0.0.1", 9))
        proto.pinger = _Pinger(reactor, options, "127.0.0.1:9", print, Console(out))
        proto.connectionFailed(errno.EHOSTUNREACH)
        self.assertEqual(
            out.getvalue(), "ICMP error from 127.0.0.1:9: No route to host\n"
        )


#: The service modules: none may import another.
SERVICES = {"echo", "pubsub", "udpecho", "udppeer", "multicast", "web", "broadcast"}


class BoundaryTests(SynchronousTestCase):
    """
    Where the datagram code lives.
    """

    def imports(self, module: str) -> set[str]:
        """
        The C{netdemo} modules C{module} imports, at any depth of its code.
        """
        path = Path(netdemo.__file__).parent / f"{module}.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("netdemo."):
                    found.add(name.split(".")[1])
        return found

    def test_noServiceImportsAnother(self) -> None:
        """
        The datagram services share only the shared modules (C{datagram},
        C{guard}, C{mcastwire}, ...), never another service module; the
        shared modules import no service.
        """
        for module in ("udpecho", "udppeer", "multicast"):
            self.assertEqual(
                self.imports(module) & (SERVICES - {module}), set(), module
            )
        for module in ("datagram", "guard", "mcastwire"):
            self.assertEqual(self.imports(module) & SERVICES, set(), module)

    def test_wireWithoutTwisted(self) -> None:
        """
        The multicast wire format does no I/O: no Twisted, no netdemo.
        """
        path = Path(netdemo.__file__).parent / "mcastwire.py"
        tree = ast.parse(path.read_text())
        modules = {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        } | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        self.assertEqual(
            {m for m in modules if m.startswith(("twisted", "netdemo"))}, set()
        )
