"""
Cross-node fan-out benchmark: two netdemo hubs joined by a Redis backplane
against one hub, in the same run.

  - C{single}: one hub (C{twistd netdemo --pubsub}) with C{2N} subscribers;
  - C{backplane}: hubs A and B, each with C{--backplane redis://...} on one
    C{redis-server}, with C{N} subscribers each (100 by default); the
    publisher is a client of A, so B's subscribers get every line through
    Redis.

Both are measured as in C{bench/fanout.py}, whose load generator this
reuses (subscriber worker processes that count newlines, 64-byte messages):
throughput (deliveries/s over every subscriber, the publisher kept within a
window of the slowest subscriber, which for C{backplane} is one of B's) and
latency at a fixed rate (p50 and p99, for A's and B's subscribers apart).
Needs C{redis-server}; without it, prints why and exits 0.  Usage::

    python bench/backplane.py [--subscribers 100] [--duration 5]
        [--rate 2000] [--workers 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fanout  # noqa: E402
from fanout import (  # noqa: E402
    BATCH,
    TIMERS,
    WINDOW,
    WIRES,
    Server,
    connect,
    drainPublisher,
    freePort,
    payload,
    percentile,
    startWorkers,
    stopWorkers,
    trackerCount,
)

PREFIX = "bench"

#: The arguments C{bench/run.py --quick} passes.
QUICK_ARGS = ["--duration", "1", "--rate", "1000"]


def startHub(logDir: str, name: str, redisPort: int | None) -> Server:
    """
    Start a hub on a free port, joined to the backplane on C{redisPort} if
    given; wait until it listens and, with a backplane, until it is up.
    """
    port = freePort()
    log = os.path.join(logDir, f"{name}.log")
    command = fanout.serverCommand("hub", port)
    assert command is not None
    command = [f"--logfile={log}" if a.startswith("--logfile=") else a for a in command]
    if redisPort is not None:
        command += ["--backplane", f"redis://127.0.0.1:{redisPort}?prefix={PREFIX}"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = Server("hub", port, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = ""
        if os.path.exists(log):
            with open(log) as f:
                text = f.read()
        if "pubsub: listening" in text and (
            redisPort is None or "backplane: connected" in text
        ):
            return server
        if process.poll() is not None:
            break
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"hub {name} did not start: {command}")


def throughput(
    hubs: list[Server], perHub: int, duration: float, workers: int
) -> dict[str, Any]:
    """
    Publish on the first hub as fast as the window allows; count the
    deliveries to C{perHub} subscribers on each hub.
    """
    wire = WIRES["hub"]
    groups = []
    for i, hub in enumerate(hubs):
        # The tracking subscriber is one of the last hub's.
        count = perHub - 1 if i == len(hubs) - 1 else perHub
        groups.append(startWorkers(hub, count, workers, 0, None))
    pub = connect(hubs[0].port, wire, wire.publishHello, wire.publishReady)
    tracker = connect(hubs[-1].port, wire, wire.subscribe, wire.ready)
    time.sleep(0.3)
    progress = [procs[0][2] for procs in groups]

    def slowest(received: int) -> int:
        return min(received, *(min(p[:]) for p in progress))

    batch = b"".join(wire.encode(payload(0)) for _ in range(BATCH))
    published = received = 0
    trackerLines = [0]
    start = time.monotonic()
    end = start + duration
    out = b""
    while True:
        if time.monotonic() >= end and not out:
            break
        if not out and published - slowest(received) < WINDOW:
            out = batch
            published += BATCH
        readable, writable, _ = select.select(
            [tracker, pub], [pub] if out else [], [], 0.05
        )
        if tracker in readable:
            data = tracker.recv(1 << 18)
            if not data:
                break
            received = trackerCount(tracker, data, wire, trackerLines)
        if pub in readable:
            drainPublisher(pub)
        if out and pub in writable:
            with contextlib.suppress(BlockingIOError):
                out = out[pub.send(out) :]
    settle = time.monotonic() + 10
    while slowest(received) < published and time.monotonic() < settle:
        readable, _, _ = select.select([tracker, pub], [], [], 0.1)
        if tracker in readable:
            data = tracker.recv(1 << 18)
            if not data:
                break
            received = trackerCount(tracker, data, wire, trackerLines)
        if pub in readable:
            drainPublisher(pub)
    time.sleep(1.0)
    reports = [r for procs in groups for r in stopWorkers(procs)]
    last = max([r["last"] for r in reports] + [time.monotonic() - 1.0])
    delivered = received + sum(r["messages"] for r in reports)
    subscribers = perHub * len(hubs)
    pub.close()
    tracker.close()
    elapsed = last - start
    return {
        "hubs": len(hubs),
        "subscribers": subscribers,
        "published": published,
        "delivered": delivered,
        "lost": published * subscribers - delivered,
        "disconnected": sum(r["closed"] for r in reports),
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
    }


def latency(
    hubs: list[Server], perHub: int, rate: float, duration: float, workers: int
) -> dict[str, Any]:
    """
    Publish on the first hub at C{rate}, one message per write; measure the
    delays on each hub's subscribers.
    """
    wire = WIRES["hub"]
    groups = [startWorkers(hub, perHub, workers, TIMERS, None) for hub in hubs]
    pub = connect(hubs[0].port, wire, wire.publishHello, wire.publishReady)
    time.sleep(0.3)
    count = int(rate * duration)
    start = time.monotonic()
    for i in range(count):
        gap = start + i / rate - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        data = wire.encode(payload(time.monotonic_ns()))
        while data:
            try:
                data = data[pub.send(data) :]
            except BlockingIOError:
                select.select([], [pub], [], 0.1)
        if i % 64 == 0:
            drainPublisher(pub)
    time.sleep(1.0)
    result: dict[str, Any] = {
        "hubs": len(hubs),
        "subscribers": perHub * len(hubs),
        "rate": rate,
        "published": count,
    }
    delivered = 0
    for name, procs in zip("AB", groups, strict=False):
        reports = stopWorkers(procs)
        delays = [d for r in reports for d in r["delays"]]
        delivered += sum(r["messages"] for r in reports)
        result[f"p50_ms_{name}"] = percentile(delays, 0.50)
        result[f"p99_ms_{name}"] = percentile(delays, 0.99)
    pub.close()
    result["lost"] = count * perHub * len(hubs) - delivered
    return result


def startRedis() -> Server | None:
    """
    Start C{redis-server} on a free port, or return C{None} when missing.
    """
    if shutil.which("redis-server") is None:
        return None
    return fanout.startServer("redis", None)


def run(
    perHub: int, duration: float, rate: float, workers: int
) -> list[dict[str, Any]]:
    """
    Measure both set-ups; return the results.
    """
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as logDir:
        for setup in ("single", "backplane"):
            for kind in ("throughput", "latency"):
                redis = startRedis() if setup == "backplane" else None
                if setup == "backplane":
                    assert redis is not None
                    hubs = [
                        startHub(logDir, f"{setup}-{kind}-{n}", redis.port)
                        for n in "AB"
                    ]
                    n, w = perHub, workers
                else:
                    hubs = [startHub(logDir, f"{setup}-{kind}", None)]
                    n, w = 2 * perHub, 2 * workers
                try:
                    if kind == "throughput":
                        r = throughput(hubs, n, duration, w)
                    else:
                        r = latency(hubs, n, rate, duration, w)
                finally:
                    for hub in hubs:
                        hub.stop()
                    if redis is not None:
                        redis.stop()
                r["setup"] = setup
                results.append(r)
                print(describe(r), flush=True)
    return results


def describe(r: dict[str, Any]) -> str:
    """
    One line for a result.
    """
    head = f"{r['setup']:9} {r['hubs']} hub(s), {r['subscribers']} subscribers:"
    if "deliveries_per_s" in r:
        return (
            f"{head} {r['deliveries_per_s'] / 1e6:6.3f} M deliveries/s, "
            f"lost {r['lost']}, disconnected {r['disconnected']}"
        )
    text = f"{head} at {r['rate']:.0f}/s: p50/p99 A {r['p50_ms_A']:.2f}/"
    text += f"{r['p99_ms_A']:.2f} ms"
    if "p99_ms_B" in r:
        text += f", B (through Redis) {r['p50_ms_B']:.2f}/{r['p99_ms_B']:.2f} ms"
    return text + f", lost {r['lost']}"


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and print the results and the ratios.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--subscribers", type=int, default=100, help="per hub")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="subscriber processes per hub"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("backplane: redis-server is not installed, skipped")
        return 0
    results = run(args.subscribers, args.duration, args.rate, args.workers)
    byKey = {(r["setup"], "deliveries_per_s" in r): r for r in results}
    single, joined = byKey[("single", True)], byKey[("backplane", True)]
    print("\nbackplane / single hub:")
    if single["deliveries_per_s"]:
        ratio = joined["deliveries_per_s"] / single["deliveries_per_s"]
        print(f"  deliveries/s: {ratio:5.2f}x")
    singleLatency, joinedLatency = byKey[("single", False)], byKey[("backplane", False)]
    if singleLatency["p99_ms_A"]:
        for name in "AB":
            ratio = joinedLatency[f"p99_ms_{name}"] / singleLatency["p99_ms_A"]
            print(f"  p99 latency, hub {name}: {ratio:5.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
