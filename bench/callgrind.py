"""
Instructions per echo round trip, counted by callgrind: a figure that does
not move with the machine's load, for the per-event paths of issue 17.

Each server (by name, from L{bench.catalog}) runs under C{valgrind
--tool=callgrind}; the load generator runs outside it, so only the
server's own user-space instructions are counted (the kernel's work is
not).  The counters are zeroed once the server listens, then two load
generator runs of different lengths go through it, each followed by a
dump; the instructions of the longer run less those of the shorter, over
the difference in round trips, are the cost of one round trip without the
cost of connecting and closing the connections.  The longer run's dump is
kept, for C{callgrind_annotate}.

Usage::

    python bench/callgrind.py [--udp] [--servers netdemo,netdemo-reactor,...]
        [--conns 50] [--size 64] [--short 2] [--long 6] [--top 15]
        [--netdemo-args "--udp 127.0.0.1:0 ..."]

Needs C{valgrind} (its C{callgrind_control} and C{callgrind_annotate}) and
C{make -C bench}.  A server runs 20-50 times slower under callgrind: the
round trips per second it prints mean nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import catalog
from bench.launch import ServerSpec, start

RESULTS = catalog.BENCH / "results" / "callgrind"

#: The summary line of a callgrind dump.
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


def underCallgrind(spec: ServerSpec, output: Path) -> ServerSpec:
    """
    C{spec} run under callgrind, counting from the start (zeroed later),
    its dumps written to C{output}.NUMBER.
    """
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={output}",
        "--dump-instr=no",
    ]
    return ServerSpec(
        spec.name,
        lambda port: [*valgrind, *spec.command(port)],
        spec.findPort,
        spec.inUse,
        spec.env,
    )


def control(pid: int, *args: str) -> None:
    """
    Run C{callgrind_control ARGS PID}.
    """
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def instructions(dump: Path) -> int:
    """
    The instructions a callgrind dump counted.
    """
    match = _TOTALS.search(dump.read_text(errors="replace"))
    if match is None:
        raise ValueError(f"no totals in {dump}")
    return int(match.group(1))


def loadgen(port: int, options: argparse.Namespace, seconds: float) -> int:
    """
    One load generator run with no warm-up: every round trip it made.
    """
    argv = [
        str(catalog.BUILD / "loadgen"),
        "--port",
        str(port),
        "--conns",
        str(options.conns),
        "--size",
        str(options.size),
        "--warmup",
        "0",
        "--duration",
        str(seconds),
        "--connect-timeout",
        "60",
    ]
    if options.udp:
        argv += ["--udp", "--udp-timeout", "5"]
    done = subprocess.run(
        argv, check=True, capture_output=True, text=True, timeout=seconds + 120
    )
    report = json.loads(done.stdout)
    return int(report["all_round_trips"])


def measure(name: str, options: argparse.Namespace) -> dict[str, object]:
    """
    Instructions per round trip of server C{name}.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    kind = "udp" if options.udp else "tcp"
    output = RESULTS / f"{kind}-{name}.out"
    for old in RESULTS.glob(f"{output.name}*"):
        old.unlink()
    spec = catalog.udpEcho(name) if options.udp else catalog.tcpEcho(name)
    if options.netdemo_args and name in ("netdemo", catalog.NETDEMO_REACTOR):
        spec = catalog.netdemo(
            name,
            "udp-echo" if options.udp else "tcp-echo",
            options.netdemo_args.split(),
            reactor="netdemo" if name == catalog.NETDEMO_REACTOR else None,
        )
    server = start(
        underCallgrind(spec, output), RESULTS / f"{kind}-{name}.log", None, 180.0
    )
    try:
        time.sleep(1.0)
        control(server.pid, "--zero")
        short = loadgen(server.port, options, options.short)
        control(server.pid, "--dump")
        long = loadgen(server.port, options, options.long)
        control(server.pid, "--dump")
    finally:
        server.stop(60.0)
    dumps = sorted(
        RESULTS.glob(f"{output.name}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
    )
    first, second = instructions(dumps[-2]), instructions(dumps[-1])
    return {
        "server": name,
        "round_trips": [short, long],
        "instructions": [first, second],
        "per_round_trip": (second - first) / (long - short),
        "dump": str(dumps[-1]),
    }


def top(dump: str, count: int) -> str:
    """
    The C{count} functions with the most instructions of their own.
    """
    annotate = shutil.which("callgrind_annotate")
    if annotate is None:
        return ""
    done = subprocess.run(
        [annotate, "--threshold=100", dump],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The entries of the whole program (main, the interpreter's start) are
    # left out: they count everything.
    lines = [
        line
        for line in done.stdout.splitlines()
        if re.match(r"^\s*[\d,]+ \(", line) and "(100.0%)" not in line
    ]
    return "\n".join(lines[:count])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--servers", default="netdemo,netdemo-reactor,tutorial,uvloop")
    parser.add_argument("--udp", action="store_true", help="UDP echo, not TCP")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--short", type=float, default=2.0, help="seconds")
    parser.add_argument("--long", type=float, default=6.0, help="seconds")
    parser.add_argument("--top", type=int, default=15, help="functions listed")
    parser.add_argument(
        "--netdemo-args",
        default="",
        help="netdemo's service options instead of make bench's "
        '(e.g. "--udp 127.0.0.1:0 ...")',
    )
    options = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured")
        return 0
    subprocess.run(["make", "-s", "-C", str(catalog.BENCH)], check=True)
    for name in options.servers.split(","):
        result = measure(name, options)
        print(
            f"{name}: {result['per_round_trip']:,.0f} instructions per round trip "
            f"(round trips {result['round_trips']}, "
            f"instructions {result['instructions']})"
        )
        if options.top:
            print(top(str(result["dump"]), options.top))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
