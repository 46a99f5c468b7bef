"""
What a benchmark result was measured with, recorded with every result: the
git commit (and whether the tree had changes not committed), the Python,
Twisted and netdemo versions, the CPU model and core count, and the date.

C{make bench} prints L{Provenance.line} first; every table it writes starts
with it and every JSON file holds L{Provenance.asDict} under C{provenance}.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    """
    The output of C{git ARGS} in the checkout, or L{None} without git or
    outside a checkout.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _packageVersion(name: str) -> str:
    """
    The installed version of distribution C{name}, or C{"not installed"}.
    """
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpuModel() -> str:
    """
    The CPU model named in C{/proc/cpuinfo} (the first CPU's), else what
    L{platform.processor} says.
    """
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or "unknown CPU"


@dataclass(frozen=True)
class Provenance:
    """
    The circumstances of one benchmark run.

    @ivar commit: The checked-out commit (full hash), or C{"unknown"}.
    @ivar dirty: Whether tracked or new files differed from that commit.
    @ivar python: The Python version running the benchmark.
    @ivar twisted: The installed Twisted version.
    @ivar netdemo: The installed netdemo version.
    @ivar uvloop: The installed uvloop version (a reference server).
    @ivar cpuModel: The CPU model, from C{/proc/cpuinfo}.
    @ivar cores: Online CPUs.
    @ivar usableCores: CPUs this process may run on.
    @ivar kernel: The operating system and its release.
    @ivar date: When the run started, UTC, ISO 8601.
    """

    commit: str
    dirty: bool
    python: str
    twisted: str
    netdemo: str
    uvloop: str
    cpuModel: str
    cores: int
    usableCores: int
    kernel: str
    date: str

    def line(self) -> str:
        """
        All of it on one line, for the header of a run and of each table.
        """
        tree = " with uncommitted changes" if self.dirty else ""
        cores = f"{self.cores} cores"
        if self.usableCores != self.cores:
            cores += f" ({self.usableCores} usable)"
        return (
            f"netdemo {self.netdemo} at commit {self.commit[:12]}{tree}; "
            f"Python {self.python}, Twisted {self.twisted}, uvloop {self.uvloop}; "
            f"{self.cpuModel}, {cores}; {self.kernel}; {self.date}"
        )

    def asDict(self) -> dict[str, Any]:
        """
        The fields, for JSON.
        """
        return asdict(self)


def collect() -> Provenance:
    """
    Look everything up now.
    """
    status = _git("status", "--porcelain")
    return Provenance(
        commit=_git("rev-parse", "HEAD") or "unknown",
        dirty=bool(status),
        python=platform.python_version(),
        twisted=_packageVersion("Twisted"),
        netdemo=_packageVersion("netdemo"),
        uvloop=_packageVersion("uvloop"),
        cpuModel=cpuModel(),
        cores=os.cpu_count() or 1,
        usableCores=len(os.sched_getaffinity(0)),
        kernel=f"{platform.system()} {platform.release()}",
        date=datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        ),
    )
