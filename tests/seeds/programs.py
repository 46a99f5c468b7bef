"""
Run a seed program (C{tests/seeds/seedNNN_*.py}) as a child process and
read what it prints, each line with the time it was read.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PATIENCE, Daemon, poll

HERE = Path(__file__).resolve().parent

#: The seed clients' sleep between two messages (the tutorials' 5 s).
SLEEP = "0.2"


class Program:
    """
    A seed program, running.

    @ivar lines: C{(when, line)} of every line it printed so far.
    @ivar received: The bytes it printed, in all.
    """

    def __init__(
        self,
        testCase: Any,
        script: str,
        *args: str,
        netns: str = "",
        command: list[str] | None = None,
    ) -> None:
        """
        Start C{script} (a file of this directory) with C{args}; it is
        stopped after the test.

        @param netns: Run it in this network namespace.
        @param command: Run this instead (C{script} names it in messages),
            with a pipe to its standard input (L{write}).
        """
        interactive = command is not None
        if command is None:
            command = [sys.executable, str(HERE / script), *args]
        if netns:
            command = ["ip", "netns", "exec", netns, *command]
        self.script = script
        self.lines: list[tuple[datetime.datetime, str]] = []
        self.received = 0
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        testCase.addCleanup(self.stop)

    def write(self, data: bytes) -> None:
        """
        Type C{data} at the program (its standard input).
        """
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def _read(self) -> None:
        """
        Read the program's output until it ends: large reads, split into
        lines, each stamped with the time it was read.
        """
        assert self.process.stdout is not None
        partial = b""
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            now = datetime.datetime.now()
            partial += chunk
            *complete, partial = partial.split(b"\n")
            with self._lock:
                self.received += len(chunk)
                self.lines.extend(
                    (now, line.decode("utf-8", "replace")) for line in complete
                )

    def matching(self, pattern: str) -> list[tuple[datetime.datetime, re.Match[str]]]:
        """
        C{(when, match)} of the lines so far in which C{pattern} is found.
        """
        regex = re.compile(pattern)
        with self._lock:
            lines = list(self.lines)
        return [(when, m) for when, line in lines if (m := regex.search(line))]

    def waitFor(
        self, pattern: str, count: int = 1, timeout: float = PATIENCE
    ) -> list[tuple[datetime.datetime, re.Match[str]]]:
        """
        Wait until C{count} lines match C{pattern}.

        @return: Those lines' C{(when, match)}.
        """

        def found() -> list[tuple[datetime.datetime, re.Match[str]]] | None:
            matches = self.matching(pattern)
            if len(matches) >= count:
                return matches
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.script} exited ({self.process.returncode}) before "
                    f"{count} lines matching {pattern!r}:\n{self.tail()}"
                )
            return None

        try:
            result: list[tuple[datetime.datetime, re.Match[str]]] = poll(
                found, f"{count} lines of {self.script} matching {pattern!r}", timeout
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.tail()}") from None
        return result

    def tail(self, count: int = 20) -> str:
        """
        The last lines it printed (each cut at 200 characters).
        """
        with self._lock:
            lines = [line[:200] for _, line in self.lines[-count:]]
        return "\n".join(lines)

    def stop(self) -> None:
        """
        Stop it (SIGTERM: the reactor stops, the sending thread ends), or
        kill it if it does not exit.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(PATIENCE)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class DaemonTestCase(SynchronousTestCase):
    """
    Tests sharing one daemon: C{twistd netdemo DAEMON_ARGS}, once its
    C{LISTENERS} sockets listen.
    """

    DAEMON_ARGS: tuple[str, ...] = ()
    LISTENERS = 1
    daemon: Daemon

    @classmethod
    def setUpClass(cls) -> None:
        daemon = cls.daemon = Daemon(*cls.DAEMON_ARGS)
        # Also when waitListening fails: setUpClass raising runs them.
        cls.addClassCleanup(daemon.close)
        daemon.waitListening(cls.LISTENERS)
