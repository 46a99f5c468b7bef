"""
The install instructions of C{docs/operations.md}: after the plugin cache
is regenerated as the installing user, a service user that cannot write
C{site-packages} starts C{twistd netdemo} without an errno 13 complaint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

#: The command of the install instructions, with the venv's python first.
REGENERATE = (
    "-c",
    "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))",
)

#: The user the daemon runs as in this test.
NOBODY = 65534


class PluginCacheTests(SynchronousTestCase):
    """
    Install a wheel into a fresh virtual environment as root, then run
    C{twistd netdemo} as an unprivileged user.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("needs root, to run the daemon as another user")
        self.setpriv = shutil.which("setpriv")
        if self.setpriv is None:
            self.skipTest("setpriv not installed (Debian package util-linux)")
        self.tmp = tempfile.mkdtemp(prefix="netdemo-install-")
        self.addCleanup(shutil.rmtree, self.tmp)
        os.chmod(self.tmp, 0o755)

    def runAsServiceUser(self, venv: Path) -> str:
        """
        Run the daemon as the service user until it listens; return its log.
        """
        log = Path(self.tmp) / f"log-{time.monotonic_ns()}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    self.setpriv,  # type: ignore[list-item]
                    f"--reuid={NOBODY}",
                    f"--regid={NOBODY}",
                    "--clear-groups",
                    str(venv / "bin" / "twistd"),
                    "--nodaemon",
                    "--pidfile=",
                    "netdemo",
                    "--tcp=tcp:0:interface=127.0.0.1",
                    "--http=tcp:0:interface=127.0.0.1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        try:
            deadline = time.monotonic() + 60
            while "ready: " not in log.read_text():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(f"daemon did not start: {log.read_text()}")
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        return log.read_text()

    def test_regenerated(self) -> None:
        """
        Before the documented command, the service user's daemon logs
        errno 13 for the plugin cache; after it, it does not.
        """
        operations = (ROOT / "docs" / "operations.md").read_text()
        self.assertIn(f'/opt/netdemo/bin/python -c "{REGENERATE[1]}"', operations)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                self.tmp,
                str(ROOT),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = Path(self.tmp).glob("netdemo-*.whl")
        venv = Path(self.tmp) / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120
        )
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        complaint = "Unable to write to plugin cache"
        self.assertIn(complaint, self.runAsServiceUser(venv))
        subprocess.run(
            [str(venv / "bin" / "python"), *REGENERATE], check=True, timeout=120
        )
        log = self.runAsServiceUser(venv)
        self.assertNotIn(complaint, log)
        self.assertIn("tcp-echo: listening on 127.0.0.1:", log)
