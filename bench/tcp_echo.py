"""
Section C{echo}: TCP echo round trips per second and latency.

netdemo's echo (a real C{twistd netdemo} with every protection on: its
defaults, on Twisted's default reactor and on C{--reactor=netdemo})
against the Twisted tutorial echo, a stdlib asyncio echo, a uvloop echo
(when uvloop is installed) and a C epoll echo (C{bench/tcpecho.c}: what the
kernel allows with the same system calls and no interpreter), all driven by
the same compiled load generator (C{bench/loadgen.c}): closed-loop
ping-pong, one message in flight per connection.

Every server is started once and listens with a backlog of 1024 (what
netdemo gives a bare port); the runs are interleaved (each repeat goes
through every scenario and every server in turn) so that noise from other
work on the machine spreads over all servers.
"""

from __future__ import annotations

import time
from argparse import ArgumentParser, Namespace
from typing import Any

from bench import catalog
from bench.harness import (
    Harness,
    Section,
    Server,
    coreBusy,
    cpuJiffies,
    median,
    serversOption,
    withNotes,
)
from bench.launch import Unavailable

#: (message size, connections)
SCENARIOS = [(64, 1), (64, 50), (64, 500), (16384, 50)]

#: The reference every ratio is relative to.
REFERENCE = "tutorial"

#: Loopback source addresses the load generator spreads connections over:
#: 500 connections from one address would exceed netdemo's default
#: per-peer limit (256), which is a protection, not a bottleneck.
SOURCES = 8

#: A load generator busier than this share of its core may have limited
#: the run: the table marks the server's number as a lower bound.
LOADGEN_LIMIT = 0.85

#: Seconds between two runs, so that one server's connection teardown
#: (netdemo logs one event per closed connection) is not charged to the
#: next server on the same CPU.
SETTLE = 0.5


def addArguments(parser: ArgumentParser) -> None:
    """
    Options of this section.
    """
    serversOption(
        parser, "echo", "netdemo,netdemo-reactor,tutorial,asyncio,uvloop,c", "compare"
    )


def scenarioName(size: int, connections: int) -> str:
    """
    C{64 B x 50}, C{16 KiB x 50}.
    """
    what = f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"
    return f"{what} x {connections}"


def startServers(harness: Harness, names: list[str]) -> tuple[list[Server], list[str]]:
    """
    Start the servers named; return them and notes about those skipped.
    """
    servers: list[Server] = []
    notes: list[str] = []
    for name in names:
        try:
            spec = catalog.tcpEcho(name)
        except Unavailable as reason:
            notes.append(str(reason))
            continue
        servers.append(harness.start(spec))
    return servers, notes


def runOnce(
    harness: Harness, server: Server, size: int, connections: int
) -> dict[str, Any]:
    """
    One load generator run against one server, with both CPU shares.
    """
    args = harness.args
    before = server.cpuSeconds()
    cores = cpuJiffies()
    started = time.monotonic()
    result = harness.loadgen(
        server.port,
        "--conns",
        str(connections),
        "--size",
        str(size),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--sources",
        str(SOURCES),
    )
    elapsed = time.monotonic() - started
    serverCPU = server.cpuSeconds() - before
    result["server_cpu_share"] = serverCPU / elapsed
    result["server_cpu_us_per_rt"] = serverCPU * 1e6 / max(1, result["all_round_trips"])
    coresAfter = cpuJiffies()
    result["server_core_busy"] = coreBusy(cores, coresAfter, harness.serverCPU)
    result["loadgen_core_busy"] = coreBusy(cores, coresAfter, harness.clientCPU)
    if not server.running():
        raise RuntimeError(f"{server.name} exited during the run")
    return result


def _medianOrNone(values: list[float | None]) -> float | None:
    """
    The median of the known values, or L{None}.
    """
    known = [v for v in values if v is not None]
    return median(known) if known else None


def _share(process: float, core: float | None) -> str:
    """
    C{process %/core %}, or C{process %} when the core is unknown.
    """
    if core is None:
        return f"{process:.0%}"
    return f"{process:.0%}/{core:.0%}"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    Median and range over repeats of one server in one scenario.
    """
    rates = [r["rate"] for r in runs]
    errors: dict[str, int] = {}
    for r in runs:
        for key, count in r["errors"].items():
            errors[key] = errors.get(key, 0) + count
    return {
        "rate": median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "p50_us": median([r["latency_us"]["p50"] for r in runs]),
        "p99_us": median([r["latency_us"]["p99"] for r in runs]),
        "loadgen_cpu_share": max(r["cpu"]["share"] for r in runs),
        "server_cpu_share": median([r["server_cpu_share"] for r in runs]),
        "server_cpu_us_per_rt": median([r["server_cpu_us_per_rt"] for r in runs]),
        "server_core_busy": _medianOrNone([r.get("server_core_busy") for r in runs]),
        "loadgen_core_busy": _medianOrNone([r.get("loadgen_core_busy") for r in runs]),
        "errors": {k: v for k, v in errors.items() if v},
        "connected": min(r["connected"] for r in runs),
    }


def markdownTable(
    summary: dict[str, dict[str, dict[str, Any]]], servers: list[str]
) -> str:
    """
    The result table.
    """
    lines = [
        "| scenario | server | round trips/s (median) | range | p50 µs | p99 µs "
        "| vs tutorial | server CPU µs per round trip "
        "| server CPU proc/core | loadgen CPU proc/core |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for scenario, byServer in summary.items():
        reference = byServer.get(REFERENCE, {}).get("rate")
        for name in servers:
            s = byServer.get(name)
            if s is None:
                continue
            ratio = f"{s['rate'] / reference:.2f}x" if reference else "-"
            note = ""
            if s["errors"]:
                note = " (errors: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(s["errors"].items())
                )
                note += ")"
            mark = " *" if s["loadgen_cpu_share"] >= LOADGEN_LIMIT else ""
            lines.append(
                f"| {scenario} | {name}{note} | {s['rate']:,.0f}{mark} "
                f"| {s['rate_min']:,.0f}-{s['rate_max']:,.0f} "
                f"| {s['p50_us']:.0f} | {s['p99_us']:.0f} | {ratio} "
                f"| {s['server_cpu_us_per_rt']:.1f} "
                f"| {_share(s['server_cpu_share'], s['server_core_busy'])} "
                f"| {_share(s['loadgen_cpu_share'], s['loadgen_core_busy'])} |"
            )
    return "\n".join(lines)


def plot(
    harness: Harness,
    summary: dict[str, dict[str, dict[str, Any]]],
    servers: list[str],
) -> list[Any]:
    """
    A grouped bar chart of the ratios to the tutorial echo, with ranges.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    scenarios = list(summary)
    width = 0.8 / max(1, len(servers))
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=90)
    for i, name in enumerate(servers):
        xs, heights, lows, highs = [], [], [], []
        for j, scenario in enumerate(scenarios):
            s = summary[scenario].get(name)
            reference = summary[scenario].get(REFERENCE, {}).get("rate")
            if s is None or not reference:
                continue
            xs.append(j + (i - (len(servers) - 1) / 2) * width)
            h = s["rate"] / reference
            heights.append(h)
            lows.append(h - s["rate_min"] / reference)
            highs.append(s["rate_max"] / reference - h)
        bars = ax.bar(xs, heights, width, yerr=[lows, highs], capsize=2, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_ylabel("round trips/s vs tutorial Twisted")
    ax.set_title("TCP echo ping-pong (median of repeats, bars: range)", fontsize=10)
    ax.legend(fontsize=8, ncols=len(servers))
    ax.margins(y=0.15)
    fig.tight_layout()
    path = harness.results / "echo.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


def section(harness: Harness, args: Namespace) -> Section:
    """
    Run the section.
    """
    names = [n.strip() for n in args.echo_servers.split(",") if n.strip()]
    servers, notes = startServers(harness, names)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        time.sleep(1.0)
        for repeat in range(args.repeat):
            for size, connections in SCENARIOS:
                scenario = scenarioName(size, connections)
                for server in servers:
                    result = runOnce(harness, server, size, connections)
                    runs.setdefault(scenario, {}).setdefault(server.name, []).append(
                        result
                    )
                    print(
                        f"  echo {repeat + 1}/{args.repeat} {scenario:>12} "
                        f"{server.name:>9}: {result['rate']:>9,.0f} rt/s, "
                        f"p50 {result['latency_us']['p50']:.0f} µs, p99 "
                        f"{result['latency_us']['p99']:.0f} µs, server CPU "
                        f"{result['server_cpu_share']:.0%} "
                        f"({result['server_cpu_us_per_rt']:.1f} µs/rt), loadgen CPU "
                        f"{result['cpu']['share']:.0%}; cores "
                        f"{result['server_core_busy'] or 0:.0%}/"
                        f"{result['loadgen_core_busy'] or 0:.0%} busy",
                        flush=True,
                    )
                    time.sleep(SETTLE)
    finally:
        for server in servers:
            server.stop()
    order = [s.name for s in servers]
    summary = {
        scenario: {name: summarise(r) for name, r in byServer.items()}
        for scenario, byServer in runs.items()
    }
    markdown = [
        f"{args.repeat} repeat(s) of {args.warmup} s warm-up + {args.duration} s "
        f"per run; {harness.describe()}.",
        "",
        markdownTable(summary, order),
        "",
        "netdemo runs as `twistd -n --pidfile= netdemo "
        + " ".join(catalog.TCP_ECHO)
        + "` with its default limits "
        "(max 10000 connections, 256 per peer, 300 s idle timeout, flow "
        f"control, half-close). The load generator spreads connections over "
        f"{SOURCES} loopback source addresses. CPU columns: the process's "
        "share of one core over the run (loadgen: the highest of the repeats, "
        "from its own getrusage; near 100 % would mean the load generator is "
        "the bottleneck), then how busy that core was in all (/proc/stat: "
        "other processes and softirq included; well above the process share "
        "means the machine was loaded by something else). * : the load "
        f"generator used {LOADGEN_LIMIT:.0%} or more of its core in some repeat, "
        "so it may have limited that server: its number is a lower bound "
        "(its CPU per round trip is still exact).",
    ]
    return Section(
        name="echo",
        title="TCP echo",
        markdown=withNotes(markdown, notes),
        data={"scenarios": summary, "runs": runs, "servers": order},
        plots=plot(harness, summary, order),
    )
