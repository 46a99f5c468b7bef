"""
The pub/sub hub's required figures over real sockets on 127.0.0.1.

The hub runs in its own process (L{tests.pubsubserver}, or C{twistd}); the
clients are blocking sockets driven by threads in the test process.  Limits
are set low so that each test runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HubProcess:
    """
    A hub started with L{tests.pubsubserver}.
    """

    def __init__(self, **config: Any) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.pubsubserver", json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.match(rb"port (\d+)$", line.strip())
        if match is None:
            self.stop()
            raise RuntimeError(f"the hub did not start: {line!r}")
        self.port = int(match.group(1))

    def metric(self, name: str, **labels: str) -> float:
        """
        The current value of one series.
        """
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"metrics\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.startswith(b"metrics "), line
        for sampleName, sampleLabels, value in json.loads(line[8:]):
            if sampleName == name and sampleLabels == labels:
                return float(value)
        return 0.0

    def rss(self) -> int:
        """
        The hub's resident set size in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        """
        Close its standard input and wait for it to exit.
        """
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def hubFactory() -> Iterator[Any]:
    """
    Start hubs with a configuration; stop them after the test.
    """
    started: list[HubProcess] = []

    def start(**config: Any) -> HubProcess:
        hub = HubProcess(**config)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


def connect(port: int, rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """
    Connect to the hub and read its greeting.

    @return: The socket and the identity the greeting names.
    """
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    greeting = b""
    while not greeting.endswith(b"\n"):
        chunk = s.recv(1)
        assert chunk, "closed before the greeting"
        greeting += chunk
    match = re.match(rb"\* welcome to netdemo pubsub, you are (\S+) ", greeting)
    assert match is not None, greeting
    return s, match.group(1)


def readLines(s: socket.socket, count: int, deadline: float) -> list[bytes]:
    """
    Read until C{count} lines arrived or the deadline passed.
    """
    data = b""
    while data.count(b"\n") < count and time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:-1]


def test_threeClientsThousandLines(hubFactory: Any) -> None:
    """
    Three clients each send 1000 lines at once: each receives exactly the
    other two's 2000 lines, each sender's in order, and never its own.
    """
    hub = hubFactory(hub={"presence": False})
    clients = [connect(hub.port) for _ in range(3)]
    results: dict[int, list[bytes]] = {}

    def run(index: int) -> None:
        s, identity = clients[index]
        s.sendall(b"".join(b"line %d from %s\n" % (i, identity) for i in range(1000)))
        results[index] = readLines(s, 2000, time.monotonic() + 60)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for index, (s, _identity) in enumerate(clients):
        got = results[index]
        assert len(got) == 2000
        for other, (_, otherIdentity) in enumerate(clients):
            fromOther = [
                line for line in got if line.startswith(b"<" + otherIdentity + b"> ")
            ]
            if other == index:
                assert fromOther == []
            else:
                assert fromOther == [
                    b"<%s> line %d from %s" % (otherIdentity, i, otherIdentity)
                    for i in range(1000)
                ]
        s.close()


def test_stalledSubscriberHundredMegabytes(hubFactory: Any) -> None:
    """
    With C{maxPending} 1 MiB, a subscriber that never reads (tiny receive
    buffer) while a publisher sends 100 MB in 1 KiB lines is disconnected
    within 2 s of stalling; the hub's RSS grows by at most 32 MB; two
    reading subscribers receive every line, in order, intact; the
    slow-consumer counter rises by exactly 1.
    """
    hub = hubFactory(
        hub={"presence": False, "maxPending": 1 << 20, "writeDeadline": 0},
        limits={"idleTimeout": 0},
    )
    readers = [connect(hub.port) for _ in range(2)]
    stalled, _ = connect(hub.port, rcvbuf=4096)
    publisher, identity = connect(hub.port)
    lineCount = 100 * 1024
    prefix = b"<" + identity + b"> "

    def text(i: int) -> bytes:
        head = b"%08d " % (i,)
        return head + b"." * (1023 - len(head))

    expected = hashlib.sha256()
    expectedSize = 0
    blocks = []
    for start in range(0, lineCount, 256):
        block = b"".join(text(i) + b"\n" for i in range(start, start + 256))
        blocks.append(block)
        delivered = prefix + block[:-1].replace(b"\n", b"\n" + prefix) + b"\n"
        expected.update(delivered)
        expectedSize += len(delivered)

    digests: dict[int, tuple[str, int]] = {}

    def read(index: int) -> None:
        s = readers[index][0]
        h = hashlib.sha256()
        size = 0
        s.settimeout(60)
        while size < expectedSize:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
        digests[index] = (h.hexdigest(), size)

    baseline = hub.rss()
    peak = [baseline]
    stalledAt: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], hub.rss())
            if not stalledAt and hub.metric(
                "netdemo_refused_total", service="pubsub", reason="slow-consumer"
            ):
                stalledAt.append(time.monotonic())
            time.sleep(0.02)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    watcher = threading.Thread(target=watch)
    for t in threads:
        t.start()
    started = time.monotonic()
    watcher.start()
    for block in blocks:
        publisher.sendall(block)
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(10)

    assert stalledAt, "the stalled subscriber was not disconnected"
    assert stalledAt[0] - started < 2.0
    assert peak[0] - baseline <= 32 * 1024 * 1024, (baseline, peak[0])
    for index in range(2):
        assert digests[index] == (expected.hexdigest(), expectedSize)
    assert (
        hub.metric("netdemo_refused_total", service="pubsub", reason="slow-consumer")
        == 1
    )
    with pytest.raises(OSError):
        stalled.settimeout(10)
        while stalled.recv(1 << 16):
            pass
        raise ConnectionResetError("closed without a reset")
    for s, _ in [*readers, (publisher, b"")]:
        s.close()
    stalled.close()


def test_dropOldestCountsEveryLine(hubFactory: Any) -> None:
    """
    With the drop-oldest policy, a subscriber that stops reading while 30 MB
    are published stays connected, the hub's RSS stays bounded, and once it
    reads again the lines it gets plus the drops it is told about account
    for every line published, in order.
    """
    hub = hubFactory(
        hub={"presence": False, "maxPending": 1 << 20, "slowPolicy": "drop-oldest"},
        limits={"idleTimeout": 0},
    )
    stalled, _ = connect(hub.port, rcvbuf=4096)
    publisher, identity = connect(hub.port)
    lineCount = 30 * 1024
    baseline = hub.rss()
    peak = baseline
    for start in range(0, lineCount, 256):
        publisher.sendall(
            b"".join(b"%08d %s\n" % (i, b"." * 1014) for i in range(start, start + 256))
        )
        if start % 4096 == 0:
            peak = max(peak, hub.rss())
    publisher.sendall(b"/ping\n")
    assert readLines(publisher, 1, time.monotonic() + 60) == [b"+OK pong"]
    peak = max(peak, hub.rss())
    assert peak - baseline <= 32 * 1024 * 1024, (baseline, peak)

    prefix = b"<" + identity + b"> "
    numbers: list[int] = []
    dropped = 0
    data = b""
    stalled.settimeout(5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = stalled.recv(1 << 20)
        except TimeoutError:
            break
        assert chunk, "the subscriber was disconnected"
        data += chunk
        cut = data.rfind(b"\n") + 1
        for line in data[:cut].split(b"\n")[:-1]:
            if line.startswith(prefix):
                assert line[len(prefix) + 8 :] == b" " + b"." * 1014
                numbers.append(int(line[len(prefix) : len(prefix) + 8]))
            else:
                match = re.match(rb"\* dropped (\d+) lines \(slow consumer\)$", line)
                assert match is not None, line
                dropped += int(match.group(1))
        data = data[cut:]
        if numbers and numbers[-1] == lineCount - 1:
            break
    assert dropped > 0
    assert numbers == sorted(numbers)
    assert len(numbers) + dropped == lineCount
    assert hub.metric("netdemo_pubsub_dropped_lines_total", service="pubsub") == dropped
    publisher.close()
    stalled.close()


def test_writeDeadline(hubFactory: Any) -> None:
    """
    With C{writeDeadline} 3 s, a subscriber reading 10 KB/s while the
    publisher sends 1 MB/s is disconnected after at least 3 s and before
    6 s.
    """
    hub = hubFactory(
        hub={"presence": False, "writeDeadline": 3.0, "maxPending": 64 << 20},
        limits={"idleTimeout": 0},
    )
    slow, _ = connect(hub.port, rcvbuf=16384)
    publisher, _ = connect(hub.port)
    stop = threading.Event()
    line = b"x" * 1023 + b"\n"

    def publish() -> None:
        next = time.monotonic()
        while not stop.is_set():
            publisher.sendall(line * 10)
            next += 0.01
            time.sleep(max(0.0, next - time.monotonic()))

    started = time.monotonic()
    thread = threading.Thread(target=publish)
    thread.start()
    closedAt = None
    try:
        slow.settimeout(1)
        while time.monotonic() - started < 10:
            try:
                if not slow.recv(1000):
                    closedAt = time.monotonic()
                    break
            except TimeoutError:
                pass
            except OSError:
                closedAt = time.monotonic()
                break
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert closedAt is not None, "not disconnected within 10 s"
    assert 3.0 <= closedAt - started < 6.0
    assert (
        hub.metric("netdemo_refused_total", service="pubsub", reason="write-deadline")
        == 1
    )
    publisher.close()
    slow.close()


def test_refusedGetsReasonLine(hubFactory: Any) -> None:
    """
    A connection over C{--max-connections} reads one reason line, then the
    end of the stream.
    """
    hub = hubFactory(limits={"maxConnections": 1})
    first, _ = connect(hub.port)
    second = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    data = b""
    while True:
        chunk = second.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data == b"-ERR refused: max-connections\n"
    first.close()
    second.close()


@pytest.mark.skipif(
    shutil.which("nc") is None, reason="nc (netcat-openbsd) is not installed"
)
def test_twistdWithNetcat(tmp_path: Any) -> None:
    """
    C{twistd netdemo --pubsub} serves C{nc}: a line that C{nc} sends (LF
    only) reaches a subscriber, and C{/ping} is answered.
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [
            twistd,
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            "netdemo",
            "--pubsub",
            "tcp:0:interface=127.0.0.1",
        ],
        cwd=tmp_path,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if log.exists():
                match = re.search(
                    r"pubsub: listening on 127\.0\.0\.1:(\d+)", log.read_text()
                )
                if match:
                    port = int(match.group(1))
        assert port is not None, "twistd did not report listening"
        subscriber, _ = connect(port)
        nc = subprocess.run(
            ["nc", "-q", "1", "127.0.0.1", str(port)],
            input=b"hello from nc\n/ping\n",
            capture_output=True,
            timeout=30,
        )
        assert b"+OK pong\n" in nc.stdout
        lines = readLines(subscriber, 3, time.monotonic() + 10)
        assert any(line.endswith(b"> hello from nc") for line in lines), lines
        subscriber.close()
    finally:
        process.terminate()
        process.wait(30)
