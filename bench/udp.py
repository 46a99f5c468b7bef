"""
UDP echo benchmark: netdemo against reference echo servers in the same run.

    python bench/udp.py [--seconds 5] [--repeat 3] [--senders 50] [--size 64]

Servers, each in its own process on 127.0.0.1:

  - C{tutorial}: the Twisted tutorial C{DatagramProtocol} echo
    (C{transport.write(data, addr)}), the baseline of the ratios;
  - C{netdemo}: C{twistd netdemo --udp 0.0.0.0:PORT} with every protection
    on: bound to the wildcard (so every datagram carries and every reply
    sends packet information), the port floor, the source checks and the
    per-source token bucket.  The rate and burst are raised so that the
    benchmark measures their cost rather than their refusals;
  - C{asyncio} and C{uvloop}: the C{asyncio.DatagramProtocol} echo on each
    loop (uvloop when installed: the C{bench} extra);
  - C{c}: a C C{recvmmsg}/C{sendmmsg} echo, what the kernel allows.

The load comes from C{udpload} (C, built from C{bench/udpload.c} here when
missing): 50 connected senders, each from its own loopback address
(127.0.0.10 and up) with one 64-byte datagram in flight.  On a machine with
two CPUs or more, the server and the load generator are pinned to different
CPUs so that the load generator is never the bottleneck.

Prints one table and, with C{--json}, the raw numbers: round trips a second
(median and best of the repeats) and the server's CPU time per round trip
(median), each with its ratio to the tutorial echo (higher is better; for
CPU time the ratio is tutorial cost / server cost).  On a loaded machine the
rates swing with the other load; CPU time per round trip swings much less.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOAD_SOURCE = HERE / "udpload.c"
LOAD = HERE / "build" / "udpload"

TUTORIAL = """
import sys
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

class Echo(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)

port = reactor.listenUDP(0, Echo(), "127.0.0.1")
print("listening", port.getHost().port, flush=True)
reactor.run()
"""

ASYNCIO = """
import asyncio, sys

class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

async def main():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        Echo, local_addr=("127.0.0.1", 0)
    )
    print("listening", transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()

if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def buildLoad() -> Path:
    """
    Build the C load generator if it is missing or older than its source.
    """
    if LOAD.exists() and LOAD.stat().st_mtime >= LOAD_SOURCE.stat().st_mtime:
        return LOAD
    LOAD.parent.mkdir(exist_ok=True)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("bench/udp.py needs a C compiler (cc) for bench/udpload.c")
    subprocess.run([compiler, "-O2", "-o", str(LOAD), str(LOAD_SOURCE)], check=True)
    return LOAD


def freePort() -> int:
    """
    A UDP port free on 127.0.0.1 now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """
    The command, pinned to one CPU when there is more than one.
    """
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


class Server:
    """
    One echo server process; L{port} is where it listens.
    """

    def __init__(self, name: str, cpu: int | None) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        python = sys.executable
        if name == "tutorial":
            command = [python, "-c", TUTORIAL]
            pattern = r"listening (\d+)"
        elif name in ("asyncio", "uvloop"):
            command = [python, "-c", ASYNCIO, name]
            pattern = r"listening (\d+)"
        elif name == "c":
            command = [str(LOAD), "server", "127.0.0.1", "0"]
            pattern = r"listening (\d+)"
        elif name == "netdemo":
            port = freePort()
            twistd = str(Path(python).with_name("twistd"))
            command = [
                twistd, "-n", "--pidfile=", "--logfile=-", "netdemo",
                "--udp", f"0.0.0.0:{port}",
                "--udp-rate", "100000000", "--udp-burst", "100000000",
            ]  # fmt: skip
            pattern = r"udp-echo: listening on [\d.]+:(\d+)"
        else:
            raise SystemExit(f"unknown server {name!r}")
        self.process = subprocess.Popen(
            pinned(command, cpu),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.port = self._wait(pattern)

    def _wait(self, pattern: str) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.log.seek(0)
            match = re.search(pattern, self.log.read())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        raise SystemExit(f"{self.name} did not start:\n{self.log.read()[-2000:]}")

    def stop(self) -> None:
        """
        Stop the server.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def cpuSeconds(pid: int) -> float:
    """
    The user and system CPU time of a process so far.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available() -> list[str]:
    """
    The servers this machine can run.
    """
    names = ["tutorial", "netdemo", "asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        print("uvloop is not installed (pip install -e '.[bench]'): skipped")
    else:
        names.append("uvloop")
    names.append("c")
    return names


def measure(
    name: str, seconds: float, senders: int, size: int, cpus: tuple[int, int] | None
) -> dict[str, float]:
    """
    Run one server and the load against it once.
    """
    server = Server(name, cpus[0] if cpus else None)
    try:
        before = cpuSeconds(server.process.pid)
        command = [
            str(LOAD), "client", "127.0.0.1", str(server.port), str(senders),
            str(seconds), "1.0", str(size), "10",
        ]  # fmt: skip
        result = subprocess.run(
            pinned(command, cpus[1] if cpus else None),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        )
        used = cpuSeconds(server.process.pid) - before
        r = dict(json.loads(result.stdout))
        # CPU time the server spent per round trip, over warm-up and
        # measurement: much less sensitive to other load than the rate.
        total = r["round_trips"] * (seconds + 1.0) / seconds
        r["cpu_us_per_round_trip"] = used / total * 1e6 if total else 0.0
        return r
    finally:
        server.stop()


#: What C{bench/run.py --quick} passes.
QUICK_ARGS = ["--seconds", "2", "--repeat", "1"]


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark: standalone (C{python bench/udp.py}) or from
    C{bench/run.py}, which passes the words of C{--udp-args}.
    """
    parser = argparse.ArgumentParser(description="UDP echo benchmark")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--servers", default="", help="comma-separated subset")
    parser.add_argument("--json", action="store_true", help="print raw results")
    args = parser.parse_args(argv)
    buildLoad()
    names = args.servers.split(",") if args.servers else available()
    cpus = (0, 1) if (os.cpu_count() or 1) >= 2 else None
    results: dict[str, list[float]] = {name: [] for name in names}
    costs: dict[str, list[float]] = {name: [] for name in names}
    timeouts: dict[str, int] = {name: 0 for name in names}
    # Interleave the servers so that a change in machine load affects all.
    for _ in range(args.repeat):
        for name in names:
            r = measure(name, args.seconds, args.senders, args.size, cpus)
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
        f"UDP echo: {args.size}-byte datagrams, {args.senders} senders, "
        f"{args.seconds:g} s x {args.repeat}; ratios against the tutorial echo"
    )
    print(
        f"{'server':<10} {'median rt/s':>12} {'ratio':>6} {'best rt/s':>10} "
        f"{'ratio':>6} {'CPU us/rt':>9} {'ratio':>6} {'timeouts':>8}"
    )
    for name in names:
        print(
            f"{name:<10} {medians[name]:>12,.0f} {medians[name] / base:>5.2f}x "
            f"{best[name]:>10,.0f} {best[name] / baseBest:>5.2f}x "
            f"{cost[name]:>9.2f} {baseCost / cost[name] if cost[name] else 0:>5.2f}x "
            f"{timeouts[name]:>8}"
        )
    if args.json:
        print(json.dumps({"rates": results, "cpu_us": costs, "timeouts": timeouts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
