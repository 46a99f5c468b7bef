"""
Fan-out benchmark: one publisher, many subscribers, 64-byte messages.

Servers measured in the same run (each on one core when C{taskset} is
available; the load generator gets the other cores):

  - C{hub}: netdemo's pub/sub hub (C{twistd netdemo --pubsub}), plain lines
    to the default topic;
  - C{tutorial}: the tutorial Twisted chat (C{bench/chatserver.py});
  - C{nats}: C{nats-server} with C{GOMAXPROCS=1}, when installed;
  - C{redis}: C{redis-server} C{PUBLISH}/C{SUBSCRIBE}, when installed.

Two measurements per server:

  - throughput, with 100 and 1000 subscribers: the publisher sends as fast
    as a bounded in-flight window allows (the window is tracked by one extra
    subscriber in the publisher's process); deliveries/s counts every
    message every subscriber received, and loss is what some subscriber
    never got (slow-consumer disconnects);
  - latency at a fixed rate (2000 messages/s by default, 100 subscribers):
    each message carries its send time (C{CLOCK_MONOTONIC}, shared by the
    processes) and a few subscribers compute the p50 and p99 delay.

The subscribers run in several worker processes, each an C{epoll} loop over
non-blocking sockets that only counts newlines, so that the load generator
is not the bottleneck.  Usage::

    python bench/fanout.py [--servers hub,tutorial,nats,redis]
        [--subscribers 100,1000] [--duration 5] [--rate 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PAYLOAD_SIZE = 64
SUBJECT = b"bench"
#: The arguments C{bench/run.py --quick} runs this section with.
QUICK_ARGS = ["--duration", "2", "--subscribers", "100"]

WINDOW = 4000
BATCH = 256
TIMERS = 8


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
    "tutorial": Wire("tutorial", b"", b"", 1, b"", b"", lambda p: p + b"\r\n"),
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
    Connect, send C{hello}, and read until C{ready} (blocking).
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
        if not chunk:
            raise RuntimeError(f"{wire.name}: closed during the handshake")
        seen += chunk
    s.setblocking(False)
    return s


def worker(
    port: int,
    wireName: str,
    count: int,
    timers: int,
    conn: Any,
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
    socks = [connect(port, wire, wire.subscribe, wire.ready) for _ in range(count)]
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
    while not stop:
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
class Server:
    """
    A running server process.
    """

    name: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """
        Terminate the server and wait for it.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def freePort() -> int:
    """
    A TCP port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serverCommand(name: str, port: int) -> list[str] | None:
    """
    The command line that starts server C{name}, or None when missing.
    """
    if name == "hub":
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        return [
            twistd,
            "-n",
            "--pidfile=",
            "--logfile=/dev/null",
            "netdemo",
            "--pubsub",
            f"tcp:{port}:interface=127.0.0.1:backlog=4096",
            "--no-presence",
            "--max-per-peer",
            "0",
            "--max-connections",
            "0",
        ]
    if name == "tutorial":
        return [sys.executable, os.path.join(HERE, "chatserver.py"), str(port)]
    if name == "nats":
        exe = shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
        )
        return [exe, "-a", "127.0.0.1", "-p", str(port)] if exe else None
    if name == "redis":
        exe = shutil.which("redis-server")
        if exe is None:
            return None
        return [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            "10000",
        ]
    raise ValueError(name)


def startServer(name: str, pin: str | None) -> Server | None:
    """
    Start server C{name} on a free port, pinned to CPU C{pin}.
    """
    port = freePort()
    command = serverCommand(name, port)
    if command is None:
        return None
    if pin is not None and shutil.which("taskset"):
        command = ["taskset", "-c", pin, *command]
    env = dict(os.environ, GOMAXPROCS="1")
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.2)
            return Server(name, port, process)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not start: {command}")


def cpuSeconds(pid: int) -> float:
    """
    CPU time (user + system) a process used so far, from C{/proc}.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[int], fraction: float) -> float:
    """
    The C{fraction} quantile of C{values} (nearest rank), in ms.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def startWorkers(
    server: Server, subscribers: int, workers: int, timers: int, pin: str | None
) -> list[tuple[Any, Any, Any]]:
    """
    Start the subscriber processes and wait until every one subscribed.
    """
    progress = mp.Array("q", workers, lock=False)
    procs = []
    share = [
        subscribers // workers + (i < subscribers % workers) for i in range(workers)
    ]
    for i, count in enumerate(share):
        parent, child = mp.Pipe()
        p = mp.Process(
            target=worker,
            args=(
                server.port,
                server.name,
                count,
                timers if i == 0 else 0,
                child,
                progress,
                i,
            ),
        )
        p.start()
        if pin is not None and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(p.pid, {int(c) for c in pin.split(",")})
        procs.append((p, parent, progress))
    for _, parent, _ in procs:
        if not parent.poll(120):
            raise RuntimeError("a subscriber worker did not get ready")
        parent.recv()
    return procs


def stopWorkers(procs: list[tuple[Any, Any, Any]]) -> list[dict[str, Any]]:
    """
    Tell the workers to stop and collect their reports.
    """
    for _, parent, _ in procs:
        parent.send("stop")
    reports = [json.loads(parent.recv()) for _, parent, _ in procs]
    for p, _, _ in procs:
        p.join(10)
    return reports


def drainPublisher(pub: socket.socket) -> None:
    """
    Read and discard what the server sent the publisher.
    """
    try:
        while pub.recv(1 << 16):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def trackerCount(s: socket.socket, data: bytes, wire: Wire, lines: list[int]) -> int:
    """
    Add a read of the tracking subscriber to its line count (answering
    NATS pings); return the messages it received so far.
    """
    count = data.count(b"\n")
    if wire.name == "nats" and b"PING\r\n" in data:
        count -= data.count(b"PING\r\n")
        s.sendall(b"PONG\r\n")
    lines[0] += count
    return lines[0] // wire.linesPerMessage


def throughput(
    server: Server,
    subscribers: int,
    duration: float,
    workers: int,
    pin: str | None,
    window: int = WINDOW,
) -> dict[str, Any]:
    """
    Publish as fast as the in-flight window allows; count deliveries.
    """
    wire = WIRES[server.name]
    procs = startWorkers(server, subscribers - 1, workers, 0, pin)
    pub = connect(server.port, wire, wire.publishHello, wire.publishReady)
    tracker = connect(server.port, wire, wire.subscribe, wire.ready)
    time.sleep(0.3)
    progress = procs[0][2]
    batch = b"".join(wire.encode(payload(0)) for _ in range(BATCH))
    published = 0
    received = 0
    trackerLines = [0]
    trackerLast = 0.0
    serverCpu = cpuSeconds(server.process.pid)
    ownCpu = time.process_time()
    start = time.monotonic()
    end = start + duration
    out = b""
    while True:
        now = time.monotonic()
        if now >= end and not out:
            break
        if not out and published - min(received, *progress[:]) < window:
            out = batch
            published += BATCH
        wantWrite = [pub] if out else []
        readable, writable, _ = select.select([tracker, pub], wantWrite, [], 0.05)
        if tracker in readable:
            try:
                data = tracker.recv(1 << 18)
            except BlockingIOError:
                data = b"x"
            if not data:
                break
            received = trackerCount(tracker, data, wire, trackerLines)
            trackerLast = time.monotonic()
        if pub in readable:
            drainPublisher(pub)
        if out and pub in writable:
            try:
                sent = pub.send(out)
                out = out[sent:]
            except BlockingIOError:
                pass
    # Let everyone catch up, then collect.
    settle = time.monotonic() + 10
    while min(received, *progress[:]) < published and time.monotonic() < settle:
        readable, _, _ = select.select([tracker, pub], [], [], 0.1)
        if tracker in readable:
            data = tracker.recv(1 << 18)
            if not data:
                break
            received = trackerCount(tracker, data, wire, trackerLines)
            trackerLast = time.monotonic()
        if pub in readable:
            drainPublisher(pub)
    serverCpu = cpuSeconds(server.process.pid) - serverCpu
    ownCpu = time.process_time() - ownCpu
    time.sleep(1.0)
    reports = stopWorkers(procs)
    last = max([r["last"] for r in reports] + [trackerLast])
    delivered = received + sum(r["messages"] for r in reports)
    expected = published * subscribers
    pub.close()
    tracker.close()
    elapsed = last - start
    return {
        "server": server.name,
        "subscribers": subscribers,
        "published": published,
        "delivered": delivered,
        "lost": expected - delivered,
        "disconnected": sum(r["closed"] for r in reports),
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        # Shares of one core over the run (load generator: publisher and
        # subscriber processes together).
        "server_cpu": serverCpu / elapsed if elapsed > 0 else 0.0,
        "loadgen_cpu": (ownCpu + sum(r["cpu"] for r in reports)) / elapsed
        if elapsed > 0
        else 0.0,
    }


def latency(
    server: Server,
    subscribers: int,
    rate: float,
    duration: float,
    workers: int,
    pin: str | None,
) -> dict[str, Any]:
    """
    Publish at a fixed rate, one message per write; measure delays.
    """
    wire = WIRES[server.name]
    procs = startWorkers(server, subscribers, workers, TIMERS, pin)
    pub = connect(server.port, wire, wire.publishHello, wire.publishReady)
    time.sleep(0.3)
    interval = 1.0 / rate
    count = int(rate * duration)
    start = time.monotonic()
    for i in range(count):
        due = start + i * interval
        gap = due - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        data = wire.encode(payload(time.monotonic_ns()))
        while data:
            try:
                data = data[pub.send(data) :]
            except BlockingIOError:
                select.select([], [pub], [], 0.1)
        if wire.publisherReplies and i % 64 == 0:
            drainPublisher(pub)
    time.sleep(1.0)
    reports = stopWorkers(procs)
    pub.close()
    delays = [d for r in reports for d in r["delays"]]
    delivered = sum(r["messages"] for r in reports)
    return {
        "server": server.name,
        "subscribers": subscribers,
        "rate": rate,
        "published": count,
        "lost": count * subscribers - delivered,
        "p50_ms": percentile(delays, 0.50),
        "p99_ms": percentile(delays, 0.99),
    }


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and print a table.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--servers", default="hub,tutorial,nats,redis")
    parser.add_argument("--subscribers", default="100,1000")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--latency-subscribers", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help="messages in flight to the slowest subscriber",
    )
    parser.add_argument(
        "--server-cpu",
        default="0",
        help="CPU the server is pinned to ('' for no pinning)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    serverCpu = args.server_cpu or None
    loadCpus = None
    if serverCpu is not None and cpus > 1:
        loadCpus = ",".join(str(c) for c in range(cpus) if str(c) != serverCpu)
    elif cpus == 1:
        serverCpu = None
    sizes = [int(n) for n in args.subscribers.split(",") if n]
    # Called in-process by bench/run.py: give its CPUs back afterwards.
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if loadCpus and affinity is not None:
        os.sched_setaffinity(0, {int(c) for c in loadCpus.split(",")})
    try:
        return run(args, sizes, serverCpu, loadCpus)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def run(
    args: argparse.Namespace,
    sizes: list[int],
    serverCpu: str | None,
    loadCpus: str | None,
) -> int:
    """
    Measure every server asked for; print the results and the ratios.
    """
    results: list[dict[str, Any]] = []
    for name in args.servers.split(","):
        server = startServer(name, serverCpu)
        if server is None:
            print(f"{name}: not installed, skipped", flush=True)
            continue
        try:
            for n in sizes:
                r = throughput(
                    server, n, args.duration, args.workers, loadCpus, args.window
                )
                results.append(r)
                print(
                    f"{name:9} {n:5} subscribers: "
                    f"{r['deliveries_per_s'] / 1e6:6.2f} M deliveries/s, "
                    f"lost {r['lost']}, disconnected {r['disconnected']}, "
                    f"CPU server {r['server_cpu']:.0%} "
                    f"load generator {r['loadgen_cpu']:.0%}",
                    flush=True,
                )
                # A fresh server per size: no leftover state.
                server.stop()
                server = startServer(name, serverCpu)
                assert server is not None
            if not args.rate:
                continue
            r = latency(
                server,
                args.latency_subscribers,
                args.rate,
                args.duration,
                args.workers,
                loadCpus,
            )
            results.append(r)
            print(
                f"{name:9} {args.latency_subscribers:5} subscribers at "
                f"{args.rate:.0f}/s: p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, lost {r['lost']}",
                flush=True,
            )
        finally:
            server.stop()
    printRatios(results, sizes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def printRatios(results: list[dict[str, Any]], sizes: list[int]) -> None:
    """
    Print the hub's figures as ratios to each reference server.
    """
    hub = {
        r["subscribers"]: r
        for r in results
        if r["server"] == "hub" and "deliveries_per_s" in r
    }
    hubLatency = [r for r in results if r["server"] == "hub" and "p99_ms" in r]
    print("\nhub / reference (deliveries/s; p99 latency):")
    for r in results:
        if r["server"] == "hub":
            continue
        if (
            "deliveries_per_s" in r
            and r["subscribers"] in hub
            and r["deliveries_per_s"]
        ):
            n = r["subscribers"]
            ratio = hub[n]["deliveries_per_s"] / r["deliveries_per_s"]
            print(f"  vs {r['server']:9} at {n:5} subscribers: {ratio:5.2f}x")
        if "p99_ms" in r and hubLatency and r["p99_ms"]:
            ratio = hubLatency[0]["p99_ms"] / r["p99_ms"]
            print(f"  vs {r['server']:9} p99 at {r['rate']:.0f}/s: {ratio:5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
