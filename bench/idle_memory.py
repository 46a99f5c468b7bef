"""
Section C{memory}: resident memory per idle TCP echo connection.

Each server is started fresh; the load generator opens N connections
(10,000 by default), checks that each one is served with a one-byte echo,
and holds them idle.  The server's RSS growth divided by N is the cost of
one idle connection (kernel socket buffers are not in the RSS).

netdemo needs two limits raised for this one measurement, which the output
says: C{--max-connections} above N (its default cap is 10000) and
C{--max-per-peer 0}; every other protection keeps its default.
"""

from __future__ import annotations

import time
from argparse import ArgumentParser, Namespace
from typing import Any

from bench import catalog
from bench.harness import BenchError, Harness, Section, Server, serversOption, withNotes
from bench.launch import Unavailable

#: Loopback source addresses the connections are spread over.
SOURCES = 8

#: Seconds to let the server settle before and after opening connections.
SETTLE = 1.0


def addArguments(parser: ArgumentParser) -> None:
    """
    Options of this section.
    """
    group = serversOption(
        parser, "memory", "netdemo,netdemo-reactor,tutorial,uvloop", "measure"
    )
    group.add_argument(
        "--idle-connections",
        type=int,
        default=10000,
        help="idle connections to hold (default: %(default)s)",
    )


def netdemoOptions(connections: int) -> list[str]:
    """
    netdemo's command line for the measurement: limits raised above
    C{connections}.
    """
    return [
        *catalog.TCP_ECHO,
        "--max-connections",
        str(connections + 1000),
        "--max-per-peer",
        "0",
    ]


def measure(harness: Harness, server: Server, connections: int) -> dict[str, Any]:
    """
    Hold C{connections} idle connections to C{server}; RSS before and after.
    """
    time.sleep(SETTLE)
    before = server.rssKiB()
    with harness.holding(server.port, connections, "--sources", str(SOURCES)) as report:
        if report.get("served") != connections:
            raise BenchError(
                f"{server.name}: not every connection was served: {report}"
            )
        time.sleep(SETTLE)
        after = server.rssKiB()
    return {
        "connections": connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_connection": (after - before) * 1024 / connections,
        "loadgen": report,
    }


def section(harness: Harness, args: Namespace) -> Section:
    """
    Run the section.
    """
    connections = args.idle_connections
    names = [n.strip() for n in args.memory_servers.split(",") if n.strip()]
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for name in names:
        try:
            spec = catalog.tcpEcho(name, netdemoOptions(connections))
        except Unavailable as reason:
            notes.append(str(reason))
            continue
        server = harness.start(spec, log=f"{name}-memory")
        try:
            results[name] = measure(harness, server, connections)
        finally:
            server.stop()
        r = results[name]
        print(
            f"  memory {name:>9}: {r['bytes_per_connection']:,.0f} bytes per idle "
            f"connection ({r['rss_before_kib']:,} -> {r['rss_after_kib']:,} KiB)",
            flush=True,
        )
    lines = [
        f"{connections:,} idle connections, each checked with a one-byte echo; "
        "RSS from /proc/PID/statm (kernel socket buffers excluded).",
        "",
        "| server | RSS before (KiB) | RSS with connections (KiB) | per connection |",
        "|---|--:|--:|--:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rss_before_kib']:,} | {r['rss_after_kib']:,} "
            f"| {r['bytes_per_connection'] / 1024:.2f} KiB |"
        )
    lines += [
        "",
        "netdemo runs with `" + " ".join(netdemoOptions(connections)) + "` for "
        "this measurement only: its default caps (10000 connections, 256 per "
        "peer) would refuse some of the connections; the other protections "
        "keep their defaults.",
    ]
    return Section(
        name="memory",
        title="Idle connection memory",
        markdown=withNotes(lines, notes),
        data={"servers": results},
    )
