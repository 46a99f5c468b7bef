"""
The pub/sub hub's required figures over real sockets on 127.0.0.1.

The figures that need a hub of its own (a clean RSS to watch, no competition
from the test's threads) run against a real C{twistd netdemo --pubsub}
(L{Daemon}), whose metrics are read from its status page; the clients are
blocking sockets driven by threads in the test process.  The write deadline
is tested in this process, with the hub's clock a L{Clock}: the socket
really stalls, the deadline is advanced by hand.  Limits are set low so that
each test runs in seconds.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import threading
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netdemo.limits import ConnectionLimits, HubLimits
from netdemo.metrics import MemoryMetrics
from netdemo.pubsub import ACCEPTS_PER_TURN, buildPubSubService
from tests.pubsubhelpers import LineSocket, LoopbackHub
from tests.support import PATIENCE, Daemon, poll, requireTool, waitUntil


class HubDaemon(Daemon):
    """
    A C{twistd netdemo} running a hub and its status page on loopback,
    listening.
    """

    def __init__(self, *args: str, presence: bool = False, listeners: int = 2) -> None:
        """
        @param args: More options (C{--tcp ...}: say so in C{listeners}).
        @param presence: Whether presence notices are on.
        @param listeners: How many listeners to wait for.
        """
        super().__init__(
            "--pubsub",
            "tcp:0:interface=127.0.0.1:backlog=4096",
            "--http",
            "tcp:0:interface=127.0.0.1",
            *([] if presence else ["--no-presence"]),
            *args,
        )
        self.waitListening(listeners)

    def metric(self, name: str, **labels: str) -> float:
        """
        The current value of one series, from the status page.
        """
        return self.statusValue(name, **labels)


class FiguresTests(SynchronousTestCase):
    """
    The hub's figures, against a real C{twistd} hub.
    """

    def hub(self, *args: str) -> HubDaemon:
        """
        A hub with C{args}, stopped after the test.
        """
        daemon = HubDaemon(*args)
        self.addCleanup(daemon.close)
        return daemon

    def client(self, daemon: HubDaemon, rcvbuf: int | None = None) -> LineSocket:
        """
        A client of C{daemon}, greeted, closed after the test.
        """
        client = LineSocket(daemon.port("pubsub"), rcvbuf=rcvbuf)
        self.addCleanup(client.close)
        return client

    def test_threeClientsThousandLines(self) -> None:
        """
        Three clients each send 1000 lines at once: each receives exactly the
        other two's 2000 lines, each sender's in order, and never its own.
        """
        daemon = self.hub()
        clients = [self.client(daemon) for _ in range(3)]

        def run(client: LineSocket) -> None:
            client.send(
                b"".join(
                    b"line %d from %s\n" % (i, client.identity) for i in range(1000)
                )
            )
            client.collect(b"<", 2000)

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PATIENCE * 3)
        for client in clients:
            self.assertEqual(len(client.matching(b"<")), 2000)
            for other in clients:
                prefix = b"<" + other.identity + b"> "
                fromOther = client.matching(prefix)
                expected = [
                    prefix + b"line %d from %s" % (i, other.identity)
                    for i in range(1000)
                ]
                self.assertEqual(fromOther, [] if other is client else expected)

    def test_stalledSubscriberHundredMegabytes(self) -> None:
        """
        With C{--max-pending} 1 MiB, a subscriber that never reads (tiny
        receive buffer) while a publisher sends 100 MB in 1 KiB lines is
        disconnected by the policy; the hub's RSS grows by at most
        32 MB; two reading subscribers receive every line, in order, intact;
        the slow-consumer counter rises by exactly 1.
        """
        daemon = self.hub(
            "--max-pending", "1MiB", "--write-deadline", "0", "--idle-timeout", "0"
        )
        readers = [self.client(daemon) for _ in range(2)]
        stalled = self.client(daemon, rcvbuf=4096)
        publisher = self.client(daemon)
        lineCount = 100 * 1024
        prefix = b"<" + publisher.identity + b"> "

        def text(i: int) -> bytes:
            head = b"%08d " % (i,)
            return head + b"." * (1023 - len(head))

        expected = hashlib.sha256()
        expectedSize = 0
        blocks = []
        for start in range(0, lineCount, 256):
            block = b"".join(text(i) + b"\n" for i in range(start, start + 256))
            delivered = prefix + block[:-1].replace(b"\n", b"\n" + prefix) + b"\n"
            expected.update(delivered)
            expectedSize += len(delivered)
            blocks.append((block, expectedSize))

        digests: dict[int, tuple[str, int]] = {}
        # The readers are threads of this process: on a busy machine they
        # may be slower than the hub.  The publisher keeps at most WINDOW
        # bytes ahead of them, so that only the stalled subscriber ever
        # has more than the kernel buffers waiting for it.
        window = 512 * 1024
        received = [0, 0]
        progress = threading.Condition()

        def read(index: int) -> None:
            sock = readers[index].sock
            h = hashlib.sha256()
            size = 0
            sock.settimeout(60)
            while size < expectedSize:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                size += len(chunk)
                with progress:
                    received[index] = size
                    progress.notify_all()
            digests[index] = (h.hexdigest(), size)

        slow = {"service": "pubsub", "reason": "slow-consumer"}
        baseline = daemon.rss()
        peak = [baseline]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], daemon.rss())
                done.wait(0.05)

        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        watcher = threading.Thread(target=watch)
        for t in threads:
            t.start()
        watcher.start()
        before = 0
        for block, after in blocks:
            floor = before - window
            with progress:
                # Called at once, in this iteration.
                caughtUp = progress.wait_for(
                    lambda: min(received) >= floor,  # noqa: B023
                    PATIENCE,
                )
            self.assertTrue(caughtUp, f"the readers stopped at {received}")
            publisher.send(block)
            before = after
        for t in threads:
            t.join(120)
        done.set()
        watcher.join(10)

        # Cut by the policy (not by the end of the test): counted once, and
        # its RSS bound held while 100 times --max-pending went past it.
        poll(
            lambda: daemon.metric("netdemo_refused_total", **slow) == 1,
            "the stalled subscriber counted as a slow consumer",
        )
        self.assertLessEqual(peak[0] - baseline, 32 * 1024 * 1024, (baseline, peak))
        for index in range(2):
            self.assertEqual(digests[index], (expected.hexdigest(), expectedSize))
        self.assertEqual(daemon.metric("netdemo_refused_total", **slow), 1)
        with self.assertRaises(OSError):
            stalled.sock.settimeout(10)
            while stalled.sock.recv(1 << 16):
                pass
            raise ConnectionResetError("closed without a reset")

    def test_dropOldestCountsEveryLine(self) -> None:
        """
        With the drop-oldest policy, a subscriber that stops reading while
        30 MB are published stays connected, the hub's RSS stays bounded,
        and once it reads again the lines it gets plus the drops it is told
        about account for every line published, in order.
        """
        daemon = self.hub(
            "--max-pending",
            "1MiB",
            "--slow-policy",
            "drop-oldest",
            "--idle-timeout",
            "0",
        )
        stalled = self.client(daemon, rcvbuf=4096)
        publisher = self.client(daemon)
        lineCount = 30 * 1024
        baseline = daemon.rss()
        peak = baseline
        for start in range(0, lineCount, 256):
            publisher.send(
                b"".join(
                    b"%08d %s\n" % (i, b"." * 1014) for i in range(start, start + 256)
                )
            )
            if start % 4096 == 0:
                peak = max(peak, daemon.rss())
        publisher.send(b"/ping\n")
        self.assertEqual(publisher.collect(b"+OK", 1), [b"+OK pong"])
        peak = max(peak, daemon.rss())
        self.assertLessEqual(peak - baseline, 32 * 1024 * 1024, (baseline, peak))

        prefix = b"<" + publisher.identity + b"> "
        last = prefix + b"%08d " % (lineCount - 1,)
        stalled.collect(last, 1, timeout=60)
        self.assertFalse(stalled.closed, "the subscriber was disconnected")
        numbers: list[int] = []
        dropped = 0
        for line in stalled.lines[1:]:
            if line.startswith(prefix):
                self.assertEqual(line[len(prefix) + 8 :], b" " + b"." * 1014)
                numbers.append(int(line[len(prefix) : len(prefix) + 8]))
            else:
                match = re.match(rb"\* dropped (\d+) lines \(slow consumer\)$", line)
                assert match is not None, line
                dropped += int(match.group(1))
        self.assertGreater(dropped, 0)
        self.assertEqual(numbers, sorted(numbers))
        self.assertEqual(len(numbers) + dropped, lineCount)
        self.assertEqual(
            daemon.metric("netdemo_pubsub_dropped_lines_total", service="pubsub"),
            dropped,
        )

    def test_refusedGetsReasonLine(self) -> None:
        """
        A connection over C{--max-connections} reads one reason line, then the
        end of the stream.
        """
        daemon = self.hub("--max-connections", "1")
        self.client(daemon)
        second = LineSocket(daemon.port("pubsub"), greeting=False)
        self.addCleanup(second.close)
        self.assertEqual(second.collect(b"", 2), [b"-ERR refused: max-connections"])
        self.assertTrue(second.closed)

    def test_netcat(self) -> None:
        """
        The hub serves C{nc}: a line that C{nc} sends (LF only) reaches a
        subscriber, and C{/ping} is answered.
        """
        nc = requireTool("nc", "netcat-openbsd")
        daemon = self.hub()
        subscriber = self.client(daemon)
        result = subprocess.run(
            [nc, "-q", "1", "127.0.0.1", str(daemon.port("pubsub"))],
            input=b"hello from nc\n/ping\n",
            capture_output=True,
            timeout=PATIENCE,
        )
        self.assertIn(b"+OK pong\n", result.stdout)
        [line] = subscriber.collect(b"<", 1)
        self.assertTrue(line.endswith(b"> hello from nc"), line)


class WriteDeadlineTests(TestCase):
    """
    The write deadline over a real socket that stops reading, with the
    hub's timers on a L{Clock}.
    """

    async def test_writeDeadline(self) -> None:
        """
        A subscriber whose socket stops reading is paused by its transport;
        once paused for C{writeDeadline} (and not before) it is
        disconnected and counted, while the publisher and a reading
        subscriber go on.
        """
        clock = Clock()
        hub = await LoopbackHub(
            HubLimits(presence=False, writeDeadline=3.0, maxPending=64 << 20),
            ConnectionLimits(idleTimeout=0),
            clock=clock,
        ).start()
        self.addCleanup(hub.stop)
        slow = LineSocket(hub.port, rcvbuf=4096, greeting=False)
        self.addCleanup(slow.close)
        publisher, reader = await hub.watcher(), await hub.watcher()
        await waitUntil(lambda: len(hub.factory.clients) == 3, "three clients")
        [slowProtocol] = [
            p
            for p in hub.factory.clients
            if p.identity not in (publisher.identity, reader.identity)
        ]
        prefix = b"<" + publisher.identity + b"> "
        block = b"x" * 1023 + b"\n"
        for sent in range(1, 200):
            publisher.send(block * 64)
            await reader.waitFor(prefix, 64 * sent)
            if slowProtocol.paused:
                break
        self.assertTrue(slowProtocol.paused)
        clock.advance(2.9)
        self.assertIsNone(slowProtocol.closeReason)
        clock.advance(0.2)
        self.assertEqual(slowProtocol.closeReason, "write-deadline")
        await waitUntil(lambda: not slowProtocol.connected, "the subscriber to go")
        self.assertEqual(
            hub.metrics.value(
                "netdemo_refused_total", service="pubsub", reason="write-deadline"
            ),
            1,
        )
        publisher.send(b"still here")
        await reader.waitFor(prefix + b"still here")


class AcceptBatchTests(TestCase):
    """
    The hub's listeners accept a storm of connections a batch at a time.
    """

    async def test_capped(self) -> None:
        """
        A hub listener accepts at most L{ACCEPTS_PER_TURN} connections per
        reactor turn, however many wait; the rest come on later turns.
        """
        from twisted.internet import reactor

        service = buildPubSubService(
            ["tcp:0:interface=127.0.0.1:backlog=128"],
            ConnectionLimits(maxPerPeer=0),
            HubLimits(presence=False),
            MemoryMetrics(),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(await service.whenListening())
        [port] = service.ports
        address: Any = port.getHost()
        listening: Any = port
        listening.stopReading()
        clients = [
            socket.create_connection(("127.0.0.1", address.port), timeout=PATIENCE)
            for _ in range(ACCEPTS_PER_TURN + 8)
        ]
        for client in clients:
            self.addCleanup(client.close)
        listening.numberAccepts = 1000
        listening.doRead()
        factory: Any = service.factory
        self.assertEqual(len(factory.clients), ACCEPTS_PER_TURN)
        listening.startReading()
        await waitUntil(
            lambda: len(factory.clients) == len(clients), "every client accepted"
        )
