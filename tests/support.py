"""
The test toolkit: everything a test needs to run real parts, in one place.

  - L{Daemon}: a real C{twistd -n netdemo ...} child process (optionally in a
    network namespace, or under a launcher such as
    C{systemd-socket-activate}) whose listening addresses are learnt from
    its C{listening} log events, so no test ever uses a port it did not
    bind itself;
  - L{runTwistd}: C{twistd netdemo ...} run to completion (option errors);
  - L{poll} and L{waitUntil}: the one poller, for code that blocks (a child
    process's log) and for code on the reactor (a Deferred);
  - L{logged}: the log events of a test;
  - L{requireTool}: the one rule for real external programs: under C{CI} a
    missing tool fails the test; elsewhere it skips with the reason;
  - L{ExternalServer}: a real server (C{redis-server}, ...) on a port it
    bound itself, told by its own output, retried on another port if that
    one was taken;
  - L{socketActivation}: sockets the test bound, handed to a L{Daemon} the
    way systemd hands them over (C{LISTEN_FDS}, C{LISTEN_FDNAMES});
  - L{refusingPort}: a port the test holds on which nothing answers;
  - L{NetworkNamespace} and L{requireRoot}: a network namespace of the
    test's own, where fixed ports meet nothing else on the host;
  - L{notifySocket} and L{receiveDatagram}: a socket like systemd's
    C{$NOTIFY_SOCKET}, and what arrives there;
  - L{captureEvents}: the log events of one test, for any trial test case;
  - L{checkoutWheel} and L{venvWith}: the wheel of this checkout, built once
    per run, installed into a fresh virtual environment.

C{tests/README.md} says which kind of test to write when.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from unittest import SkipTest

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

__all__ = [
    "PATIENCE",
    "Daemon",
    "ExternalServer",
    "NetworkNamespace",
    "assertOneLineError",
    "captureEvents",
    "checkoutWheel",
    "notifySocket",
    "poll",
    "readUntil",
    "receiveDatagram",
    "refusingPort",
    "requireRoot",
    "requireTool",
    "runTwistd",
    "socketActivation",
    "splitAddress",
    "twistdPath",
    "venvWith",
    "waitUntil",
]

#: The longest any single wait of a test may take, in seconds.
PATIENCE = 30.0

_LISTENING = re.compile(
    r"(?P<service>[\w-]+): listening on (?P<address>\S+) "
    r"\((?P<description>.*?)\)(?:, (?P<detail>.*))?$"
)


def readUntil(s: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    """
    What C{s} receives until C{marker}, its close (or reset), or C{limit}
    bytes, whichever comes first.
    """
    data = b""
    while marker not in data and len(data) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def poll(
    condition: Callable[[], Any],
    what: str = "the condition",
    timeout: float = PATIENCE,
    interval: float = 0.05,
) -> Any:
    """
    Call C{condition} until it returns something true, sleeping
    C{interval} seconds in between; for tests that block (on a child
    process), never on the reactor.

    @return: What C{condition} returned.
    @raise AssertionError: Naming C{what}, after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def waitUntil(
    condition: Callable[[], Any],
    what: str = "the condition",
    timeout: float = PATIENCE,
    interval: float = 0.02,
) -> Deferred[None]:
    """
    Fire once C{condition()} is true, checking every C{interval} seconds on
    the running reactor; for tests that run on the reactor.

    @raise AssertionError: (As the L{Deferred}'s failure) naming C{what},
        after C{timeout} seconds.
    """
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    deadline = time.monotonic() + timeout

    def check() -> None:
        if condition():
            d.callback(None)
        elif time.monotonic() > deadline:
            d.errback(
                AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            )
        else:
            reactor.callLater(interval, check)

    check()
    return d


def requireTool(name: str, package: str | None = None) -> str:
    """
    The path of the program C{name}.

    @raise SkipTest: When it is missing and the tests do not run in CI,
        saying which Debian package has it.
    @raise AssertionError: When it is missing in CI (C{CI} set), which
        installs every tool the tests use (C{.ci/run}).
    """
    path = shutil.which(name)
    if path is not None:
        return path
    where = f" (Debian package {package})" if package else ""
    message = f"{name} is not installed{where}; .ci/run installs it"
    if os.environ.get("CI"):
        raise AssertionError(message)
    raise SkipTest(message)


def reactorArgs() -> list[str]:
    """
    C{--reactor=NAME} when the tests run on another reactor than the default
    (C{NETDEMO_REACTOR}, set by C{make test REACTOR=NAME}): the daemons the
    tests start use it too.
    """
    name = os.environ.get("NETDEMO_REACTOR")
    return [f"--reactor={name}"] if name else []


def twistdPath() -> str:
    """
    The C{twistd} of the Python running the tests.
    """
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else "twistd"


def splitAddress(address: str) -> tuple[str, int]:
    """
    C{host:port} or C{[v6]:port} (or a TLS listener's C{tls:host:port}) as
    a tuple.
    """
    host, _, port = address.removeprefix("tls:").rpartition(":")
    return host.strip("[]"), int(port)


def _terminate(process: subprocess.Popen[Any], sig: int, timeout: float) -> bool:
    """
    Send C{sig} to C{process} (if it still runs) and wait for it to exit,
    killing it after C{timeout} seconds.

    @return: Whether it exited before it had to be killed.
    """
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


class Daemon:
    """
    A C{twistd -n --pidfile= netdemo ARGS} child process, logging to a file
    of its own.

    @ivar listening: C{(service, address)} pairs, in the order of the
        C{listening} events, once L{waitListening} returned.
    """

    def __init__(
        self,
        *args: str,
        netns: str | None = None,
        launcher: Sequence[str] = (),
        env: dict[str, str] | None = None,
        twistdArgs: Sequence[str] = (),
        cwd: str | None = None,
        passFds: Sequence[int] = (),
        twistd: str | None = None,
    ) -> None:
        """
        @param args: The options of C{twistd netdemo}.
        @param netns: Run inside this network namespace (C{ip netns exec}).
        @param launcher: A command that runs C{twistd} (for example
            C{systemd-socket-activate ...}, or L{socketActivation}'s).
        @param env: Extra environment variables.
        @param twistdArgs: Options of C{twistd} itself (C{--logger=...});
            then C{twistd} logs to its output, not to a file of its own.
        @param passFds: Descriptors the child inherits (L{socketActivation}).
        @param twistd: Another C{twistd} than the one of the tests' Python
            (an installed wheel's).
        """
        self.directory = tempfile.mkdtemp(prefix="netdemo-test-")
        self.logPath = Path(self.directory) / "twistd.log"
        logging = [] if twistdArgs else [f"--logfile={self.logPath}"]
        command = [
            *launcher,
            twistd or twistdPath(),
            "-n",
            "--pidfile=",
            *(
                []
                if any(a.startswith("--reactor") for a in twistdArgs)
                else reactorArgs()
            ),
            *logging,
            *twistdArgs,
            "netdemo",
            *args,
        ]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        self.command = command
        self._output = open(Path(self.directory) / "output", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            cwd=cwd or self.directory,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            pass_fds=tuple(passFds),
        )
        self.listening: list[tuple[str, str]] = []

    def log(self) -> str:
        """
        What the daemon logged so far, and wrote to its output.
        """
        parts = []
        for path in (self.logPath, Path(self.directory) / "output"):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def _failure(self, what: str) -> AssertionError:
        return AssertionError(
            f"twistd netdemo: {what} (exit status {self.process.poll()}); "
            f"log:\n{self.log()[-4000:]}"
        )

    def _wait(self, found: Callable[[], Any], what: str, timeout: float) -> Any:
        """
        L{poll} C{found} while the process runs.

        @raise AssertionError: With the log, if the process exits or the
            time runs out first.
        """

        def check() -> Any:
            result = found()
            if not result and self.process.poll() is not None:
                raise AssertionError(f"exited before {what}")
            return result

        try:
            return poll(check, what, timeout)
        except AssertionError as e:
            raise self._failure(str(e)) from None

    def waitFor(
        self, pattern: str, count: int = 1, timeout: float = PATIENCE
    ) -> list[re.Match[str]]:
        """
        Wait until C{pattern} matches C{count} lines of the log.

        @return: The matches.
        @raise AssertionError: If the process exits or the time runs out.
        """
        regex = re.compile(pattern)

        def matches() -> list[re.Match[str]] | None:
            found = [m for m in map(regex.search, self.log().splitlines()) if m]
            return found if len(found) >= count else None

        result: list[re.Match[str]] = self._wait(
            matches, f"{pattern!r} logged {count} times", timeout
        )
        return result

    def events(self) -> list[dict[str, Any]]:
        """
        The JSON log records so far (with
        C{twistdArgs=["--logger=netdemo.logs.jsonObserver"]}); other lines
        are left out.
        """
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return records

    def waitEvent(
        self, event: str, count: int = 1, timeout: float = PATIENCE
    ) -> list[dict[str, Any]]:
        """
        Wait until C{count} JSON log records have C{"event": event}.

        @return: Those records.
        """

        def records() -> list[dict[str, Any]] | None:
            found = [r for r in self.events() if r.get("event") == event]
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = self._wait(
            records, f"{count} {event!r} events", timeout
        )
        return result

    def _listeningNow(self) -> list[tuple[str, str]]:
        """
        C{(service, address)} of the C{listening} events so far, from text
        or JSON log lines.
        """
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == "listening":
                        found.append((record["service"], record["address"]))
            elif match := _LISTENING.search(line):
                found.append((match["service"], match["address"]))
        return found

    def waitListening(
        self, count: int, timeout: float = PATIENCE
    ) -> list[tuple[str, str]]:
        """
        Wait until C{count} sockets are listening.

        @return: C{(service, address)} of each, in order.
        """
        self.listening = self._wait(
            lambda: (found := self._listeningNow()) and len(found) >= count and found,
            f"{count} listening events",
            timeout,
        )
        return self.listening

    def addresses(self, service: str) -> list[str]:
        """
        The addresses C{service} listens on (after L{waitListening}).
        """
        return [address for name, address in self.listening if name == service]

    def address(self, service: str) -> tuple[str, int]:
        """
        The host and port of the first listener of C{service}.
        """
        for address in self.addresses(service):
            return splitAddress(address)
        raise KeyError(f"{service} is not listening: {self.listening}")

    def port(self, service: str) -> int:
        """
        The port of the first listener of C{service}.
        """
        return self.address(service)[1]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = PATIENCE) -> float:
        """
        Send C{sig} and wait for the process to exit.

        @return: Seconds from the signal to the exit.
        """
        start = time.monotonic()
        if not _terminate(self.process, sig, timeout):
            raise self._failure(f"did not exit within {timeout:g} s of {sig}")
        return time.monotonic() - start

    def statusValue(self, name: str, **labels: str) -> float:
        """
        The current value of one series, from the status page (the daemon
        runs C{--http}; 0 when the series is not there).
        """
        import urllib.request

        host, port = self.address("http")
        url = f"http://{host}:{port}/status.json"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=PATIENCE) as response:
            document = json.load(response)
        shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{shown}}}"
        for service in document["services"]:
            for sample in service["metrics"]:
                if sample["series"] == series:
                    return float(sample["value"])
        return 0.0

    def rss(self) -> int:
        """
        The daemon's resident set size in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    @property
    def returncode(self) -> int | None:
        """
        The exit status, once it exited.
        """
        return self.process.poll()

    def close(self) -> None:
        """
        Kill it if it still runs, and remove its files.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._output.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runTwistd(
    *args: str, timeout: float = PATIENCE, twistdArgs: Sequence[str] = ("--logfile=-",)
) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd -n --pidfile= netdemo ARGS} to completion (for option
    errors and help), with no standard input and 80 columns.
    """
    with tempfile.TemporaryDirectory(prefix="netdemo-test-") as tmp:
        return subprocess.run(
            [
                twistdPath(),
                "-n",
                "--pidfile=",
                *reactorArgs(),
                *twistdArgs,
                "netdemo",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp,
            env={**os.environ, "COLUMNS": "80"},
        )


def assertOneLineError(
    testCase: Any, result: subprocess.CompletedProcess[str], text: str, status: int = 2
) -> None:
    """
    The command exited with C{status} and wrote one line on standard error,
    containing C{text}.
    """
    testCase.assertEqual(result.returncode, status, result.stdout + result.stderr)
    lines = result.stderr.strip().splitlines()
    testCase.assertEqual(len(lines), 1, result.stderr)
    testCase.assertIn(text, lines[0])


class ExternalServer:
    """
    A real server program on 127.0.0.1, on a port it bound itself.

    The port is chosen at random from the dynamic range and passed on the
    command line; the server's own output says whether it could bind it.
    If another program had it, the server is started again on another
    port: no port is ever probed and then reused.

    @ivar port: The port it listens on, once L{start} returned.
    """

    #: Attempts before giving up.
    ATTEMPTS = 20

    def __init__(
        self,
        command: Callable[[int], list[str]],
        ready: str,
        inUse: str,
        name: str,
        env: dict[str, str] | None = None,
    ) -> None:
        """
        @param command: The command line for a port.
        @param ready: A regular expression the server prints once it listens.
        @param inUse: One it prints when the port is taken.
        @param name: For messages.
        """
        self.command = command
        self.ready = re.compile(ready)
        self.inUse = re.compile(inUse)
        self.name = name
        self.env = env
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = tempfile.mkdtemp(prefix=f"netdemo-{name}-")
        self.outputPath = Path(self.directory) / "output"

    def output(self) -> str:
        """
        What the server printed so far.
        """
        try:
            return self.outputPath.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, port: int | None = None, timeout: float = PATIENCE) -> int:
        """
        Start it (on C{port} again, after a L{stop}, or on a new one).

        @return: The port.
        """
        ports = (
            [port]
            if port
            else [random.randint(20000, 60999) for _ in range(self.ATTEMPTS)]
        )
        for candidate in ports:
            with open(self.outputPath, "wb") as output:
                self.process = subprocess.Popen(
                    self.command(candidate),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    env={**os.environ, **(self.env or {})},
                )
            try:
                started = poll(
                    functools.partial(self._outcome, self.process),
                    f"{self.name} to start",
                    timeout,
                )
            except AssertionError:
                self.stop()
                raise AssertionError(
                    f"{self.name} did not start within {timeout:g} s:\n{self.output()}"
                ) from None
            if started == "ready":
                self.port = candidate
                return candidate
            self.stop()
            if not self.inUse.search(self.output()):
                raise AssertionError(f"{self.name} exited:\n{self.output()}")
        raise AssertionError(f"{self.name}: no free port in {len(ports)} attempts")

    def _outcome(self, process: subprocess.Popen[bytes]) -> str | None:
        """
        C{"ready"} once the server says it listens, C{"gone"} once it
        exited or said its port is in use, else L{None}.
        """
        text = self.output()
        if self.ready.search(text):
            return "ready"
        if self.inUse.search(text) or process.poll() is not None:
            return "gone"
        return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """
        Stop it (C{SIGKILL}: no goodbye to its clients).
        """
        if self.process is not None:
            _terminate(self.process, sig, PATIENCE)
        self.process = None

    def close(self) -> None:
        """
        Stop it and remove its files.
        """
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


#: Exec a command with inherited sockets the way systemd passes them: moved
#: to descriptors 3, 4, ... in order, with C{LISTEN_FDS}, C{LISTEN_FDNAMES}
#: and C{LISTEN_PID} (the pid that C{exec} keeps).
_ACTIVATE = """
import fcntl, os, sys
names, rest = sys.argv[1], sys.argv[2:]
split = rest.index("--")
fds, command = [int(fd) for fd in rest[:split]], rest[split + 1 :]
copies = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for target, fd in enumerate(copies, start=3):
    os.dup2(fd, target)
os.environ.update(
    LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=names, LISTEN_PID=str(os.getpid())
)
os.execvp(command[0], command)
"""


def socketActivation(
    sockets: Mapping[str, socket.socket], then: Sequence[str] = ()
) -> dict[str, Any]:
    """
    The keyword arguments of L{Daemon} that start it the way systemd starts
    a socket-activated service: each of C{sockets}, which the test bound
    itself, becomes descriptor 3, 4, ... in order, named by its key.

    @param then: A launcher that takes the sockets over from there, for
        example C{[systemd-socket-activate, "--fdname=echo"]}, which accepts
        descriptors passed that way and waits for the first connection or
        datagram before it starts C{twistd}.
    """
    fds = [str(s.fileno()) for s in sockets.values()]
    return {
        "launcher": [sys.executable, "-c", _ACTIVATE, ":".join(sockets), *fds, "--"]
        + list(then),
        "passFds": tuple(s.fileno() for s in sockets.values()),
    }


def refusingPort(
    testCase: Any,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    host: str = "127.0.0.1",
) -> int:
    """
    A port on C{host} that refuses: the test holds a socket bound to it
    (closed after the test), so nothing else can take it, and nothing
    answers there.  A stream socket that never listens answers a
    connection with a reset; a datagram socket connected to itself makes
    the kernel answer anyone else with ICMP port unreachable.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = socket.socket(family, kind)
    testCase.addCleanup(held.close)
    held.bind((host, 0))
    if kind == socket.SOCK_DGRAM:
        held.connect(held.getsockname())
    port: int = held.getsockname()[1]
    return port


def notifySocket(testCase: Any, abstract: bool = False) -> tuple[socket.socket, str]:
    """
    A socket like systemd's C{$NOTIFY_SOCKET} (C{AF_UNIX}, C{SOCK_DGRAM}),
    closed after the test.

    @param abstract: In the abstract namespace instead of at a path.
    @return: The socket and the C{NOTIFY_SOCKET} value naming it.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    testCase.addCleanup(sock.close)
    if abstract:
        name = f"netdemo-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        return sock, "@" + name
    directory = tempfile.mkdtemp(prefix="netdemo-notify-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "notify")
    sock.bind(path)
    return sock, path


def receiveDatagram(sock: socket.socket, timeout: float = PATIENCE) -> bytes:
    """
    The next datagram on C{sock}.

    @raise AssertionError: If none arrives within C{timeout} seconds.
    """
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise AssertionError(f"no datagram within {timeout:g} s")
    return sock.recv(65536)


def captureEvents(testCase: Any) -> EventLoggingObserver:
    """
    Every log event published until the end of the test, for any trial
    test case (Twisted's C{EventLoggingObserver.createWithCleanup} is
    annotated for the asynchronous C{TestCase} only).
    """
    return EventLoggingObserver.createWithCleanup(
        cast(TestCase, testCase), globalLogPublisher
    )


#: The wheel of this checkout, once built.
_wheel: list[Path] = []

#: The checkout.
ROOT = Path(__file__).resolve().parent.parent


def checkoutWheel() -> Path:
    """
    The wheel of this checkout, built once per test run (C{pip wheel}) in a
    directory removed when the run ends.
    """
    if not _wheel:
        directory = tempfile.mkdtemp(prefix="netdemo-wheel-")
        atexit.register(shutil.rmtree, directory, True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w"]
            + [directory, str(ROOT)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        _wheel.extend(Path(directory).glob("netdemo-*.whl"))
    [wheel] = _wheel
    return wheel


def venvWith(directory: str | Path, wheel: Path) -> Path:
    """
    A fresh virtual environment C{venv} under C{directory} holding C{wheel}
    and its dependencies.

    @return: Its directory.
    """
    venv = Path(directory) / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


def requireRoot(what: str) -> None:
    """
    Go on only as root: in CI (which runs as root) its absence fails,
    elsewhere the test is skipped, naming C{what} needs it.
    """
    if os.geteuid() != 0:
        message = f"{what} need root (CI runs as root)"
        if os.environ.get("CI"):
            raise AssertionError(message)
        raise SkipTest(message)


class NetworkNamespace:
    """
    A network namespace of the test's own (C{ip netns add}) with nothing but
    its loopback interface, up: a test may use fixed ports there without
    meeting anything else on the host.  Needs root (L{requireRoot}).

    @ivar name: The namespace's name.
    """

    def __init__(self, prefix: str = "ndt") -> None:
        """
        Create it.

        @raise SkipTest: When C{ip netns} cannot create one here (no
            permission to mount, a kernel without namespaces).
        """
        requireTool("ip", "iproute2")
        self.name = f"{prefix}{os.getpid()}"
        added = subprocess.run(
            ["ip", "netns", "add", self.name],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        if added.returncode:
            raise SkipTest(f"ip netns add is unavailable: {added.stderr.strip()}")
        try:
            subprocess.run(
                ["ip", "-n", self.name, "link", "set", "lo", "up"],
                check=True,
                capture_output=True,
                timeout=PATIENCE,
            )
        except BaseException:
            self.close()
            raise

    def command(self, *argv: str) -> list[str]:
        """
        C{argv} run inside the namespace (C{ip netns exec}).
        """
        return ["ip", "netns", "exec", self.name, *argv]

    def close(self) -> None:
        """
        Remove it (what still runs inside keeps it alive until it exits).
        """
        subprocess.run(
            ["ip", "netns", "del", self.name], capture_output=True, timeout=PATIENCE
        )
