"""
Tests for L{netdemo.proxyheader}: the PROXY protocol in front of a stream
service, in memory (every chunking, every refusal) and on a real daemon
behind Debian's C{haproxy} and C{curl --haproxy-protocol}.
"""

from __future__ import annotations

import ipaddress
import resource
import socket
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from netdemo.echo import EchoFactory
from netdemo.limits import ConnectionLimits
from netdemo.metrics import MemoryMetrics
from netdemo.proxyheader import (
    HEADER_TIMEOUT,
    MAX_HEADER,
    MAX_WAITING,
    ProxyHeaderFactory,
    wantsProxyHeader,
)
from tests.support import PATIENCE, Daemon, poll, readUntil, requireTool

PROXY = IPv4Address("TCP", "127.0.0.1", 50000)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str, port: int, family: str = "TCP4") -> bytes:
    """
    A PROXY version 1 header from C{source}:C{port}.
    """
    destination = "127.0.0.1" if family == "TCP4" else "::1"
    return f"PROXY {family} {source} {destination} {port} 8008\r\n".encode()


def v2(source: str, port: int, local: bool = False) -> bytes:
    """
    A PROXY version 2 header from C{source}:C{port} (TCP over IPv4 or IPv6
    by the address), or a C{LOCAL} one (a health check).
    """
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    ip = ipaddress.ip_address(source)
    if ip.version == 4:
        family = 0x11
        addresses = ip.packed + ipaddress.ip_address("127.0.0.1").packed
    else:
        family = 0x21
        addresses = ip.packed + ipaddress.ip_address("::1").packed
    body = addresses + struct.pack("!HH", port, 8008)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


class Recorder(Protocol):
    """
    Records the address it was built for and the bytes it receives.
    """

    def __init__(self, addr: Any) -> None:
        self.addr = addr
        self.received = b""
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class RecordingFactory(Factory):
    """
    Builds L{Recorder}s (or refuses, when told to); records refusals.
    """

    def __init__(self, refuseAll: bool = False) -> None:
        self.built: list[Recorder] = []
        self.refusals: list[tuple[str, Any]] = []
        self.refuseAll = refuseAll

    def buildProtocol(self, addr: Any) -> Recorder | None:
        if self.refuseAll:
            return None
        p = Recorder(addr)
        self.built.append(p)
        return p

    def refuse(self, reason: str, peer: Any) -> None:
        self.refusals.append((reason, peer))


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """
    C{data} cut into chunks of the given sizes (cycled), down to one byte.
    """
    chunks = []
    i = 0
    k = 0
    while i < len(data):
        size = sizes[k % len(sizes)]
        chunks.append(data[i : i + size])
        i += size
        k += 1
    return chunks


class HeaderTests(SynchronousTestCase):
    """
    The header is read in any chunking; the service's protocol is built for
    the address it gives and gets every byte after it.
    """

    def connect(
        self, service: Any | None = None, **kwargs: Any
    ) -> tuple[Any, StringTransport, Any, Clock]:
        clock = Clock()
        service = service if service is not None else RecordingFactory()
        factory = ProxyHeaderFactory(service, service, clock, **kwargs)
        p: Any = factory.buildProtocol(PROXY)
        transport = StringTransport(peerAddress=PROXY)
        p.makeConnection(transport)
        return p, transport, service, clock

    @given(
        header=st.sampled_from(
            [
                (v1("203.0.113.9", 4711), IPv4Address("TCP", "203.0.113.9", 4711)),
                (
                    v1("2001:db8::7", 4711, "TCP6"),
                    IPv6Address("TCP", "2001:db8::7", 4711),
                ),
                (v2("198.51.100.7", 1234), IPv4Address("TCP", "198.51.100.7", 1234)),
                (
                    v2("2001:db8:0:0::1", 65535),
                    IPv6Address("TCP", "2001:db8::1", 65535),
                ),
            ]
        ),
        payload=st.binary(max_size=300),
        sizes=st.lists(st.integers(1, 64), min_size=1, max_size=8),
    )
    def test_anyChunking(
        self, header: tuple[bytes, Any], payload: bytes, sizes: list[int]
    ) -> None:
        """
        Versions 1 and 2, IPv4 and IPv6, cut anywhere (down to one byte a
        read): the protocol is built once, for the header's address
        (normalised), and receives exactly the bytes after the header.
        """
        data, address = header
        p, transport, service, _ = self.connect()
        for chunk in chunked(data + payload, sizes):
            # Once the header is in, the reactor reads for the new protocol.
            target = transport.protocol if service.built else p  # type: ignore[attr-defined]
            target.dataReceived(chunk)
        self.assertEqual(len(service.built), 1)
        built = service.built[0]
        self.assertEqual(built.addr, address)
        self.assertTrue(built.made)
        self.assertIs(transport.protocol, built)  # type: ignore[attr-defined]
        self.assertEqual(built.received, payload)
        self.assertEqual(service.refusals, [])
        self.assertEqual(p.factory.waiting, set())

    def test_largeFirstRead(self) -> None:
        """
        A header and more than L{MAX_HEADER} bytes after it in one read (a
        client that sent at once): every byte after the header reaches the
        service.
        """
        payload = bytes(range(256)) * 40
        for header in [v1("203.0.113.9", 1), v2("198.51.100.7", 2)]:
            p, transport, service, _ = self.connect()
            p.dataReceived(header + payload)
            self.assertEqual(service.built[0].received, payload)
            self.assertFalse(transport.disconnecting)

    def test_healthCheck(self) -> None:
        """
        A version 2 C{LOCAL} header and a version 1 C{UNKNOWN} one keep the
        proxy's own address.
        """
        for header in [v2("", 0, local=True), b"PROXY UNKNOWN\r\n"]:
            p, transport, service, _ = self.connect()
            p.dataReceived(header + b"x")
            self.assertEqual(service.built[0].addr, PROXY)
            self.assertEqual(service.built[0].received, b"x")

    def assertRefused(self, data: bytes, reason: str = "proxy-header") -> None:
        p, transport, service, _ = self.connect()
        for i in range(len(data)):
            p.dataReceived(data[i : i + 1])
            if transport.disconnecting:
                break
        self.assertEqual(service.built, [])
        self.assertEqual(service.refusals, [(reason, PROXY)])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(p.factory.waiting, set())

    def test_notAHeader(self) -> None:
        """
        Bytes that are not a PROXY header (a plain client that reached the
        listener directly) close the connection, refused as
        C{proxy-header}.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\n\r\n")
        self.assertRefused(b"hello\n")
        self.assertRefused(b"PROXX TCP4 1.2.3.4 1.2.3.4 1 2\r\n")
        self.assertRefused(V2_SIGNATURE + bytes([0x31, 0x11]) + b"\x00\x0c" + bytes(12))

    def test_badAddresses(self) -> None:
        """
        A source that is not an IP address literal of the header's family,
        or a port out of range, is refused.
        """
        self.assertRefused(b"PROXY TCP4 evil.example 127.0.0.1 1 2\r\n")
        self.assertRefused(b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n")
        self.assertRefused(b"PROXY TCP6 10.0.0.1 ::1 1 2\r\n")
        self.assertRefused(b"PROXY TCP4 10.0.0.1 127.0.0.1 70000 2\r\n")
        self.assertRefused(b"PROXY TCP4 10.0.0.1 127.0.0.1 -1 2\r\n")

    def test_tooLong(self) -> None:
        """
        A version 1 line past 107 bytes, and a version 2 header declaring
        more than L{MAX_HEADER} bytes, are refused once that much has come.
        """
        self.assertRefused(b"PROXY TCP4 " + b"1" * 200)
        p, transport, service, _ = self.connect()
        p.dataReceived(V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 65535))
        self.assertFalse(transport.disconnecting)
        p.dataReceived(b"\x00" * MAX_HEADER)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(service.refusals, [("proxy-header", PROXY)])

    def test_timeout(self) -> None:
        """
        A header not complete within L{HEADER_TIMEOUT} seconds is refused
        as C{proxy-timeout}, however it trickles; no timer is left after.
        """
        p, transport, service, clock = self.connect()
        p.dataReceived(b"PROXY TCP4 ")
        clock.advance(HEADER_TIMEOUT - 0.01)
        p.dataReceived(b"1")
        self.assertFalse(transport.disconnecting)
        clock.advance(0.01)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(service.refusals, [("proxy-timeout", PROXY)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timerCancelled(self) -> None:
        """
        A complete header, or a connection lost before it, leaves no timer.
        """
        p, transport, service, clock = self.connect()
        p.dataReceived(v1("10.1.2.3", 5))
        self.assertEqual(clock.getDelayedCalls(), [])
        p, transport, service, clock = self.connect()
        p.dataReceived(b"PROX")
        p.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(p.factory.waiting, set())

    def test_waitingBounded(self) -> None:
        """
        At most C{maxWaiting} connections wait for their header; the next is
        refused as C{proxy-waiting}; one that finishes frees its place.
        """
        service = RecordingFactory()
        factory = ProxyHeaderFactory(service, service, Clock(), maxWaiting=3)
        waiting = []
        for _ in range(3):
            p: Any = factory.buildProtocol(PROXY)
            p.makeConnection(StringTransport(peerAddress=PROXY))
            waiting.append(p)
        self.assertIsNone(factory.buildProtocol(PROXY))
        self.assertEqual(service.refusals, [("proxy-waiting", PROXY)])
        waiting[0].dataReceived(v1("10.0.0.1", 1))
        self.assertIsNotNone(factory.buildProtocol(PROXY))

    def test_serviceRefuses(self) -> None:
        """
        When the service refuses the real address, the connection is
        closed.
        """
        p, transport, service, _ = self.connect(RecordingFactory(refuseAll=True))
        p.dataReceived(v1("10.0.0.1", 1) + b"data")
        self.assertTrue(transport.disconnecting)

    def test_perPeerLimitsRealAddress(self) -> None:
        """
        A service's per-peer limit counts the real addresses, not the
        proxy's: a second connection of one client is refused, another
        client is let in, though all come from the same proxy.
        """
        metrics = MemoryMetrics()
        echo = EchoFactory("tcp-echo", ConnectionLimits(maxPerPeer=1), metrics, Clock())
        factory = ProxyHeaderFactory(echo, echo, Clock())

        def through(source: str) -> StringTransport:
            p: Any = factory.buildProtocol(PROXY)
            transport = StringTransport(peerAddress=PROXY)
            p.makeConnection(transport)
            p.dataReceived(v1(source, 1000))
            return transport

        first = through("192.0.2.1")
        second = through("192.0.2.1")
        other = through("192.0.2.2")
        self.assertFalse(first.disconnecting)
        self.assertTrue(second.disconnecting)
        self.assertFalse(other.disconnecting)
        self.assertEqual(
            metrics.value(
                "netdemo_refused_total", service="tcp-echo", reason="max-per-peer"
            ),
            1,
        )

    def test_wantsProxyHeader(self) -> None:
        """
        Descriptions starting with C{haproxy:}, in any case, ask for it.
        """
        self.assertTrue(wantsProxyHeader("haproxy:tcp:8008"))
        self.assertTrue(wantsProxyHeader("HAProxy:tcp:8008"))
        self.assertFalse(wantsProxyHeader("tcp:8008"))


def _fromAddress(source: str, address: tuple[str, int]) -> socket.socket:
    """
    A TCP connection to C{address} from the local address C{source}.
    """
    s = socket.socket()
    s.settimeout(PATIENCE)
    s.bind((source, 0))
    s.connect(address)
    return s


class HAProxyDaemonTests(SynchronousTestCase):
    """
    A real daemon with C{haproxy:} listeners behind Debian's C{haproxy}
    (C{send-proxy} and C{send-proxy-v2}) on loopback, and C{curl
    --haproxy-protocol}: clients connecting from 127.0.0.2 and 127.0.0.3
    are greeted, listed, limited and logged as themselves.
    """

    def setUp(self) -> None:
        haproxy = requireTool("haproxy", "haproxy")
        self.curl = requireTool("curl", "curl")
        self.daemon = Daemon(
            "--tcp",
            "haproxy:tcp:0:interface=127.0.0.1",
            "--pubsub",
            "haproxy:tcp:0:interface=127.0.0.1",
            "--http",
            "haproxy:tcp:0:interface=127.0.0.1",
            "--max-per-peer",
            "1",
            twistdArgs=["--logger=netdemo.logs.jsonObserver"],
        )
        self.addCleanup(self.daemon.close)
        self.daemon.waitListening(3)
        # One frontend per case, each on a socket of the test's own that
        # haproxy inherits (bind fd@N): no port is probed and reused.
        cases = [
            ("echo", "tcp-echo", "send-proxy"),
            ("hub", "pubsub", "send-proxy-v2"),
            ("web", "http", "send-proxy-v2"),
        ]
        self.frontends: dict[str, tuple[str, int]] = {}
        sockets = []
        config = [
            "global",
            "  maxconn 200",
            "defaults",
            "  mode tcp",
            "  timeout connect 5s",
            "  timeout client 60s",
            "  timeout server 60s",
        ]
        for name, service, send in cases:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            sockets.append(listener)
            self.addCleanup(listener.close)
            self.frontends[name] = listener.getsockname()
            host, port = self.daemon.address(service)
            config += [
                f"frontend {name}",
                f"  bind fd@{listener.fileno()}",
                f"  default_backend {name}-backend",
                f"backend {name}-backend",
                f"  server s1 {host}:{port} {send}",
            ]
        directory = tempfile.mkdtemp(prefix="netdemo-haproxy-")
        path = Path(directory) / "haproxy.cfg"
        path.write_text("\n".join(config) + "\n")
        self.output = open(Path(directory) / "output", "wb")  # noqa: SIM115
        self.addCleanup(self.output.close)
        self.haproxy = subprocess.Popen(
            [haproxy, "-db", "-f", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            pass_fds=[s.fileno() for s in sockets],
        )

        def stop() -> None:
            self.haproxy.terminate()
            self.haproxy.wait(PATIENCE)

        self.addCleanup(stop)

    def closedPeers(self, service: str) -> list[str]:
        return [
            r["peer"]
            for r in self.daemon.events()
            if r.get("event") == "connection_closed" and r.get("service") == service
        ]

    def test_echo(self) -> None:
        """
        Through C{send-proxy} (version 1), the echo answers, and logs the
        connection as 127.0.0.2's.
        """
        s = _fromAddress("127.0.0.2", self.frontends["echo"])
        s.sendall(b"hello through haproxy")
        self.assertEqual(readUntil(s, b"haproxy"), b"hello through haproxy")
        # --max-per-peer 1 counts 127.0.0.2, not haproxy's address: a
        # second connection of 127.0.0.2 is refused, one of 127.0.0.3 is
        # served.
        again = _fromAddress("127.0.0.2", self.frontends["echo"])
        self.addCleanup(again.close)
        self.assertEqual(readUntil(again, b"x"), b"")
        other = _fromAddress("127.0.0.3", self.frontends["echo"])
        self.addCleanup(other.close)
        other.sendall(b"from .3")
        self.assertEqual(readUntil(other, b".3"), b"from .3")
        [refused] = self.daemon.waitEvent("refused")
        self.assertEqual(refused["reason"], "max-per-peer")
        self.assertTrue(refused["peer"].startswith("127.0.0.2:"), refused)
        s.close()
        poll(lambda: self.closedPeers("tcp-echo"), "the echo connection's close")
        [peer] = self.closedPeers("tcp-echo")
        self.assertTrue(peer.startswith("127.0.0.2:"), peer)

    def test_hub(self) -> None:
        """
        Through C{send-proxy-v2}, the hub greets and lists each client by
        its own address, and the per-peer limit counts real addresses: a
        second connection from 127.0.0.2 is refused while 127.0.0.3 is let
        in, though all come from haproxy.
        """
        alice = _fromAddress("127.0.0.2", self.frontends["hub"])
        self.addCleanup(alice.close)
        greeting = readUntil(alice, b"\n")
        self.assertIn(b"you are 127.0.0.2:", greeting)
        again = _fromAddress("127.0.0.2", self.frontends["hub"])
        self.addCleanup(again.close)
        self.assertEqual(readUntil(again, b"\n"), b"-ERR refused: max-per-peer\n")
        bob = _fromAddress("127.0.0.3", self.frontends["hub"])
        self.addCleanup(bob.close)
        self.assertIn(b"you are 127.0.0.3:", readUntil(bob, b"\n"))
        alice.sendall(b"/who\n")
        who = readUntil(alice, b"+OK who")
        who += readUntil(alice, b"\n")
        self.assertIn(b"127.0.0.2:", who)
        self.assertIn(b"127.0.0.3:", who)
        self.assertNotIn(b"127.0.0.1:", who)
        refused = self.daemon.waitEvent("refused")
        self.assertEqual(refused[0]["reason"], "max-per-peer")
        self.assertTrue(refused[0]["peer"].startswith("127.0.0.2:"))

    def test_http(self) -> None:
        """
        HTTP through haproxy (version 2) and from C{curl
        --haproxy-protocol} (version 1) directly: answered, and a refusal
        names the real client.
        """
        s = _fromAddress("127.0.0.2", self.frontends["web"])
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(readUntil(s, b"ok").startswith(b"HTTP/1.1 200"))
        # The kept-alive connection counts for 127.0.0.2: its second one is
        # refused (--max-per-peer 1).
        again = _fromAddress("127.0.0.2", self.frontends["web"])
        self.addCleanup(again.close)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(readUntil(again, b"ok"), b"")
        [limited] = self.daemon.waitEvent("refused")
        self.assertEqual(limited["reason"], "max-per-peer")
        self.assertTrue(limited["peer"].startswith("127.0.0.2:"), limited)
        s.close()
        host, port = self.daemon.address("http")
        out = subprocess.run(
            [
                self.curl,
                "-s",
                "--haproxy-protocol",
                "--interface",
                "127.0.0.3",
                "-X",
                "PUT",
                "--data-binary",
                "x",
                f"http://{host}:{port}/",
            ],
            capture_output=True,
            timeout=PATIENCE,
            check=False,
        )
        self.assertIn(b"method not allowed", out.stdout)
        refused = self.daemon.waitEvent("refused", 2)
        self.assertEqual(refused[1]["reason"], "request-body")
        self.assertTrue(refused[1]["peer"].startswith("127.0.0.3:"), refused[1])

    def test_directClientRefused(self) -> None:
        """
        A client that reaches a C{haproxy:} listener directly, without a
        header, is closed and counted as C{proxy-header}.
        """
        s = _fromAddress("127.0.0.2", self.daemon.address("pubsub"))
        s.sendall(b"hello\n")
        self.assertEqual(readUntil(s, b"\n"), b"")
        refused = self.daemon.waitEvent("refused")
        self.assertEqual(refused[0]["reason"], "proxy-header")
        self.assertTrue(refused[0]["peer"].startswith("127.0.0.2:"), refused[0])


class HAProxyTLSDaemonTests(SynchronousTestCase):
    """
    C{haproxy:ssl:...}: the PROXY header comes first and TLS after it, as
    HAProxy sends it to a C{ssl} server with C{send-proxy}.
    """

    def test_headerThenTLS(self) -> None:
        """
        A plain client of haproxy, which speaks TLS to the daemon after the
        header, gets its bytes echoed, and the daemon logs the client's
        own address.
        """
        haproxy = requireTool("haproxy", "haproxy")
        openssl = requireTool("openssl", "openssl")
        directory = Path(tempfile.mkdtemp(prefix="netdemo-haproxy-tls-"))
        key, cert = directory / "key.pem", directory / "cert.pem"
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            capture_output=True,
            check=True,
            timeout=PATIENCE,
        )
        daemon = Daemon(
            "--tcp",
            f"haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            twistdArgs=["--logger=netdemo.logs.jsonObserver"],
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(1)
        host, port = daemon.address("tcp-echo")
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        path = directory / "haproxy.cfg"
        path.write_text(
            "\n".join(
                [
                    "defaults",
                    "  mode tcp",
                    "  timeout connect 5s",
                    "  timeout client 60s",
                    "  timeout server 60s",
                    "frontend echo",
                    f"  bind fd@{listener.fileno()}",
                    "  default_backend tls",
                    "backend tls",
                    f"  server s1 {host}:{port} send-proxy ssl verify none",
                ]
            )
            + "\n"
        )
        with open(directory / "output", "wb") as output:
            process = subprocess.Popen(
                [haproxy, "-db", "-f", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=[listener.fileno()],
            )

        def stop() -> None:
            process.terminate()
            process.wait(PATIENCE)

        self.addCleanup(stop)
        s = _fromAddress("127.0.0.2", listener.getsockname())
        s.sendall(b"hello over tls")
        self.assertEqual(readUntil(s, b"tls"), b"hello over tls")
        s.close()
        [closed] = daemon.waitEvent("connection_closed")
        self.assertTrue(closed["peer"].startswith("127.0.0.2:"), closed)


class WaitingFloodDaemonTests(SynchronousTestCase):
    """
    The worst sender against a real daemon's C{haproxy:} listener: more
    connections than may wait for a header, each sending a few bytes of one
    and then nothing.
    """

    def test_flood(self) -> None:
        """
        Past L{MAX_WAITING} waiting connections, new ones are closed at once
        and counted as C{proxy-waiting}; the waiting ones are closed at the
        header deadline, counted as C{proxy-timeout}; then a client with a
        header is served as itself.
        """
        flood = MAX_WAITING + 100
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 3 * flood:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 3 * flood), hard))
        daemon = Daemon(
            "--pubsub",
            "haproxy:tcp:0:interface=127.0.0.1:backlog=4096",
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--max-per-peer",
            "0",
        )
        self.addCleanup(daemon.close)
        daemon.waitListening(2)
        address = daemon.address("pubsub")
        clients = []
        for _ in range(flood):
            c = socket.create_connection(address, timeout=PATIENCE)
            self.addCleanup(c.close)
            c.sendall(b"PROX")
            clients.append(c)

        def refused(reason: str) -> float:
            return daemon.statusValue(
                "netdemo_refused_total", service="pubsub", reason=reason
            )

        poll(lambda: refused("proxy-waiting") >= flood - MAX_WAITING, "refusals")
        poll(
            lambda: refused("proxy-timeout") >= MAX_WAITING,
            "the header deadline",
            timeout=HEADER_TIMEOUT + PATIENCE,
        )
        for c in clients:
            self.assertEqual(readUntil(c, b"\n"), b"")
        s = socket.create_connection(address, timeout=PATIENCE)
        self.addCleanup(s.close)
        s.sendall(v1("203.0.113.9", 4711))
        self.assertIn(b"you are 203.0.113.9:4711", readUntil(s, b"\n"))
