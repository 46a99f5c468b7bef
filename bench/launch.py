"""
The one way the benchmark starts a server under test, learns its port and
stops it.

A L{ServerSpec} says how to start one server and how it tells its port; a
port finder reads that from the server's own output:

  - L{announcedPort}: the C{{"port": N}} line every server of
    C{bench/servers/} (and C{udpload server}) prints once it listens on the
    port it bound (it was given port 0);
  - L{printedPort}: a regular expression over the output (C{nats-server
    -p -1} names the port it chose);
  - L{listeningEvent}: netdemo's C{listening} log event (JSON lines from
    C{--logger=netdemo.logs.jsonObserver}), optionally once other events
    (C{backplane_up}) were logged too;
  - L{readyOn}: for a server that cannot choose its own port
    (C{redis-server}): it is given a random port, and its output says
    whether it listens there or the port was taken (L{ServerSpec.inUse}),
    in which case it is started again on another one.

No port is ever found free, released, and handed to a server: a server
either reports the port it bound, or says it could not bind the one asked.

L{start} runs a spec pinned to one CPU; L{Server.stop} stops it and returns
the CPU time it used.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

#: A port finder: given a server's output so far and the port it was given
#: (0 when it chooses), the port it listens on, or L{None} while unknown.
PortFinder = Callable[[str, int], "int | None"]

#: Ports tried for a server that cannot choose its own (L{ServerSpec.inUse}):
#: below Linux's ephemeral range, so that no outgoing connection holds one.
RANDOM_PORTS = (20000, 32767)
ATTEMPTS = 20

#: Seconds a server may take to start listening.
START_TIMEOUT = 30.0


class BenchError(Exception):
    """
    A server or a load generator did not behave.
    """


class Unavailable(Exception):
    """
    A server cannot run on this machine (not installed, unknown name); the
    message says why, and the section skips it.
    """


def announcedPort(output: str, asked: int) -> int | None:
    """
    The port of a C{{"port": N}} line.
    """
    for line in output.splitlines():
        if line.startswith('{"port"'):
            try:
                return int(json.loads(line)["port"])
            except (ValueError, KeyError):
                continue
    return None


def printedPort(pattern: str) -> PortFinder:
    """
    A finder for the first group of C{pattern} in the output.
    """
    regex = re.compile(pattern)

    def find(output: str, asked: int) -> int | None:
        match = regex.search(output)
        return int(match.group(1)) if match else None

    return find


def readyOn(pattern: str) -> PortFinder:
    """
    A finder for a server given a port: that port, once C{pattern} is in
    the output.
    """
    regex = re.compile(pattern)

    def find(output: str, asked: int) -> int | None:
        return asked if regex.search(output) else None

    return find


def listeningEvent(service: str, *alsoLogged: str) -> PortFinder:
    """
    A finder for netdemo run with C{--logger=netdemo.logs.jsonObserver}: the
    port of the first C{listening} event of C{service}, once an event named
    by each of C{alsoLogged} was logged too.
    """

    def find(output: str, asked: int) -> int | None:
        port = None
        seen: set[str] = set()
        for line in output.splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            name = event.get("event")
            seen.add(name)
            if port is None and name == "listening" and event["service"] == service:
                port = int(event["address"].rpartition(":")[2])
        return port if seen.issuperset(alsoLogged) else None

    return find


@dataclass(frozen=True)
class ServerSpec:
    """
    How to start one server under test.

    @ivar name: Its name in tables (and of its log file, by default).
    @ivar command: The command line, given the port to listen on (0: the
        server chooses, and says which).
    @ivar findPort: How its output says the port it listens on.
    @ivar inUse: For a server that cannot choose its own port, a regular
        expression its output matches when the port it was given is taken:
        it is then given random ports until one works.
    @ivar env: Extra environment variables.
    """

    name: str
    command: Callable[[int], Sequence[str]]
    findPort: PortFinder
    inUse: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """
    C{argv} run on C{cpu} (C{taskset} execs, so the pid stays the same).
    """
    if cpu is None:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU seconds used so far by process C{pid}.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Server:
    """
    A server process under test, listening on 127.0.0.1 (or every address).

    @ivar name: Its name in tables.
    @ivar process: The process.
    @ivar port: The port it listens on.
    @ivar log: Its output.
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

    def running(self) -> bool:
        """
        Whether it has not exited.
        """
        return self.process.poll() is None

    def cpuSeconds(self) -> float:
        """
        The CPU time it used so far.
        """
        return cpuSeconds(self.pid)

    def rssKiB(self) -> int:
        """
        Its resident set size, in KiB.
        """
        statm = Path(f"/proc/{self.pid}/statm").read_text().split()
        return int(statm[1]) * PAGE_KIB

    def stop(self, timeout: float = 10.0) -> float:
        """
        SIGTERM, then SIGKILL if it is still there after C{timeout} seconds.

        @return: The CPU seconds it used in all (0.0 if it had exited).
        """
        used = 0.0
        if self.running():
            used = self.cpuSeconds()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return used


def _launch(
    spec: ServerSpec, port: int, cpu: int | None, log: Path
) -> subprocess.Popen[bytes]:
    """
    Start C{spec} on C{port}, its output to C{log}.
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            pinned(cpu, spec.command(port)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
            cwd=ROOT,
        )


def start(
    spec: ServerSpec,
    log: Path,
    cpu: int | None,
    timeout: float = START_TIMEOUT,
) -> Server:
    """
    Start C{spec} on C{cpu} and wait until its output names its port.

    @param log: Where its output goes.
    @raise BenchError: It exited, or said nothing within C{timeout} seconds.
    """
    asked = [0]
    if spec.inUse is not None:
        asked = [random.randint(*RANDOM_PORTS) for _ in range(ATTEMPTS)]
    inUse = re.compile(spec.inUse) if spec.inUse else None
    output = ""
    for port in asked:
        process = _launch(spec, port, cpu, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = log.read_text(errors="replace")
            found = spec.findPort(output, port)
            if found is not None:
                return Server(spec.name, process, found, log)
            if process.poll() is not None or (inUse and inUse.search(output)):
                break
            time.sleep(0.05)
        Server(spec.name, process, port, log).stop()
        if not (inUse and inUse.search(output)):
            break
    raise BenchError(f"{spec.name} did not start listening:\n{output[-2000:]}")
