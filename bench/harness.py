"""
What the benchmark sections share: the run's provenance, CPU pinning,
starting servers (through L{bench.launch}), the compiled load generators,
and the arithmetic of the tables.

A section is a module of C{bench/} listed in C{bench/run.py} with a
C{section(harness, options)} function returning a L{Section}, and an
C{addArguments(parser)} function for its options.  Servers run on
L{Harness.serverCPU}, load generators on L{Harness.clientCPU}, so that the
two never compete for one core.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import launch
from bench.launch import BenchError, Server, ServerSpec, pinned
from bench.provenance import Provenance, collect

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

#: L{Harness.start}'s default: the CPU servers are pinned to.
SERVER_CPU = "server"

__all__ = ["BENCH", "ROOT", "BenchError", "Harness", "Section", "Server"]


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


def percentile(values: Sequence[int], fraction: float) -> float:
    """
    The C{fraction} quantile of C{values} in nanoseconds (nearest rank), in
    milliseconds.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def serversOption(
    parser: argparse.ArgumentParser, section: str, servers: str, what: str
) -> Any:
    """
    The option group of section C{section} in C{bench/run.py}, with its
    C{--SECTION-servers} option (C{servers} by default).

    @param what: What is done to them (C{compare}, C{measure}).
    """
    group = parser.add_argument_group(section)
    group.add_argument(
        f"--{section}-servers",
        default=servers,
        help=f"comma-separated servers to {what} (default: %(default)s)",
    )
    return group


def withNotes(lines: list[str], notes: list[str]) -> str:
    """
    A section's markdown: C{lines}, then each note (a server skipped, ...)
    as a list item.
    """
    return "\n".join([*lines, *(f"- {note}" for note in notes)])


#: The compiled load generators (and C echo) of C{bench/Makefile}.
TOOLS = ("loadgen", "udpload", "tcpecho")


@functools.cache
def buildTool(name: str) -> Path:
    """
    C{bench/build/NAME}, built by C{make -C bench} if missing or older than
    its source; checked once per run, so that no build runs while a section
    measures.
    """
    subprocess.run(
        ["make", "-s", "-C", str(BENCH), f"build/{name}"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return BENCH / "build" / name


class Harness:
    """
    Shared state and helpers of one benchmark run.

    @ivar args: The parsed command line.
    @ivar results: The directory results go to (C{bench/results}).
    @ivar logs: Where each server's output goes, C{NAME.log}.
    @ivar provenance: What the run measures with (commit, versions, CPU).
    @ivar serverCPU: The CPU that servers are pinned to, or L{None}.
    @ivar clientCPU: The CPU that load generators are pinned to, or L{None}.
    """

    def __init__(self, args: argparse.Namespace, results: Path) -> None:
        self.args = args
        self.results = results
        self.logs = results / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.fileLimit = raiseFileLimit()
        self.provenance: Provenance = collect()
        self.serverCPU: int | None = None
        self.clientCPU: int | None = None
        cpus = sorted(os.sched_getaffinity(0))
        if not args.no_pin and len(cpus) >= 2 and shutil.which("taskset"):
            self.serverCPU, self.clientCPU = cpus[0], cpus[1]

    def pinning(self) -> str:
        """
        Where servers and load generators run.
        """
        if self.serverCPU is None:
            return "not pinned (fewer than 2 CPUs, taskset missing or --no-pin)"
        return (
            f"server on CPU {self.serverCPU}, load generator on CPU "
            f"{self.clientCPU} (taskset)"
        )

    def describe(self) -> str:
        """
        One line about the pinning and the load now, for the tables.
        """
        load = os.getloadavg()
        return (
            f"{os.cpu_count()} CPUs, {self.pinning()}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start"
        )

    def header(self) -> str:
        """
        The lines a run starts with: provenance, pinning and load.
        """
        return f"{self.provenance.line()}\n{self.describe()}"

    def record(self, data: Any) -> dict[str, Any]:
        """
        C{data} with the provenance, as every JSON result is written.
        """
        return {"provenance": self.provenance.asDict(), **_asRecord(data)}

    def start(
        self, spec: ServerSpec, cpu: int | None | str = SERVER_CPU, log: str = ""
    ) -> Server:
        """
        Start C{spec} (see L{launch.start}), by default on the server CPU.

        @param cpu: A CPU, L{None} (not pinned) or L{SERVER_CPU}.
        @param log: The name of its log (C{logs/LOG.log}), if not the
            server's.
        """
        pin = self.serverCPU if cpu == SERVER_CPU else cpu
        assert not isinstance(pin, str)
        return launch.start(spec, self.logs / f"{log or spec.name}.log", pin)

    def loadgen(self, port: int, *options: str, timeout: float = 600) -> dict[str, Any]:
        """
        Run C{bench/loadgen.c} on the client CPU against 127.0.0.1:C{port}
        and return its JSON report.
        """
        argv = [str(buildTool("loadgen")), "--port", str(port), *options]
        done = subprocess.run(
            pinned(self.clientCPU, argv),
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
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
        argv = [
            str(buildTool("loadgen")),
            "--port", str(port),
            "--connect-only", str(connections),
            "--hold", "300",
            "--connect-timeout", "60",
            *options,
        ]  # fmt: skip
        process = subprocess.Popen(
            pinned(self.clientCPU, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            line = process.stdout.readline()
            if not line:
                raise BenchError("loadgen --connect-only exited without a report")
            yield json.loads(line)
        finally:
            process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _asRecord(data: Any) -> dict[str, Any]:
    """
    A L{Section} as a dictionary; anything else as C{{"results": data}}.
    """
    if isinstance(data, Section):
        return asdict(data)
    return {"results": data}


def sectionParser(module: ModuleType) -> argparse.ArgumentParser:
    """
    The command line of a section that has one of its own (C{udp},
    C{fanout}, C{backplane}): what C{--NAME-args} holds in C{bench/run.py}.
    """
    parser = argparse.ArgumentParser(
        prog=f"bench/{Path(str(module.__file__)).name}",
        description=(module.__doc__ or "").strip().splitlines()[0],
    )
    module.addArguments(parser)
    return parser


def standalone(module: ModuleType, argv: list[str] | None = None) -> int:
    """
    Run one section with a command line of its own (C{python
    bench/udp.py ...}): print the run's header, run it, and with C{--json
    FILE} write its results and provenance.
    """
    parser = sectionParser(module)
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin processes to CPUs"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="directory of the logs"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    harness = Harness(options, options.results)
    print(harness.header(), flush=True)
    section: Section = module.section(harness, options)
    if options.json:
        options.json.write_text(json.dumps(harness.record(section), indent=1))
    return 0
