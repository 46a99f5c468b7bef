"""
Broadcast benchmark: byte relays, one sender, many receivers, 64-byte
messages (C{docs/benchmarks.md}, "Broadcast relay").

Servers measured in the same run (each on one core when C{taskset} is
available; the load generator gets the other cores):

  - C{broadcast}: netdemo's relay (C{twistd netdemo --broadcast}), default
    slow-consumer policy (1 MiB max-pending, disconnect);
  - C{ncat}: C{ncat --broker} (the nmap project's), when installed;
  - C{spreader}: the seed tutorial's server
    (C{bench/servers/tutorial_spreader.py}).

Two measurements per server, each on a fresh server:

  - throughput: the sender sends as fast as a bounded in-flight window to
    the slowest receiver allows, for C{--duration} seconds; deliveries/s
    counts every message every receiver got (the load generator of
    C{bench/fanout.py}, L{bench.pubsubload}, with these servers' wires);
  - the stalled receiver: the same, with one more receiver that never
    reads (a 4 KiB receive buffer); the window follows the receivers that
    read.  Do they keep receiving?  Deliveries/s to them, the share of what
    was sent that they got, the server's RSS growth, and what became of the
    stalled receiver.

Usage::

    python bench/broadcast.py [--servers broadcast,ncat,spreader]
        [--receivers 100] [--duration 5] [--workers 2]
"""

from __future__ import annotations

import os
import socket
import sys
import time
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as python bench/broadcast.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog, pubsubload  # noqa: E402
from bench.fanout import runningOn, throughput  # noqa: E402
from bench.harness import SERVER_CPU, Harness, Section  # noqa: E402
from bench.launch import Server, Unavailable  # noqa: E402

#: The arguments C{bench/run.py --quick} runs this section with.
QUICK_ARGS = ["--duration", "2"]

#: Messages in flight to the slowest receiver that reads, by default: 780 KB
#: of 65-byte messages, three times the fan-out section's, so that the
#: servers rather than the round trip set the pace, and still under what
#: netdemo lets a receiver lag before it counts as slow (a 512 KiB kernel
#: buffer, 64 KiB in the transport, then --max-pending 1 MiB).
WINDOW = 12000

#: The stalled receiver's receive buffer (Linux doubles it).
STALLED_RCVBUF = 4096


def addArguments(parser: ArgumentParser) -> None:
    """
    The options of this benchmark.
    """
    parser.add_argument("--servers", default="broadcast,ncat,spreader")
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help="messages in flight to the slowest receiver that reads",
    )


def stalledReceiver(server: Server) -> socket.socket:
    """
    A receiver with a tiny receive buffer, greeted, that will never read.
    """
    wire = pubsubload.WIRES[server.name]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    s.settimeout(10)
    s.connect(("127.0.0.1", server.port))
    seen = b""
    while wire.ready and not seen.endswith(wire.ready):
        chunk = s.recv(1)
        if not chunk:
            raise RuntimeError(f"{server.name} closed during the handshake")
        seen += chunk
    return s


def fate(s: socket.socket) -> str:
    """
    What became of the stalled receiver: read what it was sent, at most
    for a few seconds.
    """
    s.settimeout(0.5)
    received = 0
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            if not chunk:
                return f"closed after {received / 1e6:.1f} MB"
            received += len(chunk)
    except TimeoutError:
        return f"connected, {received / 1e6:.1f} MB waiting for it"
    except OSError:
        return f"reset after {received / 1e6:.1f} MB"
    return f"connected, more than {received / 1e6:.1f} MB waiting for it"


def stalled(
    server: Server,
    receivers: int,
    duration: float,
    workers: int,
    cpus: set[int] | None,
    window: int,
) -> dict[str, Any]:
    """
    L{throughput}'s flood with one more receiver that never reads.
    """
    slow = stalledReceiver(server)
    r = throughput(
        server, receivers, duration, workers, cpus, window, probe=server.rssKiB
    )
    # Over the whole flood: a relay that stalls stops delivering early, and
    # its rate over the time it delivered would flatter it.
    r["receiving_s"] = r["seconds"]
    r["seconds"] = max(duration, r["seconds"])
    r["deliveries_per_s"] = r["delivered"] / r["seconds"]
    outcome = fate(slow)
    slow.close()
    sent = r["published"] * receivers
    return {
        **r,
        "stalled": True,
        "delivered_share": r["delivered"] / sent if sent else 0.0,
        "rss_growth_mb": r["probed"] / 1024,
        "stalled_receiver": outcome,
    }


def measure(
    harness: Harness, name: str, options: Namespace, loadCpus: set[int] | None
) -> list[dict[str, Any]]:
    """
    Both measurements of one server, each on a fresh server.
    """
    spec = catalog.broadcast(name)
    results = []
    for kind in ("throughput", "stalled"):
        server = harness.start(spec, SERVER_CPU, log=f"{name}-{kind}")
        try:
            run = throughput if kind == "throughput" else stalled
            r = run(
                server, options.receivers, options.duration, options.workers,
                loadCpus, options.window,
            )  # fmt: skip
        finally:
            server.stop()
        r["server"] = name
        results.append(r)
        rate = f"{r['deliveries_per_s'] / 1e6:6.3f} M deliveries/s"
        if kind == "throughput":
            print(
                f"{name:9} {options.receivers:4} receivers: {rate}, "
                f"lost {r['lost']}, CPU server {r['server_cpu']:.0%} "
                f"load generator {r['loadgen_cpu']:.0%}",
                flush=True,
            )
        else:
            print(
                f"{name:9} + 1 stalled: {rate} to the others "
                f"({r['delivered_share']:.1%} of what was sent; the last "
                f"after {r['receiving_s']:.1f} s of {options.duration:g}), "
                f"RSS +{r['rss_growth_mb']:.1f} MB, stalled receiver "
                f"{r['stalled_receiver']}",
                flush=True,
            )
    return results


def table(results: list[dict[str, Any]], receivers: int) -> str:
    """
    The section's markdown table.
    """
    lines = [
        f"| server | {receivers} receivers, M deliveries/s (server CPU) | with "
        "one stalled receiver: M deliveries/s to the others | share of what "
        "was sent they got | they last received at | server RSS growth | "
        "the stalled receiver |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    byServer: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        kind = "stalled" if r.get("stalled") else "throughput"
        byServer.setdefault(r["server"], {})[kind] = r
    for name, runs in byServer.items():
        t, s = runs.get("throughput"), runs.get("stalled")
        if t is None or s is None:
            continue
        lines.append(
            f"| {name} | {t['deliveries_per_s'] / 1e6:.2f} ({t['server_cpu']:.0%}) | "
            f"{s['deliveries_per_s'] / 1e6:.2f} | {s['delivered_share']:.1%} | "
            f"{s['receiving_s']:.1f} s of {s['seconds']:.1f} | "
            f"{s['rss_growth_mb']:.1f} MB | {s['stalled_receiver']} |"
        )
    return "\n".join(lines)


def section(harness: Harness, options: Namespace) -> Section:
    """
    Measure every server asked for, side by side; print the table.
    """
    pin = harness.serverCPU
    loadCpus = None
    if pin is not None:
        loadCpus = set(os.sched_getaffinity(0)) - {pin} or None
    results: list[dict[str, Any]] = []
    with runningOn(loadCpus):
        for name in options.servers.split(","):
            try:
                results.extend(measure(harness, name, options, loadCpus))
            except Unavailable as reason:
                print(reason, flush=True)
    markdown = table(results, options.receivers)
    print("\n" + markdown, flush=True)
    return Section("broadcast", "Broadcast relay", markdown, {"results": results})


if __name__ == "__main__":
    from bench.harness import standalone

    sys.exit(standalone(sys.modules[__name__]))
