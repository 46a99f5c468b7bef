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
    one was taken.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import SkipTest

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

__all__ = [
    "PATIENCE",
    "Daemon",
    "ExternalServer",
    "assertOneLineError",
    "logged",
    "poll",
    "requireTool",
    "runTwistd",
    "splitAddress",
    "twistdPath",
    "waitUntil",
]

#: The longest any single wait of a test may take, in seconds.
PATIENCE = 30.0

_LISTENING = re.compile(
    r"(?P<service>[\w-]+): listening on (?P<address>\S+) \((?P<description>.*)\)$"
)


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


def twistdPath() -> str:
    """
    The C{twistd} of the Python running the tests.
    """
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else "twistd"


def splitAddress(address: str) -> tuple[str, int]:
    """
    C{host:port} or C{[v6]:port} as a tuple.
    """
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


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
    ) -> None:
        """
        @param args: The options of C{twistd netdemo}.
        @param netns: Run inside this network namespace (C{ip netns exec}).
        @param launcher: A command that runs C{twistd} (for example
            C{systemd-socket-activate ...}).
        @param env: Extra environment variables.
        @param twistdArgs: Options of C{twistd} itself (C{--logger=...}).
        """
        self.directory = tempfile.mkdtemp(prefix="netdemo-test-")
        self.logPath = Path(self.directory) / "twistd.log"
        logging = [] if twistdArgs else [f"--logfile={self.logPath}"]
        command = [
            *launcher,
            twistdPath(),
            "-n",
            "--pidfile=",
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

    def waitFor(
        self, pattern: str, count: int = 1, timeout: float = PATIENCE
    ) -> list[re.Match[str]]:
        """
        Wait until C{pattern} matches C{count} lines of the log.

        @return: The matches.
        @raise AssertionError: If the process exits or the time runs out.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = [m for m in map(regex.search, self.log().splitlines()) if m]
            if len(matches) >= count:
                return matches
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._failure(f"{pattern!r} not logged {count} times")
            time.sleep(0.05)

    def waitListening(
        self, count: int, timeout: float = PATIENCE
    ) -> list[tuple[str, str]]:
        """
        Wait until C{count} sockets are listening.

        @return: C{(service, address)} of each, in order.
        """
        matches = self.waitFor(_LISTENING.pattern, count, timeout)
        self.listening = [(m["service"], m["address"]) for m in matches]
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
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise self._failure(f"did not exit within {timeout:g} s of {sig}") from None
        return time.monotonic() - start

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
            [twistdPath(), "-n", "--pidfile=", *twistdArgs, "netdemo", *args],
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
            deadline = time.monotonic() + timeout
            while True:
                text = self.output()
                if self.ready.search(text):
                    self.port = candidate
                    return candidate
                if self.inUse.search(text) or self.process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"{self.name} did not start within {timeout:g} s:\n{text}"
                    )
                time.sleep(0.05)
            self.stop()
            if not self.inUse.search(text):
                raise AssertionError(f"{self.name} exited:\n{text}")
        raise AssertionError(f"{self.name}: no free port in {len(ports)} attempts")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """
        Stop it (C{SIGKILL}: no goodbye to its clients).
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """
        Stop it and remove its files.
        """
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


def logged(testCase: SynchronousTestCase) -> EventLoggingObserver:
    """
    The log events emitted from now until C{testCase} ends, in order (for
    any trial test case: C{createWithCleanup} is typed for the asynchronous
    one only).
    """
    return EventLoggingObserver.createWithCleanup(
        testCase,  # type: ignore[arg-type]
        globalLogPublisher,
    )


#: The name the tests used before L{Daemon}; being migrated.
TwistdProcess = Daemon
