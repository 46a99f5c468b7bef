"""
WebSocket fan-out benchmark: 100 browser-like WebSocket subscribers of the
hub (C{/hub/ws} on C{--http}, text and JSON modes) against the same number
of TCP subscribers of the same hub, one publisher on TCP.

For each kind of subscriber, on a fresh C{twistd netdemo --pubsub --http}
(on the server CPU): the subscribers connect (in worker processes on the
other CPUs, each reading its sockets with C{epoll} and counting a marker
byte that only the payload has), the publisher sends 64-byte lines in
batches, each batch once a tracking TCP subscriber got the previous one,
for C{--duration} seconds.  Reported: deliveries per second, the server's
CPU seconds per million deliveries, and their ratio to TCP (what a
browser subscriber costs the daemon compared with an C{nc} one); lost and
cut subscribers (the slow-consumer policy applies to both).

Usage::

    python bench/webfanout.py [--subscribers 100] [--duration 5]
        [--modes tcp,text,json] [--workers 1]
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import selectors
import socket
import statistics
import sys
import time
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as python bench/webfanout.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog  # noqa: E402
from bench.harness import SERVER_CPU, Harness, Section  # noqa: E402
from bench.launch import Server  # noqa: E402

#: The arguments C{bench/run.py --quick} runs this section with.
QUICK_ARGS = ["--duration", "2", "--repeat", "1"]

#: The two bytes of a delivery that only the payload has (no frame header
#: of these sizes holds them): counting them counts deliveries, in C,
#: whatever the framing.
MARK = b"~^"

#: A published line: 64 bytes with the mark.
LINE = MARK + b"x" * 62

#: Lines per publisher batch.
BATCH = 50

#: Lines the slowest worker's subscribers may be behind the publisher (well
#: within --max-pending: the load generator, not the policy, sets the pace).
WINDOW = 400

PATHS = {"text": "/hub/ws", "json": "/hub/ws?format=json"}


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this benchmark.
    """
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--modes", default="tcp,text,json")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)


def freePort() -> int:
    """
    A loopback port free now (for C{--http}, whose port the harness does not
    read back).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def connect(kind: str, hubPort: int, httpPort: int) -> socket.socket:
    """
    One subscriber: a TCP hub client, or a WebSocket after its handshake.
    """
    if kind == "tcp":
        sock = socket.create_connection(("127.0.0.1", hubPort))
        sock.setblocking(False)
        return sock
    sock = socket.create_connection(("127.0.0.1", httpPort))
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % (PATHS[kind].encode(), httpPort, key)
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError("the WebSocket handshake failed")
        head += data
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    sock.setblocking(False)
    return sock


def worker(
    kind: str,
    hubPort: int,
    httpPort: int,
    count: int,
    cpus: Any,
    pipe: Any,
    progress: Any,
    index: int,
) -> None:
    """
    Hold C{count} subscribers, count the marks they read (in
    C{progress[index]} as they come) until told to stop; send back (marks,
    closed sockets, CPU seconds).
    """
    if cpus:
        os.sched_setaffinity(0, cpus)
    selector = selectors.DefaultSelector()
    socks = [connect(kind, hubPort, httpPort) for _ in range(count)]
    last = {}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
        last[sock] = b""
    pipe.send("ready")
    marks = closed = 0
    start = time.process_time()
    stopping = False
    quiet = 0.0
    while True:
        if not stopping and pipe.poll():
            pipe.recv()
            stopping = True
            quiet = time.monotonic() + 1.0
        if stopping and time.monotonic() > quiet:
            break
        for key, _ in selector.select(0.05):
            reader: Any = key.fileobj
            try:
                data = reader.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(reader)
                closed += 1
                continue
            # A mark may straddle two reads: keep one byte.
            marks += (last[reader] + data).count(MARK)
            last[reader] = data[-1:]
        progress[index] = marks
    pipe.send((marks, closed, time.process_time() - start))
    for sock in socks:
        sock.close()


def measure(
    server: Server,
    kind: str,
    httpPort: int,
    subscribers: int,
    duration: float,
    workers: int,
    cpus: set[int] | None,
) -> dict[str, Any]:
    """
    One run: C{subscribers} of C{kind}, the publisher flooding in tracked
    batches for C{duration} seconds.
    """
    context = multiprocessing.get_context("fork")
    pipes = []
    processes = []
    share = [
        subscribers // workers + (i < subscribers % workers) for i in range(workers)
    ]
    progress = context.Array("q", workers, lock=False)
    for index, n in enumerate(share):
        mine, theirs = context.Pipe()
        process = context.Process(
            target=worker,
            args=(kind, server.port, httpPort, n, cpus, theirs, progress, index),
        )
        process.start()
        pipes.append(mine)
        processes.append(process)
    for pipe in pipes:
        if pipe.recv() != "ready":
            raise RuntimeError("a worker failed")
    publisher = socket.create_connection(("127.0.0.1", server.port))
    tracker = socket.create_connection(("127.0.0.1", server.port))
    time.sleep(0.5)
    batch = b"".join(LINE + b"\n" for _ in range(BATCH))
    published = 0
    tracked = 0
    serverCpu = server.cpuSeconds()
    started = time.monotonic()
    while time.monotonic() - started < duration:
        behind = published - WINDOW
        while any(progress[i] < behind * n for i, n in enumerate(share)):
            time.sleep(0.0002)
        publisher.sendall(batch)
        published += BATCH
        while tracked < published:
            data = tracker.recv(262144)
            if not data:
                raise RuntimeError("the tracker was cut")
            tracked += data.count(MARK)
    elapsed = time.monotonic() - started
    serverCpu = server.cpuSeconds() - serverCpu
    for pipe in pipes:
        pipe.send("stop")
    reports = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join(10)
    publisher.close()
    tracker.close()
    delivered = sum(r[0] for r in reports)
    return {
        "kind": kind,
        "subscribers": subscribers,
        "published": published,
        "delivered": delivered,
        "lost": published * subscribers - delivered,
        "cut": sum(r[1] for r in reports),
        "seconds": elapsed,
        "deliveries_per_s": delivered / elapsed,
        "server_cpu_s": serverCpu,
        "cpu_ns_per_delivery": serverCpu / delivered * 1e9 if delivered else 0.0,
    }


def section(harness: Harness, options: Namespace) -> Section:
    """
    Each kind of subscriber on a fresh daemon, C{--repeat} times,
    alternating; medians and ratios to TCP.
    """
    pin = harness.serverCPU
    loadCpus = None
    if pin is not None:
        loadCpus = set(os.sched_getaffinity(0)) - {pin} or None
    kinds = [k for k in options.modes.split(",") if k]
    results: list[dict[str, Any]] = []
    for attempt in range(options.repeat):
        for kind in kinds:
            httpPort = freePort()
            spec = catalog.netdemo(
                "hub",
                "pubsub",
                [
                    *catalog.HUB,
                    "--http",
                    f"tcp:{httpPort}:interface=127.0.0.1",
                    "--http-hub-streams",
                    str(options.subscribers + 10),
                ],
            )
            server = harness.start(spec, SERVER_CPU, log=f"webfanout-{kind}-{attempt}")
            try:
                r = measure(
                    server, kind, httpPort, options.subscribers, options.duration,
                    options.workers, loadCpus,
                )  # fmt: skip
            finally:
                server.stop()
            results.append(r)
            print(
                f"{kind:5} x{options.subscribers}: "
                f"{r['deliveries_per_s'] / 1e3:8.1f} k deliveries/s, "
                f"{r['cpu_ns_per_delivery']:6.0f} ns server CPU per delivery, "
                f"lost {r['lost']}, cut {r['cut']}",
                flush=True,
            )
    rows = []
    medians = {}
    for kind in kinds:
        mine = [r for r in results if r["kind"] == kind]
        medians[kind] = (
            statistics.median(r["deliveries_per_s"] for r in mine),
            statistics.median(r["cpu_ns_per_delivery"] for r in mine),
        )
    tcp = medians.get("tcp")
    for kind, (rate, cpu) in medians.items():
        ratio = f"{cpu / tcp[1]:.2f}x" if tcp and tcp[1] else "-"
        rows.append(f"| {kind} | {rate / 1e3:.0f} k | {cpu:.0f} | {ratio} |")
    markdown = "\n".join(
        [
            f"{options.subscribers} subscribers of one kind, one TCP publisher "
            f"(64-byte lines), medians of {options.repeat} runs of "
            f"{options.duration:g} s:",
            "",
            "| subscribers | deliveries/s | server CPU per delivery (ns) | vs TCP |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print("\n" + markdown, flush=True)
    return Section("webfanout", "WebSocket fan-out", markdown, {"results": results})


if __name__ == "__main__":
    from bench.harness import standalone

    sys.exit(standalone(sys.modules[__name__]))
