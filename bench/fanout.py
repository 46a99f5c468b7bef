"""
Fan-out benchmark: one publisher, many subscribers, 64-byte messages.

Servers measured in the same run (each on one core when C{taskset} is
available; the load generator gets the other cores):

  - C{hub}: netdemo's pub/sub hub (C{twistd netdemo --pubsub}), plain lines
    to the default topic;
  - C{hub-auth}: the same with C{--hub-auth} (every publish and
    subscription checked against rules; asked for by name, not in the
    default list);
  - C{tutorial}: the tutorial Twisted chat (C{bench/servers/tutorial_chat.py});
  - C{nats}: C{nats-server} with C{GOMAXPROCS=1}, when installed;
  - C{redis}: C{redis-server} C{PUBLISH}/C{SUBSCRIBE}, when installed.

Two measurements per server, each on a fresh server:

  - throughput, with 100 and 1000 subscribers: the publisher sends as fast
    as a bounded in-flight window allows (the window is tracked by one extra
    subscriber in the publisher's process); deliveries/s counts every
    message every subscriber received, and loss is what some subscriber
    never got (slow-consumer disconnects);
  - latency at a fixed rate (2000 messages/s by default, 100 subscribers):
    each message carries its send time (C{CLOCK_MONOTONIC}, shared by the
    processes) and a few subscribers compute the p50 and p99 delay.

The load generator is C{bench/pubsubload.py}.  Usage::

    python bench/fanout.py [--servers hub,tutorial,nats,redis]
        [--subscribers 100,1000] [--duration 5] [--rate 2000] [--workers 2]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as python bench/fanout.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog, pubsubload  # noqa: E402
from bench.harness import SERVER_CPU, Harness, Section, percentile  # noqa: E402
from bench.launch import Server, Unavailable  # noqa: E402

#: The arguments C{bench/run.py --quick} runs this section with.
QUICK_ARGS = ["--duration", "2", "--subscribers", "100"]


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this benchmark.
    """
    parser.add_argument("--servers", default="hub,tutorial,nats,redis")
    parser.add_argument("--subscribers", default="100,1000")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--latency-subscribers", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--window",
        type=int,
        default=pubsubload.WINDOW,
        help="messages in flight to the slowest subscriber",
    )
    parser.add_argument(
        "--server-cpu",
        default=None,
        help="CPU the server is pinned to ('' for no pinning; default: the "
        "harness's server CPU)",
    )


def throughput(
    server: Server,
    subscribers: int,
    duration: float,
    workers: int,
    cpus: set[int] | None,
    window: int = pubsubload.WINDOW,
    probe: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """
    Publish as fast as the in-flight window allows; count deliveries.

    @param probe: Called just before and just after the flood: the result
        has the difference as C{probed} (the server's RSS, say).
    """
    wire = pubsubload.WIRES[server.name]
    group = pubsubload.subscribe(
        server.port, server.name, subscribers - 1, workers, 0, cpus
    )
    pub = pubsubload.publisher(server.port, wire)
    tracker = pubsubload.Tracker(pubsubload.subscriber(server.port, wire), wire)
    time.sleep(0.3)
    probed = probe() if probe else 0.0
    serverCpu = server.cpuSeconds()
    ownCpu = time.process_time()
    done = pubsubload.flood(pub, tracker, [group], duration, window)
    if probe:
        probed = probe() - probed
    serverCpu = server.cpuSeconds() - serverCpu
    ownCpu = time.process_time() - ownCpu
    time.sleep(1.0)
    reports = group.stop()
    pub.close()
    tracker.socket.close()
    last = max([r["last"] for r in reports] + [done.trackerLast])
    counts = pubsubload.tally(done, reports, subscribers, last)
    elapsed = counts["seconds"]
    return {
        "server": server.name,
        **counts,
        "probed": probed,
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
    cpus: set[int] | None,
) -> dict[str, Any]:
    """
    Publish at a fixed rate, one message per write; measure delays.
    """
    wire = pubsubload.WIRES[server.name]
    group = pubsubload.subscribe(
        server.port, server.name, subscribers, workers, pubsubload.TIMERS, cpus
    )
    pub = pubsubload.publisher(server.port, wire)
    time.sleep(0.3)
    count = pubsubload.publishAtRate(pub, wire, rate, duration)
    time.sleep(1.0)
    reports = group.stop()
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


@contextmanager
def runningOn(cpus: set[int] | None) -> Iterator[None]:
    """
    Run this process (the publisher) on C{cpus} meanwhile; give its CPUs
    back afterwards (C{bench/run.py} runs this section in-process).
    """
    affinity = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)


def section(harness: Harness, options: Namespace) -> Section:
    """
    Measure every server asked for; print the results and the ratios.
    """
    serverCpu: int | None | str = SERVER_CPU
    if options.server_cpu is not None:
        serverCpu = int(options.server_cpu) if options.server_cpu else None
    pin = harness.serverCPU if serverCpu == SERVER_CPU else serverCpu
    loadCpus = None
    if pin is not None:
        loadCpus = set(os.sched_getaffinity(0)) - {pin} or None
    sizes = [int(n) for n in options.subscribers.split(",") if n]
    results: list[dict[str, Any]] = []
    with runningOn(loadCpus):
        for name in options.servers.split(","):
            try:
                spec = catalog.pubsub(name)
            except Unavailable as reason:
                print(reason, flush=True)
                continue
            for n in sizes:
                # A fresh server per measurement: no leftover state.
                server = harness.start(spec, serverCpu, log=f"{name}-{n}")
                try:
                    r = throughput(
                        server, n, options.duration, options.workers, loadCpus,
                        options.window,
                    )  # fmt: skip
                finally:
                    server.stop()
                results.append(r)
                print(
                    f"{name:9} {n:5} subscribers: "
                    f"{r['deliveries_per_s'] / 1e6:6.2f} M deliveries/s, "
                    f"lost {r['lost']}, disconnected {r['disconnected']}, "
                    f"CPU server {r['server_cpu']:.0%} "
                    f"load generator {r['loadgen_cpu']:.0%}",
                    flush=True,
                )
            if not options.rate:
                continue
            server = harness.start(spec, serverCpu, log=f"{name}-latency")
            try:
                r = latency(
                    server, options.latency_subscribers, options.rate,
                    options.duration, options.workers, loadCpus,
                )  # fmt: skip
            finally:
                server.stop()
            results.append(r)
            print(
                f"{name:9} {options.latency_subscribers:5} subscribers at "
                f"{options.rate:.0f}/s: p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, lost {r['lost']}",
                flush=True,
            )
    printRatios(results)
    return Section("fanout", "Fan-out", "", {"results": results})


def printRatios(results: list[dict[str, Any]]) -> None:
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
        if r["server"] in ("hub", "hub-auth"):
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

    auth = [r for r in results if r["server"] == "hub-auth" and "deliveries_per_s" in r]
    if auth:
        print(
            "\nhub-auth / hub, medians of the runs (deliveries/s; issue 14: at "
            "least 0.90x):"
        )
    for n in sorted({r["subscribers"] for r in auth}):
        plain = [
            r["deliveries_per_s"]
            for r in results
            if r["server"] == "hub"
            and r.get("subscribers") == n
            and "deliveries_per_s" in r
        ]
        checked = [r["deliveries_per_s"] for r in auth if r["subscribers"] == n]
        if plain and statistics.median(plain):
            ratio = statistics.median(checked) / statistics.median(plain)
            print(
                f"  at {n:5} subscribers: {ratio:5.2f}x "
                f"({len(checked)} and {len(plain)} runs)"
            )


if __name__ == "__main__":
    from bench.harness import standalone

    sys.exit(standalone(sys.modules[__name__]))
