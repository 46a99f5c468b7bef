"""
What the benchmark sections share: CPU pinning, starting and stopping
servers, running the load generator, reading a process's CPU time and RSS.

A section is a module in C{bench/} with a C{main(harness)} function that
returns a L{Section} (see C{bench/run.py}); it may also define
C{addArguments(parser)} for options of its own.  Servers run on
L{Harness.serverCPU}, load generators on L{Harness.clientCPU}, so that the
two never compete for one core.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "build" / "loadgen"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Section:
    """
    The outcome of one benchmark section.

    @ivar name: Short name (C{echo}, C{memory}, ...), also the C{--only} key
        and the marker name in C{docs/benchmarks.md}.
    @ivar title: Heading for the markdown output.
    @ivar markdown: The section's tables and notes, in markdown.
    @ivar data: Everything measured, JSON-serialisable.
    @ivar plots: PNG files the section wrote.
    """

    name: str
    title: str
    markdown: str
    data: dict[str, Any]
    plots: list[Path] = field(default_factory=list)


class BenchError(Exception):
    """
    A server or the load generator did not behave.
    """


def raiseFileLimit() -> int:
    """
    Raise this process's open-file soft limit to the hard limit, for this
    process and the servers and load generators it starts.

    @return: The new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpuTimes(pid: int) -> float:
    """
    User plus system CPU seconds used so far by process C{pid}.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpuJiffies() -> dict[int, tuple[int, int]]:
    """
    Busy and total jiffies of every CPU so far, from C{/proc/stat}.
    """
    jiffies: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values[:8]]
            idle = ticks[3] + ticks[4]
            jiffies[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return jiffies


def coreBusy(
    before: dict[int, tuple[int, int]],
    after: dict[int, tuple[int, int]],
    cpu: int | None,
) -> float | None:
    """
    How busy CPU C{cpu} was between two L{cpuJiffies} snapshots, whoever
    kept it busy (a share of 1.0 with a server process share well below it
    means something else ran there).
    """
    if cpu is None or cpu not in before or cpu not in after:
        return None
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return busy / total if total else None


def rssKiB(pid: int) -> int:
    """
    The resident set size of process C{pid}, in KiB.
    """
    statm = Path(f"/proc/{pid}/statm").read_text().split()
    return int(statm[1]) * PAGE_KB


@dataclass
class Server:
    """
    A server process under test.

    @ivar name: Its name in tables.
    @ivar process: The process.
    @ivar port: The TCP (or UDP) port it listens on, on 127.0.0.1.
    @ivar log: Where its output goes.
    """

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        """
        The server's process id.
        """
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM, then SIGKILL if it is still there after C{timeout} seconds.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Harness:
    """
    Shared state and helpers of one C{bench/run.py} run.

    @ivar args: The parsed command line.
    @ivar results: The directory results go to (C{bench/results}).
    @ivar serverCPU: The CPU that servers are pinned to, or L{None}.
    @ivar clientCPU: The CPU that load generators are pinned to, or L{None}.
    """

    def __init__(self, args: Namespace, results: Path) -> None:
        self.args = args
        self.results = results
        self.logs = results / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.fileLimit = raiseFileLimit()
        self.serverCPU: int | None = None
        self.clientCPU: int | None = None
        cpus = sorted(os.sched_getaffinity(0))
        if not args.no_pin and len(cpus) >= 2 and shutil.which("taskset"):
            self.serverCPU, self.clientCPU = cpus[0], cpus[1]
        self.loadgenPath = LOADGEN
        if not self.loadgenPath.exists():
            raise BenchError(f"{self.loadgenPath} is missing: run make -C bench first")

    def describe(self) -> str:
        """
        One line about the machine and the pinning, for the outputs.
        """
        load = os.getloadavg()
        if self.serverCPU is None:
            pinning = "not pinned (fewer than 2 CPUs, taskset missing or --no-pin)"
        else:
            pinning = (
                f"server on CPU {self.serverCPU}, load generator on CPU "
                f"{self.clientCPU} (taskset)"
            )
        return (
            f"{os.cpu_count()} CPUs, {pinning}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start"
        )

    def pinned(self, cpu: int | None, argv: Sequence[str]) -> list[str]:
        """
        C{argv} run on C{cpu} (C{taskset} execs, so the pid stays the same).
        """
        if cpu is None:
            return list(argv)
        return ["taskset", "-c", str(cpu), *argv]

    def startServer(
        self,
        name: str,
        argv: Sequence[str],
        findPort: Callable[[str], int | None],
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Server:
        """
        Start a server on the server CPU and wait until its output names
        the port it listens on.

        @param findPort: Given the server's output so far, the port, or
            L{None} while it is not known yet.
        """
        log = self.logs / f"{name}.log"
        out = log.open("wb")
        process = subprocess.Popen(
            self.pinned(self.serverCPU, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = findPort(log.read_text(errors="replace"))
            if port is not None:
                return Server(name, process, port, log)
            if process.poll() is not None:
                break
            time.sleep(0.05)
        process.kill()
        process.wait()
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{name} did not start listening:\n{tail}")

    def startNetdemo(self, name: str, service: str, options: Sequence[str]) -> Server:
        """
        Start C{twistd -n --pidfile= netdemo OPTIONS} on the server CPU; see
        L{startNetdemo}.
        """
        return startNetdemo(self, name, service, options)

    def loadgen(self, port: int, *options: str, timeout: float = 600) -> dict[str, Any]:
        """
        Run the load generator on the client CPU against 127.0.0.1:C{port}
        and return its JSON report.
        """
        argv = self.pinned(
            self.clientCPU, [str(self.loadgenPath), "--port", str(port), *options]
        )
        done = subprocess.run(
            argv, capture_output=True, timeout=timeout, check=False, cwd=ROOT
        )
        if not done.stdout.strip():
            raise BenchError(
                f"loadgen {' '.join(options)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}"
            )
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    @contextmanager
    def holding(
        self, port: int, connections: int, *options: str
    ) -> Iterator[dict[str, Any]]:
        """
        Open C{connections} idle connections to 127.0.0.1:C{port} with the
        load generator (each checked with one 1-byte echo) and hold them
        while the context is open.
        """
        argv = self.pinned(
            self.clientCPU,
            [
                str(self.loadgenPath),
                "--port",
                str(port),
                "--connect-only",
                str(connections),
                "--hold",
                "300",
                "--connect-timeout",
                "60",
                *options,
            ],
        )
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise BenchError("loadgen --connect-only exited without a report")
            yield json.loads(line)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def twistdArgv() -> list[str]:
    """
    The C{twistd} of the running interpreter's environment.
    """
    twistd = Path(sys.executable).parent / "twistd"
    if twistd.exists():
        return [str(twistd)]
    return [sys.executable, "-m", "twisted.scripts.twistd"]


def portFromJSONLine(output: str) -> int | None:
    """
    The port of a reference server's C{{"port": N}} line.
    """
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                return int(json.loads(line)["port"])
            except (ValueError, KeyError):
                continue
    return None


def listeningPort(service: str) -> Callable[[str], int | None]:
    """
    A C{findPort} for netdemo run with C{--logger=benchlog.observer}: the
    port of the first C{event="listening"} log event of C{service}.
    """

    def find(output: str) -> int | None:
        for record in output.split("\x1e"):
            record = record.strip()
            if not record.startswith("{"):
                continue
            try:
                event = json.loads(record)
            except ValueError:
                continue
            if event.get("event") == "listening" and event.get("service") == service:
                port = event["address"].rpartition(":")[2]
                return int(port)
        return None

    return find


def startNetdemo(
    harness: Harness, name: str, service: str, options: Sequence[str]
) -> Server:
    """
    Start C{twistd -n --pidfile= netdemo OPTIONS}, logging JSON events, and
    learn its port from the C{listening} event of C{service}.
    """
    argv = [
        *twistdArgv(),
        "-n",
        "--pidfile=",
        "--logger=benchlog.observer",
        "netdemo",
        *options,
    ]
    pythonPath = os.pathsep.join(
        p for p in [str(BENCH), os.environ.get("PYTHONPATH", "")] if p
    )
    return harness.startServer(
        name, argv, listeningPort(service), env={"PYTHONPATH": pythonPath}
    )


def median(values: Sequence[float]) -> float:
    """
    The median of C{values}.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
