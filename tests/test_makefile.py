"""
Tests for the developer loop in the C{Makefile}: what C{make run} installs,
and how it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PATIENCE, poll, requireTool

ROOT = Path(__file__).resolve().parent.parent


class MakeRunTests(SynchronousTestCase):
    """
    C{make run}.
    """

    def test_installsOnlyWhatRunningNeeds(self) -> None:
        """
        The commands C{make run} would run install netdemo alone: the test
        and lint tools are C{make test}'s and C{make lint}'s business.
        """
        make = requireTool("make", "make")
        commands = subprocess.run(
            [make, "-n", "-B", "run", "VENV=/nonexistent/venv"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=True,
        ).stdout
        installs = [line for line in commands.splitlines() if "pip install" in line]
        self.assertTrue(
            any(line.endswith("install -q -e .") for line in installs), installs
        )
        self.assertFalse(any("[test" in line or "lint]" in line for line in installs))
        testing = subprocess.run(
            [make, "-n", "-B", "test", "VENV=/nonexistent/venv"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=True,
        ).stdout
        self.assertIn("'.[test,lint]'", testing)

    def test_ctrlC(self) -> None:
        """
        Ctrl-C (SIGINT to the foreground process group) stops the daemon
        cleanly and C{make} reports no error.
        """
        make = requireTool("make", "make")

        def session() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.setsid()

        process = subprocess.Popen(
            [
                make,
                "--no-print-directory",
                "run",
                "ARGS=--tcp tcp:0:interface=127.0.0.1",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=session,
        )
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        seen = bytearray()

        def ready() -> bool:
            seen.extend(process.stdout.read() or b"")  # type: ignore[union-attr]
            return b" ready (Twisted " in seen

        try:
            poll(ready, "make run to be ready")
            os.killpg(process.pid, signal.SIGINT)
            process.wait(PATIENCE)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        seen.extend(process.stdout.read() or b"")
        process.stdout.close()
        text = seen.decode("utf-8", "replace")
        self.assertIn("Received SIGINT, shutting down.", text)
        self.assertIn("Server Shut Down.", text)
        self.assertNotIn("make: ***", text)
