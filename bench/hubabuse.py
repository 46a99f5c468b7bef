"""
Hub abuse benchmark: what one client, or many, can make the hub do to
everyone else (issue 11, items 1 to 3).

Every measurement runs against a real C{twistd netdemo} serving the hub
and the TCP echo in one process (pinned to the server CPU); the clients are
helper processes of this file (pinned to the other CPU):

  - C{who}, C{pub}: with C{--clients} idle hub clients connected (5,000),
    one client sends C{--lines} (10,000) C{/who uN} lines, or C{/pub uN x}
    lines, in one go and reads the answers; a pinger measures the echo
    service's round trip every 2 ms meanwhile.  Reported: how long the
    flood took, and the MAXIMUM echo round trip (the target is 50 ms);
  - C{rate}: with the idle clients connected, one client publishes
    C{/pub uN x} over 100 topics, then over 5,000, as fast as a window of
    unanswered lines allows; reported: publishes per second of each (the
    target: 5,000 topics at least half the rate of 100);
  - C{accept}: a fresh hub with presence on (the default) accepts
    C{--clients} clients; reported: the hub's CPU seconds for it (target
    under 3 s), the wall time, and the maximum echo round trip meanwhile
    (target under 50 ms);
  - C{churn}: clients connect, get their first line (hub: the greeting;
    echo: one byte back) and close, C{--concurrency} at a time, for
    C{--churn-seconds}; reported: connections per second, hub and echo.

The floods and C{rate} run with C{--no-presence} so that their set-up
stays quick on code where presence is quadratic; C{accept} is the presence
measurement.  Usage::

    python bench/hubabuse.py [--clients 5000] [--lines 10000]
        [--only who,pub,rate,accept,churn] [--duration 3]

Helper roles (run by the section itself): C{python bench/hubabuse.py hold
PORT N}, C{ping PORT INTERVAL}, C{churn PORT KIND CONCURRENCY SECONDS}.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import subprocess
import sys
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as python bench/hubabuse.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog  # noqa: E402
from bench.harness import Harness, Section  # noqa: E402
from bench.launch import BenchError, Server, pinned  # noqa: E402

#: The arguments C{bench/run.py --quick} runs this section with.
QUICK_ARGS = ["--clients", "1000", "--lines", "2000", "--duration", "1"]

#: The daemon: the hub and the echo, no connection caps, no idle timeout.
DAEMON = [
    "--pubsub", "tcp:0:interface=127.0.0.1:backlog=4096",
    "--tcp", "tcp:0:interface=127.0.0.1:backlog=4096",
    "--max-per-peer", "0", "--max-connections", "0", "--idle-timeout", "0",
]  # fmt: skip

#: Loopback source addresses the churn spreads its connections over, so
#: that connections closed by the client (TIME_WAIT) do not use up one
#: address's ephemeral ports.
SOURCES = 8

#: Seconds any helper or flood may take.
PATIENCE = 600.0


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this benchmark.
    """
    parser.add_argument("--only", default="who,pub,rate,accept,churn")
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds per publish rate"
    )
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--churn-seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--ping-interval", type=float, default=0.002)


# ---------------------------------------------------------------------------
# Helper processes


def hold(port: int, count: int) -> None:
    """
    Role C{hold}: open C{count} hub clients, print C{{"ready": N,
    "seconds": S}} once each got its greeting, then read (and forget)
    whatever comes until standard input closes.
    """
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    greeted = 0
    opened = 0
    inFlight = 0
    socks: list[socket.socket] = []
    while greeted < count:
        while opened < count and inFlight < 256:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            selector.register(s, selectors.EVENT_READ, False)
            socks.append(s)
            opened += 1
            inFlight += 1
        for key, _ in selector.select(1.0):
            sock: Any = key.fileobj
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                raise SystemExit(f"hold: a connection closed ({greeted} greeted)")
            if not key.data:
                selector.modify(sock, selectors.EVENT_READ, True)
                greeted += 1
                inFlight -= 1
        if time.monotonic() - started > PATIENCE:
            raise SystemExit(f"hold: {greeted} of {count} greeted in time")
    print(json.dumps({"ready": greeted, "seconds": time.monotonic() - started}))
    sys.stdout.flush()
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                return
            sock = key.fileobj
            try:
                sock.recv(65536)
            except OSError:
                selector.unregister(sock)


def ping(port: int, interval: float) -> None:
    """
    Role C{ping}: send one byte to the echo every C{interval} seconds and
    time its return, until standard input closes; then print the round
    trips' count, maximum and percentiles (ms).
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times: list[float] = []
    while not select.select([sys.stdin], [], [], interval)[0]:
        start = time.perf_counter()
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise SystemExit("ping: the echo closed")
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    result = {"count": len(times), "max_ms": times[-1] if times else None}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        result[name] = times[int(q * (len(times) - 1))] if times else None
    print(json.dumps(result))


def churn(port: int, kind: str, concurrency: int, seconds: float) -> None:
    """
    Role C{churn}: keep C{concurrency} connections being opened, served
    once (C{hub}: a greeting line; C{echo}: one byte back) and closed, for
    C{seconds}; print how many completed.
    """
    selector = selectors.DefaultSelector()
    done = errors = opened = 0
    start = time.monotonic()

    def openOne() -> None:
        nonlocal opened
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.0.{1 + opened % SOURCES}", 0))
        opened += 1
        s.connect_ex(("127.0.0.1", port))
        selector.register(s, selectors.EVENT_WRITE, b"")

    for _ in range(concurrency):
        openOne()
    while time.monotonic() - start < seconds:
        for key, events in selector.select(1.0):
            sock: Any = key.fileobj
            if events & selectors.EVENT_WRITE:
                if kind == "echo":
                    sock.send(b"x")
                selector.modify(sock, selectors.EVENT_READ, b"")
                continue
            try:
                data = key.data + sock.recv(4096)
            except OSError:
                data = b""
                errors += 1
            finished = not data or (b"\n" in data if kind == "hub" else True)
            if not finished:
                selector.modify(sock, selectors.EVENT_READ, data)
                continue
            if data:
                done += 1
            else:
                errors += 1
            selector.unregister(sock)
            sock.close()
            openOne()
    elapsed = time.monotonic() - start
    print(json.dumps({"completed": done, "errors": errors, "seconds": elapsed}))


ROLES = {
    "hold": lambda a: hold(int(a[0]), int(a[1])),
    "ping": lambda a: ping(int(a[0]), float(a[1])),
    "churn": lambda a: churn(int(a[0]), a[1], int(a[2]), float(a[3])),
}


# ---------------------------------------------------------------------------
# The section


def helper(harness: Harness, role: str, *args: object) -> subprocess.Popen[bytes]:
    """
    Start a helper process of this file on the client CPU.
    """
    argv = [sys.executable, str(Path(__file__).resolve()), role, *map(str, args)]
    return subprocess.Popen(
        pinned(harness.clientCPU, argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def report(process: subprocess.Popen[bytes], stop: bool = True) -> dict[str, Any]:
    """
    The JSON line a helper prints (after closing its standard input, if
    C{stop}).
    """
    assert process.stdin is not None and process.stdout is not None
    if stop:
        process.stdin.close()
    line = process.stdout.readline()
    if not line:
        process.wait(PATIENCE)
        raise BenchError(f"helper {process.args!r} failed ({process.returncode})")
    result: dict[str, Any] = json.loads(line)
    return result


@contextmanager
def holding(harness: Harness, port: int, count: int) -> Iterator[dict[str, Any]]:
    """
    C{count} idle hub clients, connected and greeted while the context is
    open.
    """
    process = helper(harness, "hold", port, count)
    try:
        yield report(process, stop=False)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(60)


@contextmanager
def pinging(harness: Harness, port: int, interval: float) -> Iterator[dict[str, Any]]:
    """
    An echo pinger while the context is open; the dictionary it yields gets
    its report when the context closes.
    """
    process = helper(harness, "ping", port, interval)
    found: dict[str, Any] = {}
    time.sleep(0.2)
    try:
        yield found
    finally:
        found.update(report(process))
        process.wait(60)


def echoPort(server: Server) -> int:
    """
    The port of the daemon's echo, from its C{listening} event.
    """
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"listening"' in line:
            event = json.loads(line)
            if event.get("event") == "listening" and event["service"] == "tcp-echo":
                return int(event["address"].rpartition(":")[2])
    raise BenchError("the daemon did not say where its echo listens")


def start(harness: Harness, presence: bool, log: str) -> Server:
    """
    A fresh daemon: the hub (presence on or off) and the echo.
    """
    options = [*DAEMON, *([] if presence else ["--no-presence"])]
    return harness.start(catalog.netdemo("hub", "pubsub", options), log=log)


def flood(port: int, lines: list[bytes], answer: bytes) -> float:
    """
    Send C{lines} on one connection as fast as the hub reads them, reading
    its answers meanwhile, until as many lines starting with C{answer} came.

    @return: The seconds it took.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    data = b"".join(lines)
    sent = 0
    answers = 0
    buffer = b""
    start = time.monotonic()
    while answers < len(lines):
        if time.monotonic() - start > PATIENCE:
            raise BenchError(f"flood: {answers} of {len(lines)} answers in time")
        readable, writable, _ = select.select(
            [sock], [sock] if sent < len(data) else [], [], 1.0
        )
        if writable:
            sent += sock.send(data[sent : sent + 65536])
        if readable:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise BenchError("flood: the hub closed the connection")
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            answers += sum(1 for line in complete if line.startswith(answer))
    elapsed = time.monotonic() - start
    sock.close()
    return elapsed


def publishRate(
    server: Server, topics: int, duration: float, window: int
) -> dict[str, float]:
    """
    Publish C{/pub uN x} over C{topics} topics (which divide 5,000) for
    C{duration} seconds, keeping at most C{window} lines unanswered.

    @return: Publishes answered per second, and the hub's CPU share.
    """
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.recv(65536)  # the greeting
    batch = 250
    lines = [b"/pub u%d x\n" % (i % topics) for i in range(5000)]
    batches = [b"".join(lines[i : i + batch]) for i in range(0, 5000, batch)]
    n = acked = sent = 0
    cpu = server.cpuSeconds()
    start = time.monotonic()
    while time.monotonic() - start < duration:
        if sent - acked <= window - batch:
            sock.sendall(batches[n % len(batches)])
            n += 1
            sent += batch
            wait = 0.0
        else:
            wait = 1.0
        if select.select([sock], [], [], wait)[0]:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise BenchError("publish: the hub closed the connection")
            acked += chunk.count(b"+OK\n")
    elapsed = time.monotonic() - start
    used = server.cpuSeconds() - cpu
    sock.close()
    return {"rate": acked / elapsed, "server_cpu": used / elapsed}


def measureFloods(
    harness: Harness, options: Namespace, kinds: list[str]
) -> dict[str, Any]:
    """
    The C{/who} and C{/pub} floods and the publish rates, with
    C{--clients} idle clients on one daemon.
    """
    results: dict[str, Any] = {}
    server = start(harness, False, "hubabuse-floods")
    try:
        echo = echoPort(server)
        with holding(harness, server.port, options.clients) as held:
            print(
                f"{options.clients} idle clients connected in {held['seconds']:.1f} s",
                flush=True,
            )
            floods = {
                "who": ([b"/who u%d\n" % i for i in range(options.lines)], b"+OK who"),
                "pub": ([b"/pub u%d x\n" % i for i in range(options.lines)], b"+OK"),
            }
            for kind in ("who", "pub"):
                if kind not in kinds:
                    continue
                lines, answer = floods[kind]
                cpu = server.cpuSeconds()
                with pinging(harness, echo, options.ping_interval) as pings:
                    seconds = flood(server.port, lines, answer)
                results[kind] = {
                    "seconds": seconds,
                    "server_cpu": server.cpuSeconds() - cpu,
                    "echo": pings,
                }
                print(
                    f"{options.lines} /{kind} lines, {options.clients} idle clients: "
                    f"{seconds:.2f} s; echo round trip max {pings['max_ms']:.1f} ms, "
                    f"p99 {pings['p99_ms']:.2f} ms ({pings['count']} pings)",
                    flush=True,
                )
            if "rate" in kinds:
                rates = {
                    topics: publishRate(
                        server, topics, options.duration, options.window
                    )
                    for topics in (100, 5000)
                }
                results["rate"] = rates
                few, many = rates[100], rates[5000]
                print(
                    f"/pub rate, {options.clients} idle clients: "
                    f"{few['rate']:,.0f}/s over 100 topics "
                    f"(hub CPU {few['server_cpu']:.0%}), "
                    f"{many['rate']:,.0f}/s over 5,000 topics "
                    f"(hub CPU {many['server_cpu']:.0%}): "
                    f"{many['rate'] / few['rate']:.2f} of it",
                    flush=True,
                )
    finally:
        server.stop()
    return results


def measureAccept(harness: Harness, options: Namespace) -> dict[str, Any]:
    """
    A fresh hub with presence on accepts C{--clients} clients; the pinger
    stops before they leave (their leaving is C{churn}'s business).
    """
    server = start(harness, True, "hubabuse-accept")
    try:
        echo = echoPort(server)
        cpu = server.cpuSeconds()
        pinger = helper(harness, "ping", echo, options.ping_interval)
        time.sleep(0.2)
        with holding(harness, server.port, options.clients) as held:
            used = server.cpuSeconds() - cpu
            # A coalesced presence notice may still be due.
            time.sleep(1.5)
            pings = report(pinger)
            pinger.wait(60)
    finally:
        server.stop()
    print(
        f"accepting {options.clients} hub clients with presence: "
        f"{used:.2f} s of hub CPU, {held['seconds']:.1f} s; echo round trip max "
        f"{pings['max_ms']:.1f} ms, p99 {pings['p99_ms']:.2f} ms",
        flush=True,
    )
    return {"server_cpu": used, "seconds": held["seconds"], "echo": pings}


def measureChurn(harness: Harness, options: Namespace) -> dict[str, Any]:
    """
    Connections per second the hub and the echo accept, serve once and
    see closed.
    """
    results = {}
    server = start(harness, True, "hubabuse-churn")
    try:
        ports = {"hub": server.port, "echo": echoPort(server)}
        for kind, port in ports.items():
            cpu = server.cpuSeconds()
            process = helper(
                harness, "churn", port, kind, options.concurrency, options.churn_seconds
            )
            r = report(process, stop=False)
            process.wait(60)
            r["rate"] = r["completed"] / r["seconds"]
            r["server_cpu"] = (server.cpuSeconds() - cpu) / r["seconds"]
            results[kind] = r
            print(
                f"churn, {kind}: {r['rate']:,.0f} connections/s "
                f"({r['errors']} errors, hub process CPU {r['server_cpu']:.0%})",
                flush=True,
            )
            time.sleep(1.0)
    finally:
        server.stop()
    return results


def section(harness: Harness, options: Namespace) -> Section:
    """
    Run the measurements asked for; print them.
    """
    kinds = options.only.split(",")
    data: dict[str, Any] = {"clients": options.clients, "lines": options.lines}
    if {"who", "pub", "rate"} & set(kinds):
        data.update(measureFloods(harness, options, kinds))
    if "accept" in kinds:
        data["accept"] = measureAccept(harness, options)
    if "churn" in kinds:
        data["churn"] = measureChurn(harness, options)
    return Section("hubabuse", "Hub under abuse", "", data)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ROLES:
        ROLES[sys.argv[1]](sys.argv[2:])
        sys.exit(0)
    from bench.harness import standalone

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(standalone(sys.modules[__name__]))
