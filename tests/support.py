"""
Helpers shared by the tests: a real C{twistd netdemo} child process whose
listening addresses are learnt from its C{listening} log events, so no test
ever hard-codes a port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["TwistdProcess", "twistdPath"]

_LISTENING = re.compile(
    r"(?P<service>[\w-]+): listening on (?P<address>\S+) \((?P<description>.*)\)$"
)


def twistdPath() -> str:
    """
    The C{twistd} of the Python running the tests.
    """
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else "twistd"


class TwistdProcess:
    """
    A C{twistd -n --pidfile= netdemo ...} child process logging to a file.

    @ivar listening: C{(service, address)} pairs, in order of the
        C{listening} events, once L{waitListening} returned.
    """

    def __init__(self, *args: str, logDir: str | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="netdemo-test-", dir=logDir)
        self.logPath = Path(self._tmp) / "twistd.log"
        self.args = [
            twistdPath(),
            "-n",
            "--pidfile=",
            f"--logfile={self.logPath}",
            "netdemo",
            *args,
        ]
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._tmp,
        )
        self.listening: list[tuple[str, str]] = []

    def log(self) -> str:
        """
        The log written so far.
        """
        try:
            return self.logPath.read_text()
        except FileNotFoundError:
            return ""

    def waitListening(self, count: int, timeout: float = 20.0) -> list[tuple[str, str]]:
        """
        Wait until C{count} listeners have logged their address.

        @raise AssertionError: If the process exits or the time runs out.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = []
            for line in self.log().splitlines():
                match = _LISTENING.search(line)
                if match:
                    found.append((match["service"], match["address"]))
            if len(found) >= count:
                self.listening = found
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"twistd did not log {count} listeners; exit={self.process.poll()}\n"
            f"log:\n{self.log()}"
        )

    def port(self, service: str) -> int:
        """
        The port of the first listener of C{service}.
        """
        for name, address in self.listening:
            if name == service:
                return int(address.rsplit(":", 1)[1])
        raise KeyError(service)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
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
            raise
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
        return time.monotonic() - start

    def __enter__(self) -> TwistdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def runTwistd(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd -n --pidfile= netdemo ARGS} to completion (for option
    errors), with no standard input.
    """
    with tempfile.TemporaryDirectory(prefix="netdemo-test-") as tmp:
        return subprocess.run(
            [twistdPath(), "-n", "--pidfile=", "--logfile=-", "netdemo", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp,
            env={**os.environ, "COLUMNS": "80"},
        )


def assertOneLineError(
    testCase: Any, result: subprocess.CompletedProcess[str], text: str
) -> None:
    """
    The command exited with status 2 and wrote one line on standard error,
    containing C{text}.
    """
    testCase.assertEqual(result.returncode, 2, result.stdout + result.stderr)
    lines = result.stderr.strip().splitlines()
    testCase.assertEqual(len(lines), 1, result.stderr)
    testCase.assertIn(text, lines[0])
