"""
UDP echo benchmark: netdemo against reference echo servers in the same run.

    python bench/udp.py [--seconds 5] [--repeat 3] [--senders 50] [--size 64]

Servers, each in its own process on 127.0.0.1 (C{bench/catalog.py}):

  - C{tutorial}: the Twisted tutorial C{DatagramProtocol} echo
    (C{transport.write(data, addr)}), the baseline of the ratios;
  - C{netdemo}: C{twistd netdemo --udp 0.0.0.0:0} with every protection
    on: bound to the wildcard (so every datagram carries and every reply
    sends packet information), the port floor, the source checks and the
    per-source token bucket.  The rate and burst are raised so that the
    benchmark measures their cost rather than their refusals;
  - C{asyncio} and C{uvloop}: the C{asyncio.DatagramProtocol} echo on each
    loop (uvloop when installed: the C{bench} extra);
  - C{c}: a C C{recvmmsg}/C{sendmmsg} echo, what the kernel allows.

The load comes from C{udpload} (C, C{bench/udpload.c}, built by C{make -C
bench} when missing): 50 connected senders, each from its own loopback
address (127.0.0.10 and up) with one 64-byte datagram in flight.  On a
machine with two CPUs or more, the server and the load generator are pinned
to different CPUs so that the load generator is never the bottleneck.

Prints one table: round trips a second (median and best of the repeats) and
the server's CPU time per round trip (median), each with its ratio to the
tutorial echo (higher is better; for CPU time the ratio is tutorial cost /
server cost).  On a loaded machine the rates swing with the other load; CPU
time per round trip swings much less.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path

if __package__ in (None, ""):  # run as python bench/udp.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog  # noqa: E402
from bench.harness import Harness, Section, buildTool  # noqa: E402
from bench.launch import ServerSpec, Unavailable, pinned  # noqa: E402

#: What C{bench/run.py --quick} passes.
QUICK_ARGS = ["--seconds", "2", "--repeat", "1"]

#: Servers measured by default, in this order.
SERVERS = "tutorial,netdemo,netdemo-reactor,asyncio,uvloop,c"

#: Seconds of warm-up before each measured run.
WARMUP = 1.0

#: The last byte of the first sender's loopback address (127.0.0.10).
SOURCE_BASE = 10


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this benchmark.
    """
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--servers", default=SERVERS, help="comma-separated, of: " + SERVERS
    )


def measure(
    harness: Harness, spec: ServerSpec, load: Path, options: Namespace
) -> dict[str, float]:
    """
    Start one server fresh and run the load against it once.
    """
    server = harness.start(spec)
    try:
        before = server.cpuSeconds()
        command = [
            str(load), "client", "127.0.0.1", str(server.port),
            str(options.senders), str(options.seconds), str(WARMUP),
            str(options.size), str(SOURCE_BASE),
        ]  # fmt: skip
        result = subprocess.run(
            pinned(harness.clientCPU, command),
            capture_output=True,
            text=True,
            timeout=options.seconds + WARMUP + 30,
            check=True,
        )
        used = server.cpuSeconds() - before
    finally:
        server.stop()
    r = dict(json.loads(result.stdout))
    # CPU time the server spent per round trip, over warm-up and
    # measurement: much less sensitive to other load than the rate.
    total = r["round_trips"] * (options.seconds + WARMUP) / options.seconds
    r["cpu_us_per_round_trip"] = used / total * 1e6 if total else 0.0
    return r


def section(harness: Harness, options: Namespace) -> Section:
    """
    Run the benchmark and print the table.
    """
    load = buildTool("udpload")
    specs: dict[str, ServerSpec] = {}
    for name in options.servers.split(","):
        try:
            specs[name] = catalog.udpEcho(name)
        except Unavailable as reason:
            print(reason)
    names = list(specs)
    results: dict[str, list[float]] = {name: [] for name in names}
    costs: dict[str, list[float]] = {name: [] for name in names}
    timeouts: dict[str, int] = {name: 0 for name in names}
    # Interleave the servers so that a change in machine load affects all.
    for _ in range(options.repeat):
        for name in names:
            r = measure(harness, specs[name], load, options)
            results[name].append(r["round_trips_per_second"])
            costs[name].append(r["cpu_us_per_round_trip"])
            timeouts[name] += int(r["timeouts"])
    medians = {name: statistics.median(v) for name, v in results.items()}
    best = {name: max(v) for name, v in results.items()}
    cost = {name: statistics.median(v) for name, v in costs.items()}
    base = medians.get("tutorial") or 1.0
    baseBest = best.get("tutorial") or 1.0
    baseCost = cost.get("tutorial") or 1.0
    print(
        f"UDP echo: {options.size}-byte datagrams, {options.senders} senders, "
        f"{options.seconds:g} s x {options.repeat}; ratios against the tutorial echo"
    )
    print(
        f"{'server':<15} {'median rt/s':>12} {'ratio':>6} {'best rt/s':>10} "
        f"{'ratio':>6} {'CPU us/rt':>9} {'ratio':>6} {'timeouts':>8}"
    )
    for name in names:
        print(
            f"{name:<15} {medians[name]:>12,.0f} {medians[name] / base:>5.2f}x "
            f"{best[name]:>10,.0f} {best[name] / baseBest:>5.2f}x "
            f"{cost[name]:>9.2f} {baseCost / cost[name] if cost[name] else 0:>5.2f}x "
            f"{timeouts[name]:>8}"
        )
    data = {"rates": results, "cpu_us": costs, "timeouts": timeouts}
    return Section("udp", "UDP echo", "", data)


if __name__ == "__main__":
    from bench.harness import standalone

    sys.exit(standalone(sys.modules[__name__]))
