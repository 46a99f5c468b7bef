"""
The fan-out load generator of C{bench/fanout.py} and C{bench/backplane.py}:
one publisher, many subscribers, 64-byte messages.

  - L{Wire}: how one server's protocol looks to the load generator (the
    hub, the tutorial chat, NATS, Redis);
  - L{subscribe}: subscriber worker processes, each an C{epoll} loop over
    non-blocking sockets that only counts newlines (and, for a few timing
    sockets, computes each message's delay from the send time it carries,
    C{CLOCK_MONOTONIC}, shared by the processes), so that the load generator
    is not the bottleneck; each keeps the count of its slowest socket in
    shared memory for the publisher's window;
  - L{flood}: publish batches as fast as a window of messages in flight to
    the slowest subscriber allows, then wait until every subscriber caught
    up;
  - L{publishAtRate}: one message per write at a fixed rate, for latency.

Every wait is bounded: connects, handshakes, the settle after a flood, the
workers' reports.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import select
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

PAYLOAD_SIZE = 64
SUBJECT = b"bench"

#: Messages in flight to the slowest subscriber, by default.
WINDOW = 4000
#: Messages per publisher write in a flood.
BATCH = 256
#: Timing sockets of the first worker of a group, for latency.
TIMERS = 8
#: The longest wait for subscribers to catch up after a flood, in seconds.
SETTLE = 10.0
#: The longest a subscriber worker lives, or a wait on one lasts, in seconds
#: (a worker whose parent died stops by itself).
WORKER_LIFETIME = 900.0
#: The most bytes a server may send before its handshake is done.
HANDSHAKE_LIMIT = 65536
#: The longest the publisher waits for the server to take one message.
SEND_PATIENCE = 10.0


@dataclass
class Wire:
    """
    How one server's protocol looks to the load generator.

    @ivar name: Server name in the report.
    @ivar subscribe: Bytes a subscriber sends to subscribe.
    @ivar ready: Bytes that end the subscription handshake (b"" for none).
    @ivar linesPerMessage: Newlines in one delivered message.
    @ivar publishHello: Bytes the publisher sends first.
    @ivar publishReady: Bytes that end the publisher's handshake.
    @ivar encode: One payload -> the bytes that publish it.
    @ivar publisherReplies: Whether the server answers each publish.
    """

    name: str
    subscribe: bytes
    ready: bytes
    linesPerMessage: int
    publishHello: bytes
    publishReady: bytes
    encode: Callable[[bytes], bytes]
    publisherReplies: bool = False


NATS_CONNECT = b'CONNECT {"verbose":false,"pedantic":false}\r\n'

WIRES = {
    "hub": Wire(
        "hub", b"", b"connected)\n", 1, b"", b"connected)\n", lambda p: p + b"\n"
    ),
    # The hub with --hub-auth: the same lines, checked against rules.
    "hub-auth": Wire(
        "hub-auth", b"", b"connected)\n", 1, b"", b"connected)\n", lambda p: p + b"\n"
    ),
    "tutorial": Wire("tutorial", b"", b"", 1, b"", b"", lambda p: p + b"\r\n"),
    # The byte relays of bench/broadcast.py: netdemo's greets with a line
    # ending "connected)", the tutorial's Spreader with one ending "!".
    "broadcast": Wire(
        "broadcast", b"", b"connected)\n", 1, b"", b"connected)\n", lambda p: p + b"\n"
    ),
    "ncat": Wire("ncat", b"", b"", 1, b"", b"", lambda p: p + b"\n"),
    "spreader": Wire("spreader", b"", b"!\n", 1, b"", b"!\n", lambda p: p + b"\n"),
    "nats": Wire(
        "nats",
        NATS_CONNECT + b"SUB " + SUBJECT + b" 1\r\nPING\r\n",
        b"PONG\r\n",
        2,
        NATS_CONNECT + b"PING\r\n",
        b"PONG\r\n",
        lambda p: b"PUB %s %d\r\n%s\r\n" % (SUBJECT, len(p), p),
    ),
    "redis": Wire(
        "redis",
        b"SUBSCRIBE " + SUBJECT + b"\r\n",
        b":1\r\n",
        7,
        b"PING\r\n",
        b"+PONG\r\n",
        lambda p: (
            b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
            % (len(SUBJECT), SUBJECT, len(p), p)
        ),
        publisherReplies=True,
    ),
}


def payload(stamp: int) -> bytes:
    """
    A 64-byte message carrying a send time in nanoseconds.
    """
    head = b"T%019d " % (stamp,)
    return head + b"x" * (PAYLOAD_SIZE - len(head))


def connect(port: int, wire: Wire, hello: bytes, ready: bytes) -> socket.socket:
    """
    Connect to 127.0.0.1:C{port}, send C{hello}, and read until C{ready}
    (blocking, 10 s per read); return the socket non-blocking.
    """
    for attempt in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hello:
        s.sendall(hello)
    seen = b""
    while ready and not seen.endswith(ready):
        chunk = s.recv(1)
        if not chunk or len(seen) > HANDSHAKE_LIMIT:
            raise RuntimeError(f"{wire.name}: no handshake: {seen[-200:]!r}")
        seen += chunk
    s.setblocking(False)
    return s


def publisher(port: int, wire: Wire) -> socket.socket:
    """
    A publisher connection, past its handshake.
    """
    return connect(port, wire, wire.publishHello, wire.publishReady)


def subscriber(port: int, wire: Wire) -> socket.socket:
    """
    A subscriber connection, past its handshake.
    """
    return connect(port, wire, wire.subscribe, wire.ready)


def worker(
    port: int,
    wireName: str,
    count: int,
    timers: int,
    conn: Connection,
    progress: Any,
    slot: int,
) -> None:
    """
    Subscriber process: subscribe C{count} sockets, then count newlines
    until told to stop; the first C{timers} sockets also measure latency.
    C{progress[slot]} is kept at the fewest messages any socket received,
    for the publisher's in-flight window.
    """
    wire = WIRES[wireName]
    socks = [subscriber(port, wire) for _ in range(count)]
    ep = select.epoll()
    byFd: dict[int, int] = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        byFd[s.fileno()] = i
    conn.send("ready")
    cpuStart = time.process_time()
    newlines = 0
    perSocket = [0] * count
    perMessage = wire.linesPerMessage
    pings = wire.name == "nats"
    closed = 0
    last = 0.0
    delays: list[int] = []
    partial: dict[int, bytes] = {}
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    stop = False
    deadline = time.monotonic() + WORKER_LIFETIME
    while not stop and time.monotonic() < deadline:
        if conn.poll():
            stop = conn.recv() == "stop"
        if perSocket:
            progress[slot] = min(perSocket) // perMessage
        for fd, _ in ep.poll(0.05):
            i = byFd[fd]
            try:
                n = socks[i].recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if not n:
                ep.unregister(fd)
                closed += 1
                perSocket[i] = 1 << 60
                continue
            lines = buf.count(b"\n", 0, n)
            if pings and buf.find(b"PING\r\n", 0, n) >= 0:
                # NATS pings new clients; answer, and do not count it.
                lines -= buf.count(b"PING\r\n", 0, n)
                socks[i].sendall(b"PONG\r\n")
            newlines += lines
            perSocket[i] += lines
            last = time.monotonic()
            if i < timers:
                now = time.monotonic_ns()
                data = partial.get(i, b"") + bytes(view[:n])
                cut = data.rfind(b"\n") + 1
                partial[i] = data[cut:]
                for line in data[:cut].split(b"\n"):
                    at = line.find(b"T")
                    if (
                        at >= 0
                        and len(line) >= at + 20
                        and line[at + 1 : at + 20].isdigit()
                    ):
                        delays.append(now - int(line[at + 1 : at + 20]))
    conn.send(
        json.dumps(
            {
                "messages": newlines // wire.linesPerMessage,
                "closed": closed,
                "last": last,
                "delays": delays,
                "cpu": time.process_time() - cpuStart,
            }
        )
    )
    for s in socks:
        s.close()


@dataclass
class Subscribers:
    """
    The subscriber worker processes of one server.

    @ivar workers: Each process and the parent's end of its pipe.
    @ivar progress: Per worker, the messages its slowest socket received.
    """

    workers: list[tuple[BaseProcess, Connection]]
    progress: Any

    def slowest(self) -> int:
        """
        The messages the slowest of these subscribers received so far.
        """
        return int(min(self.progress[:]))

    def stop(self) -> list[dict[str, Any]]:
        """
        Tell the workers to stop and collect their reports.
        """
        for _, parent in self.workers:
            parent.send("stop")
        reports = []
        for _, parent in self.workers:
            if not parent.poll(WORKER_LIFETIME):
                raise RuntimeError("a subscriber worker did not report")
            reports.append(json.loads(parent.recv()))
        for process, _ in self.workers:
            process.join(10)
        return reports


def subscribe(
    port: int,
    wireName: str,
    subscribers: int,
    workers: int,
    timers: int,
    cpus: Collection[int] | None,
) -> Subscribers:
    """
    Start C{workers} processes sharing C{subscribers} subscriptions to
    127.0.0.1:C{port} (the first with C{timers} timing sockets), pinned to
    C{cpus} if given, and wait until every one subscribed.
    """
    progress = mp.Array("q", workers, lock=False)
    started: list[tuple[BaseProcess, Connection]] = []
    share = [
        subscribers // workers + (i < subscribers % workers) for i in range(workers)
    ]
    for i, count in enumerate(share):
        parent, child = mp.Pipe()
        process = mp.Process(
            target=worker,
            args=(port, wireName, count, timers if i == 0 else 0, child, progress, i),
            daemon=True,
        )
        process.start()
        if cpus and process.pid is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(process.pid, cpus)
        started.append((process, parent))
    for _, parent in started:
        if not parent.poll(120):
            raise RuntimeError("a subscriber worker did not get ready")
        parent.recv()
    return Subscribers(started, progress)


def drainPublisher(pub: socket.socket) -> None:
    """
    Read and discard what the server sent the publisher.
    """
    try:
        while pub.recv(1 << 16):
            pass
    except (BlockingIOError, InterruptedError):
        pass


@dataclass
class Tracker:
    """
    One subscriber read by the publisher's process, so that it knows its
    window without waiting for a worker's report.

    @ivar socket: Its connection.
    @ivar wire: The server's protocol.
    @ivar lines: Newlines received so far.
    @ivar last: When it last received something (C{time.monotonic}).
    """

    socket: socket.socket
    wire: Wire
    lines: int = 0
    last: float = 0.0

    @property
    def messages(self) -> int:
        """
        The messages it received so far.
        """
        return self.lines // self.wire.linesPerMessage

    def read(self) -> bool:
        """
        Count what is there (answering NATS pings).

        @return: Whether the connection is still open.
        """
        try:
            data = self.socket.recv(1 << 18)
        except BlockingIOError:
            return True
        if not data:
            return False
        count = data.count(b"\n")
        if self.wire.name == "nats" and b"PING\r\n" in data:
            count -= data.count(b"PING\r\n")
            self.socket.sendall(b"PONG\r\n")
        self.lines += count
        self.last = time.monotonic()
        return True


@dataclass
class Flood:
    """
    What L{flood} did.

    @ivar published: Messages published.
    @ivar tracked: Messages the tracking subscriber received.
    @ivar trackerLast: When the tracking subscriber last received any.
    @ivar start: When publishing started.
    @ivar settled: When every subscriber had caught up (or the wait for it
        ended).
    """

    published: int
    tracked: int
    trackerLast: float
    start: float
    settled: float


def flood(
    pub: socket.socket,
    tracker: Tracker,
    groups: list[Subscribers],
    duration: float,
    window: int,
) -> Flood:
    """
    Publish batches of L{BATCH} messages on C{pub} for C{duration} seconds,
    while fewer than C{window} are in flight to the slowest subscriber
    (C{tracker} or any of C{groups}); then wait, at most L{SETTLE} seconds,
    until every subscriber received every message.
    """
    wire = tracker.wire

    def slowest() -> int:
        return min(tracker.messages, *(group.slowest() for group in groups))

    batch = b"".join(wire.encode(payload(0)) for _ in range(BATCH))
    published = 0
    start = time.monotonic()
    end = start + duration
    out = b""
    while True:
        if time.monotonic() >= end and not out:
            break
        if not out and published - slowest() < window:
            out = batch
            published += BATCH
        readable, writable, _ = select.select(
            [tracker.socket, pub], [pub] if out else [], [], 0.05
        )
        if tracker.socket in readable and not tracker.read():
            break
        if pub in readable:
            drainPublisher(pub)
        if out and pub in writable:
            with contextlib.suppress(BlockingIOError):
                out = out[pub.send(out) :]
    settle = time.monotonic() + SETTLE
    while slowest() < published and time.monotonic() < settle:
        readable, _, _ = select.select([tracker.socket, pub], [], [], 0.1)
        if tracker.socket in readable and not tracker.read():
            break
        if pub in readable:
            drainPublisher(pub)
    return Flood(published, tracker.messages, tracker.last, start, time.monotonic())


def tally(
    done: Flood, reports: list[dict[str, Any]], subscribers: int, last: float
) -> dict[str, Any]:
    """
    The deliveries of a L{flood} to C{subscribers} subscribers (the tracker
    and the workers that sent C{reports}), over the time from its start to
    C{last}.
    """
    seconds = last - done.start
    delivered = done.tracked + sum(r["messages"] for r in reports)
    return {
        "subscribers": subscribers,
        "published": done.published,
        "delivered": delivered,
        "lost": done.published * subscribers - delivered,
        "disconnected": sum(r["closed"] for r in reports),
        "deliveries_per_s": delivered / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
    }


def publishAtRate(pub: socket.socket, wire: Wire, rate: float, duration: float) -> int:
    """
    Publish one message per write, C{rate} a second for C{duration}
    seconds, each carrying its send time.

    @return: The messages published.
    """
    count = int(rate * duration)
    start = time.monotonic()
    for i in range(count):
        gap = start + i / rate - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        data = wire.encode(payload(time.monotonic_ns()))
        patience = time.monotonic() + SEND_PATIENCE
        while data:
            try:
                data = data[pub.send(data) :]
            except BlockingIOError:
                if time.monotonic() > patience:
                    raise RuntimeError(f"{wire.name} stopped reading") from None
                select.select([], [pub], [], 0.1)
        if i % 64 == 0:
            drainPublisher(pub)
    return count
