"""
Cross-node fan-out benchmark: two netdemo hubs joined by a Redis backplane
against one hub, in the same run.

  - C{single}: one hub (C{twistd netdemo --pubsub}) with C{2N} subscribers;
  - C{backplane}: hubs A and B, each with C{--backplane redis://...} on one
    C{redis-server}, with C{N} subscribers each (100 by default); the
    publisher is a client of A, so B's subscribers get every line through
    Redis.  The history is shared (the default): every batch is one script
    call (numbers, C{XADD} per line, C{PUBLISH}), and A's own subscribers
    get a batch once Redis has numbered it;
  - C{plain}: the same with C{--no-backplane-history} (plain C{PUBLISH}).

For C{backplane}, Redis's own accounting (C{INFO commandstats}) gives what
the script costs per line: all of it (C{evalsha}) and its C{XADD}s.

Both are measured with the load generator of C{bench/fanout.py}
(C{bench/pubsubload.py}: subscriber worker processes that count newlines,
64-byte messages): throughput (deliveries/s over every subscriber, the
publisher kept within a window of the slowest subscriber, which for
C{backplane} is one of B's) and latency at a fixed rate (p50 and p99, for
A's and B's subscribers apart).  Every server is started fresh for each
measurement; nothing is pinned.  Needs C{redis-server}; without it, prints
why and exits 0.  Usage::

    python bench/backplane.py [--subscribers 100] [--duration 5]
        [--rate 2000] [--workers 1] [--json FILE]
"""

from __future__ import annotations

import socket
import sys
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as python bench/backplane.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog, pubsubload  # noqa: E402
from bench.harness import Harness, Section, percentile  # noqa: E402
from bench.launch import Server, Unavailable  # noqa: E402

PREFIX = "bench"

#: The arguments C{bench/run.py --quick} passes.
QUICK_ARGS = ["--duration", "1", "--rate", "1000"]

WIRE = pubsubload.WIRES["hub"]


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this benchmark.
    """
    parser.add_argument("--subscribers", type=int, default=100, help="per hub")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="subscriber processes per hub"
    )


def throughput(
    hubs: list[Server], perHub: int, duration: float, workers: int
) -> dict[str, Any]:
    """
    Publish on the first hub as fast as the window allows; count the
    deliveries to C{perHub} subscribers on each hub.
    """
    groups = []
    for i, hub in enumerate(hubs):
        # The tracking subscriber is one of the last hub's.
        count = perHub - 1 if i == len(hubs) - 1 else perHub
        groups.append(pubsubload.subscribe(hub.port, "hub", count, workers, 0, None))
    pub = pubsubload.publisher(hubs[0].port, WIRE)
    tracker = pubsubload.Tracker(pubsubload.subscriber(hubs[-1].port, WIRE), WIRE)
    time.sleep(0.3)
    done = pubsubload.flood(pub, tracker, groups, duration, pubsubload.WINDOW)
    time.sleep(1.0)
    reports = [r for group in groups for r in group.stop()]
    pub.close()
    tracker.socket.close()
    last = max([r["last"] for r in reports] + [done.settled])
    counts = pubsubload.tally(done, reports, perHub * len(hubs), last)
    return {"hubs": len(hubs), **counts}


def latency(
    hubs: list[Server], perHub: int, rate: float, duration: float, workers: int
) -> dict[str, Any]:
    """
    Publish on the first hub at C{rate}, one message per write; measure the
    delays on each hub's subscribers.
    """
    groups = [
        pubsubload.subscribe(hub.port, "hub", perHub, workers, pubsubload.TIMERS, None)
        for hub in hubs
    ]
    pub = pubsubload.publisher(hubs[0].port, WIRE)
    time.sleep(0.3)
    count = pubsubload.publishAtRate(pub, WIRE, rate, duration)
    time.sleep(1.0)
    result: dict[str, Any] = {
        "hubs": len(hubs),
        "subscribers": perHub * len(hubs),
        "rate": rate,
        "published": count,
    }
    delivered = 0
    for name, group in zip("AB", groups, strict=False):
        reports = group.stop()
        delays = [d for r in reports for d in r["delays"]]
        delivered += sum(r["messages"] for r in reports)
        result[f"p50_ms_{name}"] = percentile(delays, 0.50)
        result[f"p99_ms_{name}"] = percentile(delays, 0.99)
    pub.close()
    result["lost"] = count * perHub * len(hubs) - delivered
    return result


def commandStats(port: int) -> dict[str, tuple[int, float]]:
    """
    Redis's C{INFO commandstats} on C{port}: command -> (calls, usec).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            header, _, body = data.partition(b"\r\n")
            if header.startswith(b"$") and len(body) >= int(header[1:]) + 2:
                break
    stats: dict[str, tuple[int, float]] = {}
    for line in data.decode("ascii", "replace").splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_") :].partition(":")
            values = dict(f.split("=", 1) for f in fields.split(","))
            stats[name] = (int(values["calls"]), float(values["usec"]))
    return stats


def scriptCost(port: int) -> dict[str, float]:
    """
    What the shared history's script cost Redis per line: all of it
    (C{evalsha}) and its C{XADD}s (one per line).
    """
    stats = commandStats(port)
    lines, xadd = stats.get("xadd", (0, 0.0))
    _, script = stats.get("evalsha", (0, 0.0))
    if not lines:
        return {}
    return {
        "script_us_per_line": script / lines,
        "xadd_us_per_line": xadd / lines,
        "script_calls": float(stats.get("evalsha", (0, 0.0))[0]),
        "lines": float(lines),
    }


@contextmanager
def setUp(harness: Harness, setup: str, kind: str) -> Iterator[list[Server]]:
    """
    Fresh hubs for one measurement (and a fresh C{redis-server} joining
    them, for C{backplane}), unpinned; stopped afterwards.
    """
    with ExitStack() as stack:
        options = catalog.HUB
        names = [f"{setup}-{kind}"]
        alsoLogged: tuple[str, ...] = ()
        if setup in ("backplane", "plain"):
            redis = harness.start(catalog.redis(), None, log=f"{setup}-{kind}-redis")
            stack.callback(redis.stop)
            url = f"redis://127.0.0.1:{redis.port}?prefix={PREFIX}"
            options = [*options, "--backplane", url]
            if setup == "plain":
                options.append("--no-backplane-history")
            harness.redisPort = redis.port  # type: ignore[attr-defined]
            names = [f"{setup}-{kind}-{hub}" for hub in "AB"]
            alsoLogged = ("backplane_up",)
        hubs = []
        for name in names:
            spec = catalog.netdemo("hub", "pubsub", options, *alsoLogged)
            hubs.append(harness.start(spec, None, log=name))
            stack.callback(hubs[-1].stop)
        yield hubs


def section(harness: Harness, options: Namespace) -> Section:
    """
    Measure both set-ups; print the results and the ratios.
    """
    try:
        catalog.redis()
    except Unavailable:
        print("backplane: redis-server is not installed, skipped")
        return Section("backplane", "Cross-node fan-out", "", {"results": []})
    perHub, workers = options.subscribers, options.workers
    results: list[dict[str, Any]] = []
    for setup in ("single", "backplane", "plain"):
        n, w = (2 * perHub, 2 * workers) if setup == "single" else (perHub, workers)
        for kind in ("throughput", "latency"):
            with setUp(harness, setup, kind) as hubs:
                if kind == "throughput":
                    r = throughput(hubs, n, options.duration, w)
                    if setup == "backplane":
                        r.update(scriptCost(harness.redisPort))  # type: ignore[attr-defined]
                else:
                    r = latency(hubs, n, options.rate, options.duration, w)
            r["setup"] = setup
            results.append(r)
            print(describe(r), flush=True)
    printRatios(results)
    return Section("backplane", "Cross-node fan-out", "", {"results": results})


def describe(r: dict[str, Any]) -> str:
    """
    One line for a result.
    """
    head = f"{r['setup']:9} {r['hubs']} hub(s), {r['subscribers']} subscribers:"
    if "deliveries_per_s" in r:
        text = (
            f"{head} {r['deliveries_per_s'] / 1e6:6.3f} M deliveries/s, "
            f"lost {r['lost']}, disconnected {r['disconnected']}"
        )
        if "script_us_per_line" in r:
            text += (
                f"; Redis per line: script {r['script_us_per_line']:.3f} us, "
                f"XADD {r['xadd_us_per_line']:.3f} us "
                f"({r['lines'] / max(r['script_calls'], 1):.0f} lines per call)"
            )
        return text
    text = f"{head} at {r['rate']:.0f}/s: p50/p99 A {r['p50_ms_A']:.2f}/"
    text += f"{r['p99_ms_A']:.2f} ms"
    if "p99_ms_B" in r:
        text += f", B (through Redis) {r['p50_ms_B']:.2f}/{r['p99_ms_B']:.2f} ms"
    return text + f", lost {r['lost']}"


def printRatios(results: list[dict[str, Any]]) -> None:
    """
    Print the backplane's figures as ratios to the single hub's.
    """
    byKey = {(r["setup"], "deliveries_per_s" in r): r for r in results}
    single = byKey[("single", True)]
    singleLatency = byKey[("single", False)]
    for setup in ("backplane", "plain"):
        joined, joinedLatency = byKey[(setup, True)], byKey[(setup, False)]
        what = "with shared history" if setup == "backplane" else "plain PUBLISH"
        print(f"\nbackplane ({what}) / single hub:")
        if single["deliveries_per_s"]:
            ratio = joined["deliveries_per_s"] / single["deliveries_per_s"]
            print(f"  deliveries/s: {ratio:5.2f}x")
        if singleLatency["p99_ms_A"]:
            for name in "AB":
                ratio = joinedLatency[f"p99_ms_{name}"] / singleLatency["p99_ms_A"]
                print(f"  p99 latency, hub {name}: {ratio:5.2f}x")


if __name__ == "__main__":
    from bench.harness import standalone

    sys.exit(standalone(sys.modules[__name__]))
