"""
Tests for the bounds of the HTTP service (L{netdemo.web}): connection caps,
the header deadline, the refusal of request bodies and the render cache,
with in-memory transports and a fake clock.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import tempfile
import time
from collections import deque
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from netdemo.limits import ConnectionLimits, HTTPLimits
from netdemo.metrics import MemoryMetrics
from netdemo.web import (
    RENDER_INTERVAL,
    REQUESTS_PER_TURN,
    HTTPConnection,
    ServerInfo,
    StatusFactory,
    buildHTTPService,
)
from tests.support import PATIENCE, Daemon, captureEvents, poll
from tests.test_internals import nextTurn

INFO = ServerInfo(version="1.2.3", startedAt=0.0)

HOST = IPv4Address("TCP", "127.0.0.1", 8080)

#: A complete request for C{/healthz}.
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def makeHTTP(
    limits: ConnectionLimits | None = None, httpLimits: HTTPLimits | None = None
) -> tuple[StatusFactory, MemoryMetrics, Clock]:
    """
    The HTTP service's factory on a fake clock, with in-memory metrics.
    """
    clock = Clock()
    metrics = MemoryMetrics()
    service = buildHTTPService([], metrics, INFO, clock, limits, httpLimits)
    return service.factory, metrics, clock


def connect(
    factory: StatusFactory, port: int = 40000
) -> tuple[HTTPConnection, StringTransport]:
    """
    A connection of C{factory} on a L{StringTransport}.
    """
    address = IPv4Address("TCP", "127.0.0.1", port)
    p = factory.buildProtocol(address)
    assert isinstance(p, HTTPConnection)
    transport = StringTransport(hostAddress=HOST, peerAddress=address)
    p.makeConnection(transport)
    return p, transport


def assertClosesAt(
    testCase: SynchronousTestCase,
    clock: Clock,
    transport: StringTransport,
    seconds: float,
) -> None:
    """
    The connection on C{transport} is still open C{seconds} (less a
    hundredth) from now, and closing at C{seconds}.
    """
    clock.advance(seconds - 0.01)
    testCase.assertFalse(transport.disconnecting)
    clock.advance(0.01)
    testCase.assertTrue(transport.disconnecting)


def refused(metrics: MemoryMetrics, reason: str) -> float:
    """
    The HTTP service's refusals for C{reason}.
    """
    return metrics.value("netdemo_refused_total", service="http", reason=reason)


class HeaderDeadlineTests(SynchronousTestCase):
    """
    A request's head must be complete within the header deadline, which
    trickling bytes does not move.
    """

    def test_silentConnection(self) -> None:
        """
        A connection that sends nothing is closed at the header deadline,
        and the refusal is counted.
        """
        factory, metrics, clock = makeHTTP(httpLimits=HTTPLimits(headerTimeout=10))
        p, transport = connect(factory)
        assertClosesAt(self, clock, transport, 10)
        self.assertEqual(p.closeReason, "header-timeout")
        self.assertEqual(refused(metrics, "header-timeout"), 1)

    def test_tricklingDoesNotExtend(self) -> None:
        """
        A client sending one header byte a second is closed at the deadline,
        counted from the connection's start, not from its last byte.
        """
        factory, metrics, clock = makeHTTP(httpLimits=HTTPLimits(headerTimeout=10))
        p, transport = connect(factory)
        head = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100
        for i in range(10):
            self.assertFalse(transport.disconnecting, f"closed after {i} s")
            p.dataReceived(head[i : i + 1])
            clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(refused(metrics, "header-timeout"), 1)

    def test_headInTime(self) -> None:
        """
        A head complete within the deadline is served; the kept-alive
        connection then waits up to the keep-alive timeout for the next
        request, which is not a refusal.
        """
        factory, metrics, clock = makeHTTP(
            httpLimits=HTTPLimits(headerTimeout=10, keepAliveTimeout=60)
        )
        p, transport = connect(factory)
        clock.advance(9)
        p.dataReceived(HEALTHZ)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok\n"))
        assertClosesAt(self, clock, transport, 60)
        self.assertEqual(p.closeReason, "keep-alive-timeout")
        self.assertEqual(refused(metrics, "header-timeout"), 0)

    def test_nextRequest(self) -> None:
        """
        On a kept-alive connection, the first byte of the next request
        starts that request's header deadline.
        """
        factory, metrics, clock = makeHTTP(httpLimits=HTTPLimits(headerTimeout=10))
        p, transport = connect(factory)
        p.dataReceived(HEALTHZ)
        clock.advance(30)
        p.dataReceived(b"G")
        clock.advance(9.9)
        p.dataReceived(b"ET /healthz HTTP/1.1\r\n")
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(refused(metrics, "header-timeout"), 1)

    def test_pipelined(self) -> None:
        """
        Requests sent together are each answered in order.
        """
        factory, _, clock = makeHTTP()
        p, transport = connect(factory)
        p.dataReceived(HEALTHZ * 3)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertFalse(transport.disconnecting)

    def test_pipelinedBurst(self) -> None:
        """
        A read holding a thousand pipelined requests gets answers for
        L{REQUESTS_PER_TURN} of them per turn of the clock, all in the end,
        in order.
        """
        factory, _, clock = makeHTTP()
        p, transport = connect(factory)
        p.dataReceived(
            b"".join(b"GET /healthz?%d HTTP/1.1\r\n\r\n" % i for i in range(1000))
        )
        self.assertEqual(transport.value().count(b"HTTP/1.1 200"), REQUESTS_PER_TURN)
        nextTurn(clock)
        self.assertEqual(
            transport.value().count(b"HTTP/1.1 200"), 2 * REQUESTS_PER_TURN
        )
        for _ in range(1000 // REQUESTS_PER_TURN):
            nextTurn(clock)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200"), 1000)
        self.assertFalse(transport.disconnecting)

    def test_abortedIfNeverRead(self) -> None:
        """
        A connection that does not finish closing (its peer does not read)
        is aborted after the drain deadline.
        """
        factory, _, clock = makeHTTP(
            ConnectionLimits(drain=3), HTTPLimits(headerTimeout=10)
        )
        p, transport = connect(factory)
        clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(3)
        self.assertTrue(transport.disconnected)

    def test_loggedAtBoundedRate(self) -> None:
        """
        A hundred connections timing out together are all counted and
        logged once.
        """
        events = captureEvents(self)
        factory, metrics, clock = makeHTTP(
            ConnectionLimits(maxPerPeer=0), HTTPLimits(headerTimeout=10)
        )
        for i in range(100):
            connect(factory, 40000 + i)
        clock.advance(10)
        self.assertEqual(refused(metrics, "header-timeout"), 100)
        logged = [e for e in events if e.get("event") == "refused"]
        self.assertEqual([e["reason"] for e in logged], ["header-timeout"])

    def test_noTimerLeftAfterClose(self) -> None:
        """
        A closed connection leaves no timer behind.
        """
        factory, _, clock = makeHTTP()
        p, transport = connect(factory)
        p.dataReceived(HEALTHZ)
        p.connectionLost(None)
        self.assertEqual(
            [c for c in clock.getDelayedCalls() if c.func.__self__ is p],  # type: ignore[attr-defined]
            [],
        )


def _refusedBody(testCase: SynchronousTestCase, request: bytes) -> bytes:
    """
    Send C{request} (a head declaring a body, and the start of the body)
    and return the answer, checking that the connection closes and that
    Twisted never prepared the body.
    """
    factory, metrics, clock = makeHTTP()

    def noBodyFile(length: Any) -> Any:
        raise AssertionError("the request body was prepared")

    testCase.patch(http, "_getContentFile", noBodyFile)
    p, transport = connect(factory)
    p.dataReceived(request)
    p.dataReceived(b"x" * 65536)
    testCase.assertTrue(transport.disconnecting)
    testCase.assertEqual(refused(metrics, "request-body"), 1)
    testCase.assertEqual(
        metrics.value("netdemo_http_requests_total", service="http", path="/metrics"),
        0,
    )
    return transport.value()


class TurnBudgetTests(SynchronousTestCase):
    """
    All HTTP connections together get L{REQUESTS_PER_TURN} answers per
    reactor turn; past that, each answered connection waits its turn in a
    queue, so a turn's HTTP work does not grow with the number of clients.
    """

    def test_manyClientsOneTurn(self) -> None:
        """
        Two hundred kept-alive clients each ask for C{/metrics} and, like a
        scraper, ask again as soon as they are answered.  Each connection's
        first request is answered at once; after that no turn answers more
        than the budget (the second, less than twice); every client is
        answered in turn, none starved, and nothing is refused or dropped.
        """
        factory, _, clock = makeHTTP(ConnectionLimits(maxPerPeer=0))
        clients = [connect(factory, 40000 + i) for i in range(200)]
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        sent = [0] * len(clients)

        def answers() -> list[int]:
            return [t.value().count(b"HTTP/1.1 200") for _, t in clients]

        perTurn = []
        for _ in range(301):
            before = answers()
            for i, (p, transport) in enumerate(clients):
                # A client that has had every answer sends its next
                # request; the reactor reads it only from a connection
                # that is not paused (a paused one's waits in the kernel).
                if before[i] == sent[i] and transport.producerState == "producing":
                    p.dataReceived(request)
                    sent[i] += 1
            perTurn.append(sum(answers()) - sum(before))
            nextTurn(clock)
        self.assertEqual(perTurn[0], len(clients))
        # The second turn also answers the connections that were let go on
        # in the first, before the queue formed; from then on, the budget.
        self.assertLessEqual(perTurn[1], 2 * REQUESTS_PER_TURN - 1)
        self.assertEqual(set(perTurn[2:]), {REQUESTS_PER_TURN})
        final = answers()
        self.assertGreater(min(final), 1)
        self.assertLessEqual(max(final) - min(final), 1)
        for _, transport in clients:
            self.assertFalse(transport.disconnecting)

    def test_waitingReadsAgain(self) -> None:
        """
        A connection told to wait is paused, and reads again (its transport
        resumed) when its turn comes.
        """
        factory, _, clock = makeHTTP()
        clients = [connect(factory, 40000 + i) for i in range(REQUESTS_PER_TURN + 2)]
        for p, _ in clients:
            p.dataReceived(HEALTHZ)
        states = [t.producerState for _, t in clients]
        self.assertEqual(states.count("paused"), 3)
        self.assertEqual(factory.turns.used, REQUESTS_PER_TURN + 2)
        nextTurn(clock)
        states = [t.producerState for _, t in clients]
        self.assertEqual(states.count("paused"), 0)
        self.assertEqual(factory.turns.used, 0)

    def test_lostWhileWaiting(self) -> None:
        """
        A connection lost while waiting is skipped; stopping the factory
        leaves no timer.
        """
        factory, _, clock = makeHTTP()
        clients = [connect(factory, 40000 + i) for i in range(REQUESTS_PER_TURN + 1)]
        for p, _ in clients:
            p.dataReceived(HEALTHZ)
        p, transport = clients[-1]
        self.assertEqual(transport.producerState, "paused")
        p.connectionLost(None)
        nextTurn(clock)
        self.assertEqual(transport.producerState, "paused")
        for p, _ in clients[:-1]:
            p.dataReceived(HEALTHZ)
        factory.stopFactory()
        self.assertEqual(factory.turns.waiting, deque())
        self.assertEqual(
            [
                c
                for c in clock.getDelayedCalls()
                if getattr(c, "func", None) == factory.turns._nextTurn
            ],
            [],
        )


class BodyRefusalTests(SynchronousTestCase):
    """
    No page takes a request body: a request that declares one is answered
    as soon as its head is in, and its body is never read.
    """

    def test_getWithBody(self) -> None:
        """
        A GET declaring a 1 GB body gets C{413} and the connection closes.
        """
        answer = _refusedBody(
            self,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
            b"\r\n" + b"x" * 1000,
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n"))
        self.assertIn(b"\r\nconnection: close\r\n", answer)

    def test_chunked(self) -> None:
        """
        A chunked body is refused the same way.
        """
        answer = _refusedBody(
            self,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n10000\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "))

    def test_postWithBody(self) -> None:
        """
        Another method with a body gets C{405}, naming the methods served.
        """
        answer = _refusedBody(
            self,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"))
        self.assertIn(b"\r\nallow: GET, HEAD\r\n", answer)

    def test_emptyBody(self) -> None:
        """
        A declared length of 0 is no body: the request is served.
        """
        factory, metrics, _ = makeHTTP()
        p, transport = connect(factory)
        p.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(refused(metrics, "request-body"), 0)

    def test_abortedIfNeverRead(self) -> None:
        """
        A refused client that does not read is aborted after the drain
        deadline.
        """
        factory, _, clock = makeHTTP(ConnectionLimits(drain=2))
        p, transport = connect(factory)
        p.dataReceived(b"GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
        self.assertFalse(transport.disconnected)
        clock.advance(2)
        self.assertTrue(transport.disconnected)
        self.assertEqual(p.closeReason, "request-body")


class ConnectionLimitTests(SynchronousTestCase):
    """
    The HTTP service has the connection limits of every stream service.
    """

    def test_maxConnections(self) -> None:
        """
        Past C{maxConnections}, HTTP connections are refused and counted.
        """
        factory, metrics, _ = makeHTTP(ConnectionLimits(maxConnections=1))
        connect(factory)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 1)))
        self.assertEqual(refused(metrics, "max-connections"), 1)
        self.assertEqual(
            metrics.value("netdemo_connections_current", service="http"), 1
        )

    def test_maxPerPeer(self) -> None:
        """
        Past C{maxPerPeer} from one address, its connections are refused.
        """
        factory, metrics, _ = makeHTTP(ConnectionLimits(maxPerPeer=2))
        connect(factory, 1)
        connect(factory, 2)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3)))
        self.assertEqual(refused(metrics, "max-per-peer"), 1)

    def test_bytes(self) -> None:
        """
        Request bytes are counted as received, response bodies as sent; a
        finished connection is not logged.
        """
        events = captureEvents(self)
        factory, metrics, _ = makeHTTP()
        p, transport = connect(factory)
        p.dataReceived(HEALTHZ)
        p.connectionLost(None)
        self.assertEqual(
            metrics.value("netdemo_received_bytes_total", service="http"),
            len(HEALTHZ),
        )
        self.assertEqual(metrics.value("netdemo_sent_bytes_total", service="http"), 3)
        self.assertEqual(
            [e for e in events if e.get("event") == "connection_closed"], []
        )

    def test_drain(self) -> None:
        """
        Stopping the service closes its connections.
        """
        factory, _, clock = makeHTTP(ConnectionLimits(drain=5))
        p, transport = connect(factory)
        done = factory.drain()
        self.assertTrue(transport.disconnecting)
        clock.advance(5)
        self.assertTrue(transport.disconnected)
        p.connectionLost(None)
        self.successResultOf(done)


class RenderCacheTests(SynchronousTestCase):
    """
    Each representation is rendered at most once per L{RENDER_INTERVAL}.
    """

    def request(self, p: HTTPConnection, path: bytes, accept: bytes = b"") -> None:
        """
        Send a request for C{path} on C{p}.
        """
        headers = b"Accept: " + accept + b"\r\n" if accept else b""
        p.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")

    def renders(self, metrics: MemoryMetrics, path: str) -> float:
        """
        Renders of C{path} so far.
        """
        return metrics.value("netdemo_http_renders_total", service="http", path=path)

    def test_oncePerInterval(self) -> None:
        """
        However many requests arrive, each representation is rendered once
        per interval; every request is still counted.
        """
        factory, metrics, clock = makeHTTP(ConnectionLimits(maxPerPeer=0))
        connections = [connect(factory, 40000 + i)[0] for i in range(20)]
        for _ in range(5):
            for p in connections:
                self.request(p, b"/metrics")
                self.request(p, b"/metrics", b"application/openmetrics-text")
                self.request(p, b"/status.json")
                self.request(p, b"/")
        # Past the turn's budget, connections wait for later turns.
        for _ in range(100):
            nextTurn(clock)
        keys = {k: v for k, v in factory.site.resource.cache.renders.items()}
        self.assertEqual(set(keys.values()), {1})
        self.assertEqual(len(keys), 4)
        self.assertEqual(
            metrics.value("netdemo_http_requests_total", service="http", path="/"),
            100,
        )
        clock.advance(RENDER_INTERVAL)
        self.request(connections[0], b"/status.json")
        self.assertEqual(self.renders(metrics, "/status.json"), 2)

    def test_staleness(self) -> None:
        """
        A change shows in the cached document once the interval has passed.
        """
        factory, metrics, clock = makeHTTP()
        p, transport = connect(factory)
        self.request(p, b"/metrics")
        metrics.inc("netdemo_refused_total", service="x", reason="test")
        self.request(p, b"/metrics")
        self.assertNotIn(b'reason="test"', transport.value())
        clock.advance(RENDER_INTERVAL)
        self.request(p, b"/metrics")
        self.assertIn(b'reason="test"', transport.value())


def _metric(text: str, series: str) -> float:
    """
    The value of C{series} (C{name{labels}}) in a Prometheus exposition.
    """
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _get(address: tuple[str, int], path: str, source: str = "127.0.0.1") -> str:
    """
    GET C{path} on a new connection from C{source}; the body.
    """
    import http.client

    host, port = address
    connection = http.client.HTTPConnection(
        host, port, timeout=PATIENCE, source_address=(source, 0)
    )
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode("utf-8")
    finally:
        connection.close()


def _tempFiles(pid: int, directory: str) -> list[str]:
    """
    The descriptors of process C{pid} open on files in C{directory}, or on
    deleted files.
    """
    found = []
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        with contextlib.suppress(OSError):
            target = os.readlink(os.path.join(base, name))
            if target.startswith(directory) or target.endswith("(deleted)"):
                found.append(target)
    return found


def _writtenToStorage(pid: int) -> int:
    """
    The bytes process C{pid} has caused to be written to storage
    (C{write_bytes} of C{/proc/PID/io}).
    """
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/PID/io")


class DaemonTests(SynchronousTestCase):
    """
    The HTTP bounds on a real daemon (header deadline 1 s), played against
    by a slowloris client, a 1 GB request body and a scraper in a loop.
    """

    daemon: Daemon
    temporary: str
    address: tuple[str, int]

    @classmethod
    def setUpClass(cls) -> None:
        cls.temporary = tempfile.mkdtemp(prefix="netdemo-tmpdir-")
        cls.daemon = Daemon(
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--http-header-timeout",
            "1",
            "--max-per-peer",
            "0",
            env={"TMPDIR": cls.temporary},
        )
        cls.daemon.waitListening(1)
        cls.address = cls.daemon.address("http")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.close()
        shutil.rmtree(cls.temporary, ignore_errors=True)

    def test_slowloris(self) -> None:
        """
        Fifty clients trickling a header byte every 0.2 s are each sent a
        C{408} and closed at the header deadline, however long they trickle;
        each is counted.
        """
        clients = [socket.create_connection(self.address) for _ in range(50)]
        for c in clients:
            self.addCleanup(c.close)
            c.setblocking(False)
        head = b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 10000
        answers: dict[socket.socket, bytes] = {c: b"" for c in clients}
        open_ = set(clients)
        deadline = time.monotonic() + PATIENCE
        sent = 0
        while open_ and time.monotonic() < deadline:
            for c in list(open_):
                with contextlib.suppress(OSError):
                    c.send(head[sent : sent + 1])
            sent += 1
            readable, _, _ = select.select(list(open_), [], [], 0.2)
            for c in readable:
                data = b""
                with contextlib.suppress(OSError):
                    data = c.recv(4096)
                answers[c] += data
                if not data:
                    open_.discard(c)
        self.assertEqual(len(open_), 0, f"{len(open_)} still open after {sent} bytes")
        self.assertEqual(
            {a.split(b"\r\n", 1)[0] for a in answers.values()},
            {b"HTTP/1.1 408 Request Timeout"},
        )
        poll(
            lambda: (
                _metric(
                    _get(self.address, "/metrics"),
                    'netdemo_refused_total{reason="header-timeout",service="http"}',
                )
                >= 50
            ),
            "50 header-timeout refusals counted",
        )

    def test_gigabyteBody(self) -> None:
        """
        A request declaring a 1 GB body is answered C{413} from its head and
        closed: no temporary file is opened, nothing is written to storage.
        """
        pid = self.daemon.process.pid
        before = _writtenToStorage(pid)
        client = socket.create_connection(self.address, timeout=PATIENCE)
        self.addCleanup(client.close)
        client.sendall(
            b"PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
        )
        chunk = b"x" * (1 << 20)
        seen: list[str] = []
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 1_000_000_000:
                client.sendall(chunk)
                sent += len(chunk)
                seen += _tempFiles(pid, self.temporary)
                if seen:
                    break
        self.assertEqual(seen, [])
        self.assertLess(sent, 1_000_000_000)
        answer = client.makefile("rb").read()
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), answer[:100])
        self.assertEqual(os.listdir(self.temporary), [])
        self.assertLess(_writtenToStorage(pid) - before, 1 << 20)

    def test_pipelining(self) -> None:
        """
        Two thousand pipelined requests sent at once are all answered, in
        order, a few per reactor turn.
        """
        client = socket.create_connection(self.address, timeout=PATIENCE)
        self.addCleanup(client.close)
        requests = [b"GET /healthz?%d HTTP/1.1\r\n\r\n" % i for i in range(2000)]
        client.sendall(b"".join(requests))
        reader = client.makefile("rb")
        for _ in requests:
            self.assertEqual(reader.readline(), b"HTTP/1.1 200 OK\r\n")
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.assertEqual(reader.read(length), b"ok\n")

    def test_scrapesRenderBounded(self) -> None:
        """
        A scraper asking for C{/metrics} as fast as it can on one kept-alive
        connection (for over a second, several thousand requests at most)
        gets at most about two renders a second.
        """
        import http.client

        host, port = self.address
        connection = http.client.HTTPConnection(host, port, timeout=PATIENCE)
        self.addCleanup(connection.close)
        series = (
            'netdemo_http_renders_total{path="/metrics text/plain; version=0.0.4; '
            'charset=utf-8",service="http"}'
        )
        started = time.monotonic()
        for _ in range(5000):
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode("utf-8")
            elapsed = time.monotonic() - started
            if elapsed > 4 * RENDER_INTERVAL:
                break
        renders = _metric(text, series)
        self.assertGreaterEqual(renders, 1)
        self.assertLessEqual(renders, elapsed / RENDER_INTERVAL + 2)
        requests = _metric(
            text, 'netdemo_http_requests_total{path="/metrics",service="http"}'
        )
        self.assertGreater(requests, renders)


class DaemonCapTests(SynchronousTestCase):
    """
    C{--max-per-peer} and C{--max-connections} apply to HTTP.
    """

    def test_maxPerPeer(self) -> None:
        """
        With C{--max-per-peer 3}, a fourth HTTP connection from one address
        is closed at once and counted; another address is still served.
        """
        with Daemon(
            "--http", "tcp:0:interface=127.0.0.1", "--max-per-peer", "3"
        ) as daemon:
            daemon.waitListening(1)
            address = daemon.address("http")
            held = [socket.create_connection(address) for _ in range(3)]
            for s in held:
                self.addCleanup(s.close)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))
            fourth = socket.create_connection(address, timeout=PATIENCE)
            self.addCleanup(fourth.close)
            with contextlib.suppress(ConnectionError):
                fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = fourth.recv(100)
            except ConnectionError:
                answer = b""
            self.assertEqual(answer, b"")
            text = _get(address, "/metrics", source="127.0.0.2")
            self.assertEqual(
                _metric(
                    text, 'netdemo_refused_total{reason="max-per-peer",service="http"}'
                ),
                1,
            )
